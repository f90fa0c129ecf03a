// Unit tests of the extension's editor-independent parts (run under plain Node: `npm test`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS, Settings, languageEnabled, needsRestart, readSettings, serverOptions, expandHome } from '../src/config';
import { StatusModel } from '../src/status';
import { toItems, triggerKind } from '../src/inline';
import { Lookup, findServer, notFoundMessage, pullNameOf } from '../src/server';

const s = (o: Partial<Settings>): Settings => ({ ...DEFAULTS, ...o });

test('settings map to initializationOptions, only what is set', () => {
  assert.deepEqual(serverOptions(s({ languages: { '*': true } })), {});
  assert.deepEqual(
    serverOptions(s({ modelPath: '~/m.gguf', threads: 2, maxTokens: 32, serverOptions: { multiline: false } }), '/home/u'),
    { multiline: false, modelPath: '/home/u/m.gguf', threads: 2, maxTokens: 32, languages: { plaintext: false, markdown: false, scminput: false } },
  );
  assert.deepEqual(serverOptions(s({ languages: {}, autoPull: true })), { autoPull: true });
  assert.equal(expandHome('/abs/x', '/home/u'), '/abs/x');
  assert.equal(expandHome('~other/x', '/home/u'), '~other/x');
});

test('readSettings falls back to the defaults', () => {
  const got = readSettings((k, d) => (k === 'threads' ? (3 as never) : d));
  assert.equal(got.threads, 3);
  assert.equal(got.serverPath, '', 'empty: the extension looks for the binary');
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

test('server binary: setting, then bundled, then PATH, then ~/.cargo/bin', () => {
  const look = (files: string[], o: Partial<Lookup> = {}) =>
    findServer({
      configured: '',
      extensionPath: '/ext',
      platform: 'linux',
      home: '/home/u',
      pathEnv: '/usr/bin:/opt/lmrs/bin',
      isExecutable: (p) => files.includes(p),
      ...o,
    });
  const all = ['/my/lmrs', '/ext/server/lmrs', '/opt/lmrs/bin/lmrs', '/home/u/.cargo/bin/lmrs'];
  assert.deepEqual(look(all, { configured: '/my/lmrs' }), { path: '/my/lmrs', source: 'setting' });
  assert.deepEqual(look(all), { path: '/ext/server/lmrs', source: 'bundled' });
  assert.deepEqual(look(all.slice(2)), { path: '/opt/lmrs/bin/lmrs', source: 'PATH' });
  assert.deepEqual(look(all.slice(3)), { path: '/home/u/.cargo/bin/lmrs', source: 'cargo' });
  assert.equal(look([]), undefined);
  // A setting is the only candidate: a wrong one is an error, not a silent fallback.
  assert.equal(look(all, { configured: '/nope/lmrs' }), undefined);
  // `~/` is expanded; a bare name is looked up on PATH.
  assert.deepEqual(look(['/home/u/bin/lmrs'], { configured: '~/bin/lmrs' }), { path: '/home/u/bin/lmrs', source: 'setting' });
  assert.deepEqual(look(all, { configured: 'lmrs' }), { path: '/opt/lmrs/bin/lmrs', source: 'setting' });
  // Windows: lmrs.exe, `;`-separated Path.
  const win = ['C:\\ext\\server\\lmrs.exe', 'C:\\tools\\lmrs.exe', 'C:\\Users\\u\\.cargo\\bin\\lmrs.exe'];
  const w = (files: string[]) =>
    look(files, { platform: 'win32', extensionPath: 'C:\\ext', home: 'C:\\Users\\u', pathEnv: 'C:\\Windows;C:\\tools' });
  assert.deepEqual(w(win), { path: win[0], source: 'bundled' });
  assert.deepEqual(w(win.slice(1)), { path: win[1], source: 'PATH' });
  assert.deepEqual(w(win.slice(2)), { path: win[2], source: 'cargo' });
  assert.match(notFoundMessage(''), /cargo install --locked/);
  assert.match(notFoundMessage('/nope/lmrs'), /lmrs\.serverPath/);
});

test('a missing model: the pull name from the message, and the status item offers it', () => {
  const msg =
    'lmrs: opening /m/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf: No such file. Inline completions are off until a model loads: run `lmrs pull qwen2.5-coder:0.5b` to download it, or ...';
  assert.equal(pullNameOf(msg), 'qwen2.5-coder:0.5b');
  assert.equal(pullNameOf('lmrs: boom'), undefined);
  const m = new StatusModel();
  m.starting();
  m.progress({ kind: 'begin', title: 'lmrs: loading model' }, 'lmrs/load/1');
  m.progress({ kind: 'end', message: msg }, 'lmrs/load/1');
  assert.equal(m.state, 'error');
  assert.equal(m.view().pull, 'qwen2.5-coder:0.5b');
  assert.match(m.view().tooltip, /Click to pull qwen2\.5-coder:0\.5b/);
  m.showMessage(1, msg);
  assert.equal(m.view().pull, 'qwen2.5-coder:0.5b');
  m.starting();
  assert.equal(m.view().pull, undefined);
  // autoPull: the download's progress, then the load.
  m.progress({ kind: 'begin', title: 'lmrs: downloading qwen2.5-coder:0.5b', percentage: 0 }, 'lmrs/pull/1');
  assert.equal(m.state, 'loading');
  m.progress({ kind: 'report', message: '245 of 491 MB', percentage: 50 }, 'lmrs/pull/1');
  assert.match(m.view().tooltip, /245 of 491 MB \(50%\)/);
  m.progress({ kind: 'end', message: 'lmrs: qwen2.5-coder:0.5b downloaded' }, 'lmrs/pull/1');
  assert.equal(m.state, 'loading');
  // The workspace index's progress does not touch the model's state.
  m.progress({ kind: 'end', message: '12 files indexed' }, 'lmrs/index');
  assert.equal(m.state, 'loading');
  m.progress({ kind: 'end', message: 'lmrs: model ready (qwen2)' }, 'lmrs/load/2');
  assert.equal(m.state, 'ready');
  assert.equal(m.view().pull, undefined);
});
