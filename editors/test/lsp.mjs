// A minimal LSP client over stdio for the editor tests that replay an editor's traffic.
// Frames JSON-RPC with Content-Length headers, answers the server's requests, records everything.

import { spawn } from 'node:child_process';

export class LspClient {
  constructor(cmd, args, { env, onStderr } = {}) {
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
    this.nextId = 1;
    this.pending = new Map();
    this.notifications = [];
    this.serverRequests = [];
    this.waiters = [];
    this.stderr = '';
    this.exited = null;
    let buf = Buffer.alloc(0);
    this.proc.stdout.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const sep = buf.indexOf('\r\n\r\n');
        if (sep < 0) break;
        const m = /Content-Length: *(\d+)/i.exec(buf.subarray(0, sep).toString('ascii'));
        if (!m) throw new Error('bad header: ' + buf.subarray(0, sep).toString());
        const len = Number(m[1]);
        if (buf.length < sep + 4 + len) break;
        const msg = JSON.parse(buf.subarray(sep + 4, sep + 4 + len).toString('utf8'));
        buf = buf.subarray(sep + 4 + len);
        this.#dispatch(msg);
      }
    });
    this.proc.stderr.on('data', (d) => {
      this.stderr += d.toString();
      onStderr?.(d.toString());
    });
    this.proc.on('exit', (code, signal) => {
      this.exited = { code, signal };
      for (const { reject } of this.pending.values()) reject(new Error(`server exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  #write(msg) {
    const body = Buffer.from(JSON.stringify(msg), 'utf8');
    this.proc.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
    this.proc.stdin.write(body);
  }

  #dispatch(msg) {
    if (msg.id !== undefined && msg.method === undefined) {
      const p = this.pending.get(msg.id);
      if (p) {
        this.pending.delete(msg.id);
        if (msg.error) p.reject(Object.assign(new Error(msg.error.message), { rpc: msg.error }));
        else p.resolve(msg.result);
      }
      return;
    }
    if (msg.id !== undefined) {
      // A request from the server (window/workDoneProgress/create, workspace/configuration, ...).
      this.serverRequests.push(msg);
      const result = msg.method === 'workspace/configuration' ? (msg.params?.items ?? []).map(() => null) : null;
      this.#write({ jsonrpc: '2.0', id: msg.id, result });
    } else {
      this.notifications.push(msg);
    }
    this.waiters = this.waiters.filter((w) => !w.check());
  }

  request(method, params, timeoutMs = 30000) {
    const id = this.nextId++;
    this.#write({ jsonrpc: '2.0', id, method, params });
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => { clearTimeout(t); resolve(v); },
        reject: (e) => { clearTimeout(t); reject(e); },
      });
    });
  }

  notify(method, params) {
    this.#write({ jsonrpc: '2.0', method, params });
  }

  /** Resolves with the first notification (already received or future) that `pred` accepts. */
  waitFor(pred, what, timeoutMs = 60000) {
    const found = this.notifications.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      this.waiters.push({
        check: () => {
          const n = this.notifications.find(pred);
          if (n) { clearTimeout(t); resolve(n); return true; }
          return false;
        },
      });
    });
  }

  async shutdown() {
    if (this.exited) return;
    try {
      await this.request('shutdown', null, 5000);
      this.notify('exit', null);
    } catch { /* already gone */ }
    await new Promise((r) => {
      if (this.exited) return r();
      const t = setTimeout(() => { this.proc.kill('SIGKILL'); r(); }, 3000);
      this.proc.on('exit', () => { clearTimeout(t); r(); });
    });
  }
}

/** Byte/char helpers: an LSP position in `encoding` for a JS string offset. */
export function lspPosition(text, offset, encoding) {
  const before = text.slice(0, offset);
  const line = before.split('\n').length - 1;
  const lineText = before.slice(before.lastIndexOf('\n') + 1);
  let character;
  if (encoding === 'utf-8') character = Buffer.byteLength(lineText, 'utf8');
  else if (encoding === 'utf-32') character = [...lineText].length;
  else character = lineText.length; // JS strings are UTF-16
  return { line, character };
}

/** The JS string offset of an LSP position in `encoding`. */
export function offsetOf(text, pos, encoding) {
  const lines = text.split('\n');
  let off = 0;
  for (let i = 0; i < pos.line; i++) off += lines[i].length + 1;
  const lineText = lines[pos.line] ?? '';
  if (encoding === 'utf-8') {
    const bytes = Buffer.from(lineText, 'utf8').subarray(0, pos.character);
    return off + bytes.toString('utf8').length;
  }
  if (encoding === 'utf-32') return off + [...lineText].slice(0, pos.character).join('').length;
  return off + pos.character;
}
