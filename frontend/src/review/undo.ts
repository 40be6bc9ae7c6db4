// Ctrl+Z: the label and review changes of this browser session, newest last. Undoing one puts back
// what was there before, over REST (the change may belong to a trace you have since left; the
// trace's viewers see the undo through the socket like any other change).
import { api } from "../lib/api";

export interface LabelValue {
  rating: number | null;
  tags: string[];
  note: string;
}
export interface ReviewValue {
  verdict: string;
  safety_label: string;
  value_label: string;
  knowledge_label: string;
  note: string;
}

export type UndoEntry =
  | { kind: "label"; projectId: number; traceId: number; index: number; before: LabelValue | null }
  | { kind: "review"; projectId: number; traceId: number; before: ReviewValue | null };

const stack: UndoEntry[] = [];
const listeners = new Set<() => void>();

export function recordChange(entry: UndoEntry): void {
  stack.push(entry);
  if (stack.length > 200) stack.shift();
  for (const fn of listeners) fn();
}

export function undoDepth(): number {
  return stack.length;
}

export function subscribeUndo(fn: () => void): () => void {
  listeners.add(fn);
  return () => {
    listeners.delete(fn);
  };
}

/** Undo the newest change; resolves to it (null when there is nothing to undo). `here` may undo it
 * itself (a label of the page's own trace, through its socket, so its drawing stays consistent):
 * it returns true when it did. */
export async function undoLast(here?: (entry: UndoEntry) => boolean): Promise<UndoEntry | null> {
  const entry = stack.pop();
  if (!entry) return null;
  for (const fn of listeners) fn();
  if (here?.(entry)) return entry;
  const trace = { project_id: entry.projectId, trace_id: entry.traceId };
  try {
    if (entry.kind === "label") {
      const path = { ...trace, index: entry.index };
      if (entry.before === null) await api.delete("/api/projects/{project_id}/traces/{trace_id}/steps/{index}/label/", { params: { path } });
      else
        await api.put("/api/projects/{project_id}/traces/{trace_id}/steps/{index}/label/", {
          params: { path },
          body: { rating: entry.before.rating, safety_tags: entry.before.tags, note: entry.before.note },
        });
    } else if (entry.before === null) {
      await api.delete("/api/projects/{project_id}/traces/{trace_id}/reviews/", { params: { path: trace } });
    } else {
      await api.put("/api/projects/{project_id}/traces/{trace_id}/reviews/", { params: { path: trace }, body: entry.before });
    }
  } catch (e) {
    stack.push(entry); // not undone: keep it, so the next Ctrl+Z tries again
    for (const fn of listeners) fn();
    throw e;
  }
  return entry;
}
