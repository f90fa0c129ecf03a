// End-to-end test of the playground page of `lmrs serve` (GET /) in headless Chromium, driven by
// Playwright (playwright-core from npm, Debian's chromium).
//
//   LMRS_BIN=target/release/lmrs LMRS_MODEL=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf node editors/playground/run.mjs
//
// Starts `lmrs serve --port 0` with an API key, opens the page, enters the key, types code, waits
// for the ghost text, checks the timings line and the model info, dismisses a suggestion with Esc,
// accepts the next with Tab, and checks that the accepted text is in the editor.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const bin = process.env.LMRS_BIN;
const model = process.env.LMRS_MODEL;
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
assert.ok(bin && model, 'LMRS_BIN and LMRS_MODEL must be set');
const log = (m) => console.log(`[playground] ${m}`);

const server = spawn(bin, ['serve', '--model', model, '--port', '0', '--api-key', 'playground-key', '--threads', '2'], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, LMRS_LOG: 'warn' },
});
let browser;
const cleanup = async () => {
  if (browser) await browser.close().catch(() => {});
  server.kill();
};
const deadline = setTimeout(() => {
  log('FAIL: timed out');
  cleanup().finally(() => process.exit(1));
}, Number(process.env.LMRS_E2E_TIMEOUT_MS ?? 180000));

try {
  const base = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: server.stdout });
    lines.once('line', (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      m ? resolve(m[1]) : reject(new Error(`unexpected first line: ${line}`));
    });
    server.once('exit', (code) => reject(new Error(`lmrs serve exited with ${code}`)));
  });
  log(`server at ${base}`);

  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
  const page = await browser.newPage();
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  await page.goto(base + '/');

  // Without the key the page says what is wrong; with it, the model's info appears.
  await page.waitForFunction(() => /API key|loading|model:/.test(document.getElementById('model').textContent));
  await page.fill('#api_key', 'playground-key');
  await page.dispatchEvent('#api_key', 'change');
  await page.fill('#n_predict', '12');
  await page.waitForFunction(() => document.getElementById('model').textContent.includes('context'), null, { timeout: 60000 });
  const info = await page.textContent('#model');
  assert.match(info, /qwen2\.5-coder.*context \d+.*slot/);
  assert.match(await page.textContent('#fim'), /<\|fim_prefix\|>/);
  log(info);

  // Type at the end of the function: a suggestion appears as ghost text, with its timings.
  const editor = page.locator('#code');
  await editor.click();
  await page.keyboard.press('Control+End');
  await page.keyboard.type('    if n');
  await page.waitForSelector('#ghost', { timeout: 60000 });
  const first = await page.textContent('#ghost');
  assert.ok(first.trim().length > 0, 'the ghost text is empty');
  assert.match(await page.textContent('#status'), /prompt \d+ tokens \(\d+ from the cache, \d+ evaluated\).*slot \d/);
  log(`ghost text: ${JSON.stringify(first)}`);

  // Esc dismisses it and leaves the text as typed.
  const typed = await editor.inputValue();
  await page.keyboard.press('Escape');
  await page.waitForSelector('#ghost', { state: 'detached' });
  assert.equal(await editor.inputValue(), typed);

  // Typing on brings a new one; Tab accepts it. Typed into the first suggestion, it is that
  // suggestion's rest from the server's suggestion cache; otherwise the model answers again and
  // the prompt's start is in the slot's KV cache.
  await page.keyboard.type(' ');
  await page.waitForSelector('#ghost', { timeout: 60000 });
  const suggestion = await page.textContent('#ghost');
  const status = await page.textContent('#status');
  if (first.startsWith(' ') && first.length > 1) {
    assert.match(status, /from the suggestion cache/);
    assert.equal(suggestion, first.slice(1));
  } else {
    const cached = Number(/\((\d+) from the cache/.exec(status)[1]);
    assert.ok(cached > 0, `the second suggestion reused nothing from the cache: ${status}`);
  }
  log(`second suggestion: ${JSON.stringify(suggestion)}; ${status}`);
  await page.keyboard.press('Tab');
  const accepted = await editor.inputValue();
  assert.equal(accepted, typed + ' ' + suggestion);
  assert.ok(accepted.includes('if n ' + suggestion.split('\n')[0]));
  log('accepted: the suggestion is in the editor');
  console.log('ok - playground: ghost text, Esc, Tab');
  await cleanup();
  clearTimeout(deadline);
} catch (e) {
  log(`FAIL: ${e.stack ?? e}`);
  await cleanup();
  process.exit(1);
}
