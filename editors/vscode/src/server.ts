// Which `lmrs` executable to start, and what to run when the model is missing. No `vscode` import,
// so the unit tests run under plain Node.

import * as path from 'path';

/** How to install the server binary (shown when none is found); both put it in ~/.cargo/bin. */
export const INSTALL_HINT =
  '`cargo install --locked --path server` in a checkout of lmrs, or `cargo install --locked --git <lmrs repository URL> lmrs-lsp`';

/** What the lookup may ask of the machine (the real file system and environment in the extension). */
export interface Lookup {
  /** `lmrs.serverPath` (empty: look for the binary). */
  configured: string;
  /** The extension's folder (a platform-specific .vsix bundles the binary in `server/`). */
  extensionPath: string;
  platform: string;
  home: string | undefined;
  /** `PATH` (`Path` on Windows). */
  pathEnv: string | undefined;
  /** Whether `p` is an executable file (on Windows: an existing file). */
  isExecutable: (p: string) => boolean;
}

export interface Found {
  path: string;
  /** Where it was found, for the log. */
  source: 'setting' | 'bundled' | 'PATH' | 'cargo';
}

/** The binary's file name on `platform`. */
export function binaryName(platform: string): string {
  return platform === 'win32' ? 'lmrs.exe' : 'lmrs';
}

/** Looks `name` up in a `PATH` value. */
function onPath(name: string, l: Lookup): string | undefined {
  const p = l.platform === 'win32' ? path.win32 : path.posix;
  for (const dir of (l.pathEnv ?? '').split(p.delimiter)) {
    if (!dir) continue;
    const candidate = p.join(dir, name);
    if (l.isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/**
 * The server binary, in this order: the `lmrs.serverPath` setting (a path, `~/` expanded, or a name
 * looked up on PATH; when set, it is the only candidate, so a wrong setting is an error, not a
 * silent fallback), the binary bundled in the extension (`server/lmrs`, `server/lmrs.exe`), `lmrs`
 * on PATH, `~/.cargo/bin/lmrs` (where `cargo install` puts it, often not on an editor's PATH).
 */
export function findServer(l: Lookup): Found | undefined {
  const p = l.platform === 'win32' ? path.win32 : path.posix;
  const configured = l.configured.trim();
  if (configured) {
    let expanded = configured;
    if (l.home && (configured === '~' || configured.startsWith('~/'))) expanded = l.home + configured.slice(1);
    const isName = !expanded.includes('/') && !(l.platform === 'win32' && expanded.includes('\\'));
    if (isName) {
      const hit = onPath(expanded, l) ?? (l.platform === 'win32' && !expanded.endsWith('.exe') ? onPath(`${expanded}.exe`, l) : undefined);
      return hit ? { path: hit, source: 'setting' } : undefined;
    }
    return l.isExecutable(expanded) ? { path: expanded, source: 'setting' } : undefined;
  }
  const name = binaryName(l.platform);
  const bundled = p.join(l.extensionPath, 'server', name);
  if (l.isExecutable(bundled)) return { path: bundled, source: 'bundled' };
  const fromPath = onPath(name, l);
  if (fromPath) return { path: fromPath, source: 'PATH' };
  if (l.home) {
    const cargo = p.join(l.home, '.cargo', 'bin', name);
    if (l.isExecutable(cargo)) return { path: cargo, source: 'cargo' };
  }
  return undefined;
}

/** What to tell the person when [`findServer`] found nothing. */
export function notFoundMessage(configured: string): string {
  if (configured.trim()) {
    return `lmrs: the server binary \`${configured}\` (setting lmrs.serverPath) was not found or is not executable. Fix the setting, or clear it to use a bundled, PATH or ~/.cargo/bin lmrs.`;
  }
  return `lmrs: no server binary found (not bundled with this extension, not on PATH, not in ~/.cargo/bin). Install it with ${INSTALL_HINT}, or set lmrs.serverPath.`;
}

/**
 * The model name in a server message that says which `lmrs pull` to run (a missing model file),
 * e.g. `qwen2.5-coder:0.5b`; `undefined` for other messages.
 */
export function pullNameOf(message: string): string | undefined {
  return /`lmrs pull ([^`\s]+)`/.exec(message)?.[1];
}
