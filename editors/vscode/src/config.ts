// Settings -> server configuration, and the per-language switch. No `vscode` import here, so the
// unit tests run under plain Node.

/** The `lmrs.*` settings the extension reads. */
export interface Settings {
  enable: boolean;
  languages: Record<string, boolean>;
  serverPath: string;
  modelPath: string;
  threads: number;
  maxTokens: number;
  serverOptions: Record<string, unknown>;
  logLevel: string;
  autoPull: boolean;
}

export const DEFAULTS: Settings = {
  enable: true,
  languages: { '*': true, plaintext: false, markdown: false, scminput: false },
  // Empty: the bundled binary, else `lmrs` on PATH, else ~/.cargo/bin/lmrs (see server.ts).
  serverPath: '',
  modelPath: '',
  threads: 0,
  maxTokens: 0,
  serverOptions: {},
  logLevel: 'info',
  autoPull: false,
};

/** Reads settings through `get(key, default)` (a WorkspaceConfiguration in the extension). */
export function readSettings(get: <T>(key: string, dflt: T) => T): Settings {
  const s = {} as Record<string, unknown>;
  for (const [k, v] of Object.entries(DEFAULTS)) s[k] = get(k, v);
  return s as unknown as Settings;
}

/** Expands a leading `~/` (the server does not). */
export function expandHome(p: string, home: string | undefined): string {
  if (home && (p === '~' || p.startsWith('~/'))) return home + p.slice(1);
  return p;
}

/**
 * The server's `initializationOptions` (also sent as `workspace/didChangeConfiguration` settings).
 * Only what the user set: the server keeps its own defaults for the rest.
 */
export function serverOptions(s: Settings, home?: string): Record<string, unknown> {
  const o: Record<string, unknown> = { ...(s.serverOptions ?? {}) };
  if (s.modelPath) o.modelPath = expandHome(s.modelPath, home);
  if (s.threads > 0) o.threads = s.threads;
  if (s.maxTokens > 0) o.maxTokens = s.maxTokens;
  if (s.autoPull) o.autoPull = true;
  // The server also gates by language id; send the explicit switches (not the "*" default).
  const langs: Record<string, boolean> = {};
  for (const [k, v] of Object.entries(s.languages ?? {})) if (k !== '*') langs[k] = v;
  if (Object.keys(langs).length) o.languages = langs;
  return o;
}

/** Whether suggestions are on for a language id (`*` is the fallback, default on). */
export function languageEnabled(languages: Record<string, boolean> | undefined, languageId: string): boolean {
  const l = languages ?? {};
  if (languageId in l) return l[languageId];
  if ('*' in l) return l['*'];
  return true;
}

/** Whether going from `a` to `b` needs the server process restarted (not just reconfigured). */
export function needsRestart(a: Settings, b: Settings): boolean {
  return a.serverPath !== b.serverPath || a.logLevel !== b.logLevel;
}
