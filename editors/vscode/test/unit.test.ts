// Unit tests of the extension's editor-independent parts (run under plain Node: `npm test`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS, Settings, languageEnabled, needsRestart, readSettings, serverOptions, expandHome } from '../src/config';
import { StatusModel } from '../src/status';
import { toItems, triggerKind } from '../src/inline';

const s = (o: Partial<Settings>): Settings => ({ ...DEFAULTS, ...o });

test('settings map to initializationOptions, only what is set', () => {
  assert.deepEqual(serverOptions(s({ languages: { '*': true } })), {});
  assert.deepEqual(
    serverOptions(s({ modelPath: '~/m.gguf', threads: 2, maxTokens: 32, serverOptions: { multiline: false } }), '/home/u'),
    { multiline: false, modelPath: '/home/u/m.gguf', threads: 2, maxTokens: 32, languages: { plaintext: false, markdown: false, scminput: false } },
  );
  assert.equal(expandHome('/abs/x', '/home/u'), '/abs/x');
  assert.equal(expandHome('~other/x', '/home/u'), '~other/x');
});

test('readSettings falls back to the defaults', () => {
  const got = readSettings((k, d) => (k === 'threads' ? (3 as never) : d));
  assert.equal(got.threads, 3);
  assert.equal(got.serverPath, 'lmrs');
  assert.equal(got.enable, true);
});

test('per-language switch with a * default', () => {
  assert.equal(languageEnabled(DEFAULTS.languages, 'python'), true);
  assert.equal(languageEnabled(DEFAULTS.languages, 'markdown'), false);
  assert.equal(languageEnabled({ '*': false, rust: true }, 'rust'), true);
  assert.equal(languageEnabled({ '*': false, rust: true }, 'go'), false);
  assert.equal(languageEnabled(undefined, 'go'), true);
});

test('only the server path and log level need a restart', () => {
  assert.equal(needsRestart(DEFAULTS, s({ modelPath: '/x' })), false);
  assert.equal(needsRestart(DEFAULTS, s({ serverPath: '/bin/lmrs' })), true);
  assert.equal(needsRestart(DEFAULTS, s({ logLevel: 'debug' })), true);
});

test('inline completion results: list, array, snippets, empties', () => {
  const range = { start: { line: 1, character: 2 }, end: { line: 1, character: 2 } };
  assert.deepEqual(toItems(null), []);
  assert.deepEqual(toItems({ items: [] }), []);
  assert.deepEqual(toItems({ items: [{ insertText: 'a + b', range }] }), [{ text: 'a + b', range }]);
  assert.deepEqual(toItems([{ insertText: 'x' }, { insertText: '' }, { insertText: { kind: 'snippet', value: 'y' } }]), [
    { text: 'x' },
    { text: 'y' },
  ]);
  assert.equal(triggerKind(0), 1); // Invoke -> Invoked
  assert.equal(triggerKind(1), 2); // Automatic
});

test('status: loading -> ready -> busy -> ready, errors, disabled', () => {
  const m = new StatusModel();
  let changes = 0;
  m.onChange(() => changes++);
  m.starting();
  assert.equal(m.state, 'starting');
  m.progress({ kind: 'begin', title: 'lmrs: loading model', message: '/m.gguf' });
  assert.equal(m.state, 'loading');
  assert.match(m.view().tooltip, /loading the model/);
  m.progress({ kind: 'end', message: 'lmrs: model ready (qwen2 0.5B)' });
  assert.equal(m.state, 'ready');
  assert.equal(m.view().text, '$(check) lmrs');
  m.requestStarted();
  m.requestStarted();
  assert.equal(m.state, 'busy');
  m.requestEnded();
  assert.equal(m.state, 'busy');
  m.requestEnded();
  assert.equal(m.state, 'ready');
  m.setEnabled(false);
  assert.equal(m.state, 'disabled');
  m.setEnabled(true);
  m.progress({ kind: 'begin', title: 'lmrs: loading model' });
  m.progress({ kind: 'end', message: 'lmrs: no such file. Inline completions are off until a model loads' });
  assert.equal(m.state, 'error');
  assert.equal(m.view().error, true);
  m.showMessage(3, 'info only');
  assert.equal(m.state, 'error');
  m.starting();
  m.showMessage(1, 'lmrs: boom');
  assert.equal(m.state, 'error');
  assert.ok(changes >= 10);
});
