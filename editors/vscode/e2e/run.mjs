// End-to-end test of the lmrs VS Code extension in a real VS Code: code-server (VS Code in the
// browser, from npm) on 127.0.0.1, driven by Playwright with Debian's chromium.
//
//   LMRS_BIN=... LMRS_MODEL=... node editors/vscode/e2e/run.mjs --vsix editors/vscode/lmrs.vsix [--out DIR]
//
// With --bundled the .vsix is a platform one (scripts/package-platform.sh) and lmrs.serverPath is
// left unset: with no lmrs on PATH nor in ~/.cargo/bin, the server that answers is the bundled one.
//
// Installs the .vsix into a fresh profile, opens a Python file, types, waits for the ghost text and
// the status bar's "ready", presses Tab, saves, and checks the file on disk.

import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const vsix = resolve(arg('--vsix', join(here, '..', 'lmrs.vsix')));
const out = resolve(arg('--out', mkdtempSync(join(tmpdir(), 'lmrs-vscode-e2e-'))));
const bin = process.env.LMRS_BIN;
const model = process.env.LMRS_MODEL;
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const codeServer = join(here, 'node_modules', '.bin', 'code-server');
assert.ok(bin && model, 'LMRS_BIN and LMRS_MODEL must be set');
const bundled = process.argv.includes('--bundled');
if (bundled) {
  const onPath = spawnSync('sh', ['-c', 'command -v lmrs'], { encoding: 'utf8' }).stdout.trim();
  const cargo = join(process.env.HOME ?? '/nonexistent', '.cargo', 'bin', 'lmrs');
  assert.ok(!onPath, `--bundled: an lmrs on PATH (${onPath}) would hide whether the bundled one is used`);
  assert.ok(spawnSync('test', ['-e', cargo]).status !== 0, `--bundled: ${cargo} would hide whether the bundled one is used`);
}
mkdirSync(out, { recursive: true });

const log = (m) => console.log(`[vscode-e2e] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = setTimeout(() => {
  log('FAIL: timed out');
  cleanup().finally(() => process.exit(1));
}, Number(process.env.LMRS_E2E_TIMEOUT_MS ?? 240000));

const base = mkdtempSync(join(tmpdir(), 'lmrs-cs-'));
const userData = join(base, 'user-data');
const extensions = join(base, 'extensions');
// A fixed folder name: the server puts it into the prompt, so it keeps the suggestion stable.
const workspace = join(base, 'demo');
const browserProfile = join(base, 'chromium-profile');
for (const d of [join(userData, 'User'), extensions, workspace, browserProfile]) mkdirSync(d, { recursive: true });

const original =
  'def add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n\n\n' +
  'def is_even(n):\n    """Return True when n is even."""\n';
const file = join(workspace, 'numbers.py');
writeFileSync(file, original);
writeFileSync(
  join(userData, 'User', 'settings.json'),
  JSON.stringify(
    {
      ...(bundled ? {} : { 'lmrs.serverPath': bin }),
      'lmrs.modelPath': model,
      'lmrs.threads': 2,
      'lmrs.maxTokens': 24,
      'lmrs.serverOptions': { timeoutMs: 30000 },
      'lmrs.logLevel': 'debug',
      // A quiet, predictable editor: no other popups competing for Tab.
      'editor.quickSuggestions': { other: false, comments: false, strings: false },
      'editor.suggestOnTriggerCharacters': false,
      'editor.inlineSuggest.enabled': true,
      'editor.autoIndent': 'none',
      'editor.autoClosingBrackets': 'never',
      'files.insertFinalNewline': false,
      'files.trimTrailingWhitespace': false,
      'workbench.startupEditor': 'none',
      'workbench.tips.enabled': false,
      'workbench.enableExperiments': false,
      'security.workspace.trust.enabled': false,
      'telemetry.telemetryLevel': 'off',
      'extensions.autoCheckUpdates': false,
      'extensions.autoUpdate': false,
      'extensions.ignoreRecommendations': true,
      'update.mode': 'none',
      'chat.disableAIFeatures': true,
    },
    null,
    2,
  ),
);

let server;
let context;
async function cleanup() {
  try {
    await context?.close();
  } catch { /* closed */ }
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await Promise.race([new Promise((r) => server.once('exit', r)), sleep(3000)]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
}

async function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

async function main() {
  // 1. Install the extension into the fresh profile.
  const common = ['--user-data-dir', userData, '--extensions-dir', extensions];
  const inst = spawnSync(codeServer, [...common, '--install-extension', vsix], { encoding: 'utf8', timeout: 60000 });
  log(`install-extension: ${(inst.stdout + inst.stderr).trim().split('\n').slice(-2).join(' | ')}`);
  assert.equal(inst.status, 0, 'code-server --install-extension failed');

  // 2. Serve VS Code on loopback only, no auth.
  const port = await freePort();
  const serverLog = join(out, 'code-server.log');
  writeFileSync(serverLog, '');
  server = spawn(
    codeServer,
    [...common, '--bind-addr', `127.0.0.1:${port}`, '--auth', 'none', '--disable-telemetry', '--disable-update-check',
      '--disable-workspace-trust', '--disable-getting-started-override', '--disable-proxy', workspace],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SERVICE_URL: '', EXTENSIONS_GALLERY: '' } },
  );
  let serverOut = '';
  const keep = (d) => {
    serverOut += d;
    writeFileSync(serverLog, serverOut);
  };
  server.stdout.on('data', keep);
  server.stderr.on('data', keep);
  const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`;
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch { /* not yet */ }
    if (server.exitCode !== null) throw new Error(`code-server exited:\n${serverOut.slice(-2000)}`);
    if (i > 300) throw new Error('code-server did not come up in 60 s');
    await sleep(200);
  }
  log(`code-server up on 127.0.0.1:${port}`);

  // 3. Debian's chromium through Playwright (no browser download), fresh profile.
  context = await chromium.launchPersistentContext(browserProfile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForSelector('.monaco-workbench', { timeout: 60000 });
  log('workbench loaded');

  // 4. The extension's status bar item reaches "ready" (model loaded: `$/progress` end).
  const status = page.locator('.statusbar-item', { hasText: 'lmrs' }).first();
  await status.waitFor({ timeout: 60000 });
  await page.waitForFunction(() => {
    const items = [...document.querySelectorAll('.statusbar-item')].filter((e) => e.textContent.includes('lmrs'));
    if (items.some((e) => e.querySelector('.codicon-error'))) throw new Error('lmrs status shows an error');
    return items.some((e) => e.querySelector('.codicon-check'));
  }, null, { timeout: 90000, polling: 250 });
  log(`status bar: ready (${await status.getAttribute('aria-label')})`);

  // 5. Open the file (Quick Open) and type at its end.
  await page.keyboard.press('Control+P');
  await page.waitForSelector('.quick-input-widget input', { state: 'visible', timeout: 20000 });
  await page.keyboard.type('numbers.py');
  await page.waitForSelector('.quick-input-list .monaco-list-row', { timeout: 20000 });
  await page.keyboard.press('Enter');
  await page.waitForSelector('.monaco-editor .view-lines', { timeout: 20000 });
  await page.locator('.monaco-editor .view-lines').first().click();
  await page.keyboard.press('Control+End');
  const typed = '    return';
  await page.keyboard.type(typed, { delay: 30 });

  // 6. Ghost text appears (VS Code renders it with the ghost-text decoration classes).
  const ghost = page.locator('.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text').first();
  await ghost.waitFor({ state: 'attached', timeout: 60000 });
  await sleep(300);
  // The first line is injected into the cursor's line as (token-coloured) spans; further lines
  // are a view zone of `.ghost-text` lines.
  const ghostText = await page.evaluate(() => {
    const text = (e) => e.textContent.replace(/\u00a0/g, ' ');
    const inline = [...document.querySelectorAll('.monaco-editor .view-line .ghost-text-decoration')].map(text).join('');
    const more = [...document.querySelectorAll('.monaco-editor .ghost-text .view-line')].map(text);
    return [inline, ...more].join('\n');
  });
  log(`ghost text: ${JSON.stringify(ghostText)}`);
  await page.screenshot({ path: join(out, 'ghost-text.png') });
  assert.ok(ghostText.trim().length > 0, 'ghost text is empty');

  // 7. Tab accepts; save and check the file on disk.
  await page.keyboard.press('Tab');
  await sleep(300);
  await page.keyboard.press('Control+S');
  const expected = original + typed + ghostText;
  let saved = '';
  for (let i = 0; i < 50; i++) {
    saved = readFileSync(file, 'utf8');
    if (saved === expected) break;
    await sleep(200);
  }
  await page.screenshot({ path: join(out, 'accepted.png') });
  log(`saved file ends with: ${JSON.stringify(saved.slice(original.length))}`);
  assert.equal(saved, expected, 'the file is what was typed plus the ghost text');
  log('PASS');
}

try {
  await main();
  await cleanup();
  clearTimeout(deadline);
  process.exit(0);
} catch (e) {
  log(`FAIL: ${e.stack ?? e}`);
  try {
    const pages = context?.pages() ?? [];
    if (pages[0]) await pages[0].screenshot({ path: join(out, 'failure.png') });
  } catch { /* no page */ }
  await cleanup();
  clearTimeout(deadline);
  process.exit(1);
}
