// The server's inline-completion answer -> plain items. No `vscode` import (unit-tested).

export interface LspPosition {
  line: number;
  character: number;
}
export interface LspRange {
  start: LspPosition;
  end: LspPosition;
}
export interface Item {
  text: string;
  range?: LspRange;
}

/**
 * Items from a `textDocument/inlineCompletion` result: an `InlineCompletionList`, an array of
 * `InlineCompletionItem`, or null. Snippet-valued `insertText` (a `StringValue`) is taken as plain
 * text; empty suggestions are dropped.
 */
export function toItems(result: unknown): Item[] {
  if (!result) return [];
  const raw = Array.isArray(result) ? result : (result as { items?: unknown[] }).items;
  if (!Array.isArray(raw)) return [];
  const out: Item[] = [];
  for (const r of raw as Array<Record<string, unknown>>) {
    let text = r.insertText as unknown;
    if (text && typeof text === 'object') text = (text as { value?: string }).value;
    if (typeof text !== 'string' || text === '') continue;
    out.push(r.range ? { text, range: r.range as LspRange } : { text });
  }
  return out;
}

/** LSP trigger kind for VS Code's InlineCompletionTriggerKind (0 = Invoke, 1 = Automatic). */
export function triggerKind(vscodeKind: number): 1 | 2 {
  return vscodeKind === 0 ? 1 : 2;
}
