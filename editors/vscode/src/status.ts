// The status bar's state machine, fed by the server's `$/progress`, `window/showMessage` and our own
// requests. No `vscode` import: unit-tested under plain Node.

import { pullNameOf } from './server';

export type State = 'starting' | 'loading' | 'ready' | 'busy' | 'error' | 'disabled' | 'stopped';

export interface View {
  text: string;
  tooltip: string;
  error: boolean;
  /** The model to offer `lmrs pull` for (the server said it is missing), if any. */
  pull?: string;
}

export interface ProgressValue {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
}

/** Whether a `$/progress` token is about the model (loading it, or downloading it with autoPull). */
export function isModelToken(token: string | number): boolean {
  return typeof token === 'string' && (token.startsWith('lmrs/load/') || token.startsWith('lmrs/pull/'));
}

export class StatusModel {
  private base: 'starting' | 'loading' | 'ready' | 'error' | 'stopped' = 'starting';
  private inflight = 0;
  private enabled = true;
  message = '';
  /** The catalogue name of a missing model the server told us to `lmrs pull`. */
  pullName: string | undefined;
  private listeners: Array<() => void> = [];

  onChange(f: () => void): void {
    this.listeners.push(f);
  }

  private changed(): void {
    for (const f of this.listeners) f();
  }

  get state(): State {
    if (!this.enabled) return 'disabled';
    if (this.base === 'ready' && this.inflight > 0) return 'busy';
    return this.base;
  }

  setEnabled(on: boolean): void {
    this.enabled = on;
    this.changed();
  }

  starting(): void {
    this.base = 'starting';
    this.inflight = 0;
    this.pullName = undefined;
    this.message = 'starting the server';
    this.changed();
  }

  stopped(message = 'server stopped'): void {
    this.base = 'stopped';
    this.inflight = 0;
    this.message = message;
    this.changed();
  }

  /**
   * A `$/progress` value of `token`; only the model's tokens (loading, downloading) change the
   * state (the workspace index's progress is not about the model).
   */
  progress(v: ProgressValue, token: string | number = 'lmrs/load/'): void {
    if (!isModelToken(token)) return;
    const pct = typeof v.percentage === 'number' ? ` (${v.percentage}%)` : '';
    if (v.kind === 'begin') {
      this.base = 'loading';
      this.pullName = undefined;
      this.message = [v.title, v.message].filter(Boolean).join(': ') + pct;
    } else if (v.kind === 'report') {
      if (v.message || pct) this.message = (v.message ?? this.message) + pct;
    } else {
      // The server ends the load with "lmrs: model ready (...)" or with the error, and a download
      // with "lmrs: NAME downloaded" (the load follows) or with the error.
      const msg = v.message ?? '';
      this.base = /\bready\b/.test(msg) ? 'ready' : /\bdownloaded$/.test(msg) ? 'loading' : 'error';
      this.message = msg;
      if (this.base === 'error') this.pullName = pullNameOf(msg);
    }
    this.changed();
  }

  /** A `window/showMessage` from the server; errors turn the item red. */
  showMessage(type: number, message: string): void {
    if (type === 1) {
      this.base = 'error';
      this.message = message;
      this.pullName = pullNameOf(message) ?? this.pullName;
      this.changed();
    }
  }

  /** The server came up without reporting progress (clients may not get any): assume ready. */
  readyIfUnknown(): void {
    if (this.base === 'starting') {
      this.base = 'ready';
      this.changed();
    }
  }

  requestStarted(): void {
    this.inflight += 1;
    if (this.inflight === 1) this.changed();
  }

  requestEnded(): void {
    this.inflight = Math.max(0, this.inflight - 1);
    if (this.inflight === 0) this.changed();
  }

  view(): View {
    const icons: Record<State, string> = {
      starting: '$(loading~spin)',
      loading: '$(loading~spin)',
      ready: '$(check)',
      busy: '$(sync~spin)',
      error: '$(error)',
      disabled: '$(circle-slash)',
      stopped: '$(debug-stop)',
    };
    const s = this.state;
    const what: Record<State, string> = {
      starting: 'starting',
      loading: 'loading the model',
      ready: 'ready',
      busy: 'thinking',
      error: 'error',
      disabled: 'suggestions off',
      stopped: 'stopped',
    };
    const pull = s === 'error' ? this.pullName : undefined;
    const click = pull ? `Click to pull ${pull} (lmrs pull ${pull}) and restart the server.` : 'Click to toggle suggestions.';
    const tooltip = `lmrs: ${what[s]}${this.message ? `\n${this.message}` : ''}\n${click}`;
    return { text: `${icons[s]} lmrs`, tooltip, error: s === 'error', pull };
  }
}
