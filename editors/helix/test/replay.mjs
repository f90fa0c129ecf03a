// Helix replay test: speaks to the real `lmrs lsp` the way Helix does and applies the completion
// item the way Helix applies it, then checks that exactly the suggestion was inserted.
//
//   LMRS_BIN=... LMRS_MODEL=... node editors/helix/test/replay.mjs
//
// Helix is not packaged for Debian bookworm, so instead of driving the editor this replays what its
// LSP client sends (helix-lsp: initialize capabilities, didOpen, incremental didChange per edit,
// textDocument/completion with triggerKind Invoked) and reimplements the two client-side steps that
// decide what ends up in the buffer: filtering the items by the word before the cursor, and applying
// the item's textEdit relative to the cursor.

import { readFileSync, mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { LspClient, lspPosition, offsetOf } from '../../test/lsp.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.LMRS_BIN;
const model = process.env.LMRS_MODEL;
if (!bin || !model) {
  console.error('LMRS_BIN and LMRS_MODEL must be set');
  process.exit(2);
}

// --- The shipped languages.toml: the command and the `config` table Helix sends as
// initializationOptions. (A tiny reader for the flat inline table used there.)
const toml = readFileSync(join(here, '..', 'languages.toml'), 'utf8');
const section = toml.split(/^\[language-server\.lmrs\]\s*$/m)[1].split(/^\[/m)[0];
assert.match(section, /^command = "lmrs"$/m, 'languages.toml: command');
assert.match(section, /^args = \["lsp"\]$/m, 'languages.toml: args');
const configLine = /^config = (\{.*\})$/m.exec(section)[1];
const config = JSON.parse(configLine.replace(/(\w+)\s*=/g, '"$1":'));
assert.match(toml, /language-servers = \["pylsp", "lmrs"\]/, 'languages.toml: python uses lmrs');
// The test points the server at the test model (the shipped file relies on the default path).
const initializationOptions = { ...config, modelPath: model, threads: 2, timeoutMs: 60000 };

// --- What Helix sends in `initialize` (helix-lsp/src/client.rs), trimmed of nothing that matters.
function helixCapabilities() {
  return {
    workspace: {
      configuration: true,
      didChangeConfiguration: { dynamicRegistration: false },
      workspaceFolders: true,
      applyEdit: true,
      symbol: { dynamicRegistration: false },
      executeCommand: { dynamicRegistration: false },
      inlayHint: { refreshSupport: false },
      workspaceEdit: {
        documentChanges: true, resourceOperations: ['create', 'rename', 'delete'],
        failureHandling: 'abort', normalizesLineEndings: false,
      },
      didChangeWatchedFiles: { dynamicRegistration: true, relativePatternSupport: false },
      fileOperations: { willRename: true, didRename: true },
    },
    textDocument: {
      completion: {
        completionItem: {
          snippetSupport: true,
          resolveSupport: { properties: ['documentation', 'detail', 'additionalTextEdits'] },
          insertReplaceSupport: true,
          deprecatedSupport: true,
          tagSupport: { valueSet: [1] },
        },
        completionItemKind: {},
      },
      hover: { contentFormat: ['markdown'] },
      signatureHelp: {
        signatureInformation: {
          documentationFormat: ['markdown'],
          parameterInformation: { labelOffsetSupport: true }, activeParameterSupport: true,
        },
      },
      rename: { dynamicRegistration: false, prepareSupport: true, honorsChangeAnnotations: false },
      formatting: { dynamicRegistration: false },
      publishDiagnostics: { versionSupport: true, tagSupport: { valueSet: [1, 2] } },
      inlayHint: { dynamicRegistration: false },
    },
    window: { workDoneProgress: true },
    general: { positionEncodings: ['utf-8', 'utf-32', 'utf-16'] },
  };
}

// --- A document as Helix holds it, with edits sent as incremental didChange.
class Doc {
  constructor(client, uri, text) {
    Object.assign(this, { client, uri, text, version: 0 });
    client.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'python', version: 0, text } });
  }
  edit(from, to, insert, enc) {
    const range = { start: lspPosition(this.text, from, enc), end: lspPosition(this.text, to, enc) };
    this.text = this.text.slice(0, from) + insert + this.text.slice(to);
    this.version += 1;
    this.client.notify('textDocument/didChange', {
      textDocument: { uri: this.uri, version: this.version },
      contentChanges: [{ range, text: insert }],
    });
  }
}

// Helix filters completion items with a fuzzy match of the typed word (from the start of the word
// to the cursor) against `filterText`, else `label`: the characters must appear in order.
function helixFilterMatches(item, word) {
  const hay = (item.filterText ?? item.label).toLowerCase();
  let i = 0;
  for (const ch of word.toLowerCase()) {
    i = hay.indexOf(ch, i);
    if (i < 0) return false;
    i += 1;
  }
  return true;
}

// Helix applies a TextEdit relative to the primary cursor: it turns range.start/end into offsets
// from the cursor and replaces that span (at every cursor). One cursor here.
function helixApply(text, cursor, item, enc) {
  assert.ok(item.textEdit, 'the item has a textEdit');
  assert.ok(!item.insertTextFormat || item.insertTextFormat === 1, 'plain text, not a snippet');
  const edit = item.textEdit;
  const range = edit.range ?? edit.insert; // InsertReplaceEdit: Helix uses `insert` by default
  const start = offsetOf(text, range.start, enc);
  const end = offsetOf(text, range.end, enc);
  const startOff = start - cursor;
  const endOff = end - cursor;
  const from = cursor + startOff;
  const to = cursor + endOff;
  return { text: text.slice(0, from) + edit.newText + text.slice(to), cursor: from + edit.newText.length };
}

const results = [];
async function scenario(name, fn) {
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok - ${name}`);
  } catch (e) {
    results.push([name, false]);
    console.log(`not ok - ${name}\n  ${String(e.stack ?? e).split('\n').join('\n  ')}`);
  }
}

// A fixed project name: the server puts it and the file's path into the prompt, so the (greedy)
// suggestions do not change from run to run.
const dir = join(mkdtempSync(join(tmpdir(), 'lmrs-helix-')), 'demo');
mkdirSync(dir);
const client = new LspClient(bin, ['lsp'], { env: { ...process.env, LMRS_LOG: process.env.LMRS_LOG ?? 'info' } });
const deadline = setTimeout(() => {
  console.log('not ok - timed out\n' + client.stderr.slice(-3000));
  process.exit(1);
}, 240000);

let enc;
await scenario('initialize like Helix, model loads', async () => {
  const init = await client.request('initialize', {
    processId: process.pid,
    clientInfo: { name: 'helix', version: '25.07.1' },
    rootPath: dir,
    rootUri: pathToFileURL(dir).href,
    workspaceFolders: [{ uri: pathToFileURL(dir).href, name: 'demo' }],
    initializationOptions,
    capabilities: helixCapabilities(),
  });
  enc = init.capabilities.positionEncoding ?? 'utf-16';
  assert.equal(enc, 'utf-8', 'Helix offers utf-8 first; the server should take it');
  assert.ok(init.capabilities.completionProvider, 'completionProvider advertised');
  const sync = init.capabilities.textDocumentSync;
  assert.equal(typeof sync === 'number' ? sync : sync.change, 2, 'incremental sync');
  client.notify('initialized', {});
  const end = await client.waitFor(
    (n) => n.method === '$/progress' && n.params.value?.kind === 'end', 'the model-load progress to end', 90000);
  assert.match(end.params.value.message ?? '', /ready/, 'load ended with: ' + end.params.value.message);
  assert.ok(client.serverRequests.some((r) => r.method === 'window/workDoneProgress/create'));
  const bad = client.notifications.filter((n) => n.method === 'window/showMessage' && n.params.type <= 2);
  assert.deepEqual(bad, [], 'no error/warning messages (config from languages.toml accepted)');
});

async function completeAndApply(doc, cursor, word) {
  const position = lspPosition(doc.text, cursor, enc);
  const list = await client.request('textDocument/completion', {
    textDocument: { uri: doc.uri }, position, context: { triggerKind: 1 },
  }, 90000);
  const items = Array.isArray(list) ? list : list.items;
  assert.ok(items.length >= 1, 'at least one completion item');
  const item = items[0];
  assert.ok(helixFilterMatches(item, word), `Helix keeps the item for the typed word ${JSON.stringify(word)}`);
  assert.ok(item.label.length > 0 && !item.label.includes('\n'), 'a one-line label');
  // The same suggestion through the inline-completion path (answered from the server's cache).
  const inline = await client.request('textDocument/inlineCompletion', {
    textDocument: { uri: doc.uri }, position, context: { triggerKind: 2 },
  });
  const suggestion = (Array.isArray(inline) ? inline : inline.items)[0].insertText;
  const applied = helixApply(doc.text, cursor, item, enc);
  const expected = doc.text.slice(0, cursor) + suggestion + doc.text.slice(cursor);
  assert.equal(applied.text, expected, 'the item inserts exactly the suggestion');
  assert.equal(applied.cursor, cursor + suggestion.length, 'cursor ends after the suggestion');
  return suggestion;
}

await scenario('completion after typing inserts exactly the suggestion', async () => {
  const uri = pathToFileURL(join(dir, 'numbers.py')).href;
  const doc = new Doc(client, uri,
    'def add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n\n\n' +
    'def is_even(n):\n    """Return True when n is even."""\n');
  // Type "    return" one key at a time, as Helix sends one didChange per keystroke.
  let cursor = doc.text.length;
  for (const ch of '    return') {
    doc.edit(cursor, cursor, ch, enc);
    cursor += 1;
  }
  const s = await completeAndApply(doc, cursor, 'return');
  console.log(`  suggestion: ${JSON.stringify(s)}`);
});

await scenario('mid-word, after non-ASCII text on the line (utf-8 columns)', async () => {
  const uri = pathToFileURL(join(dir, 'greet.py')).href;
  const doc = new Doc(client, uri,
    'def greet(name):\n    """Grüße für name."""\n    message = "Grüße, " + name\n    print("→ ✓", mess\n');
  const cursor = doc.text.indexOf('mess\n') + 'mess'.length;
  // Typing "ag" after "mess" (both keys after the open) -> word "messag".
  doc.edit(cursor, cursor, 'ag', enc);
  const s = await completeAndApply(doc, cursor + 2, 'messag');
  console.log(`  suggestion: ${JSON.stringify(s)}`);
});

await client.shutdown();
clearTimeout(deadline);
const failed = results.filter(([, ok]) => !ok).length;
if (failed) console.log('server stderr (tail):\n' + client.stderr.slice(-2000));
console.log(`helix replay: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
