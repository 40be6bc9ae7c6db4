// Your step labels, shown before the server confirms them: a rating, tag or comment change is drawn
// at once and sent over the trace socket; if the server refuses it (or the socket drops first), the
// step shows what it showed before and the error is reported. Pressing the rating a step already
// has clears it. Every change is reported to `onChange` with what was there before (for Ctrl+Z).
import { useCallback, useRef, useState } from "react";
import { useLatest } from "../lib/hooks";
import type { AckMsg } from "../stream/protocol";
import { myLabel, type TraceState } from "../stream/reducer";

export interface LabelDraft {
  rating: number | null;
  tags: string[];
  note: string;
}

export type SendAction = (action: string, fields: Record<string, unknown>) => Promise<AckMsg>;

export interface OptimisticLabels {
  /** Labels sent in this view, by step index (null: removed); they win over the server's copy of yours. */
  pending: Record<number, LabelDraft | null>;
  /** Stable: rate step `index` (1, 0, -1, or null for unsure), keeping its tags; the same rating again clears it. */
  rate: (index: number, rating: number | null) => void;
  /** Stable: switch one safety tag of step `index`, keeping its rating. */
  toggleTag: (index: number, tag: string) => void;
  /** Stable: set the comment of step `index`. */
  setNote: (index: number, note: string) => void;
  /** Stable: put back an earlier label (null: none) without recording it as a change (undo). */
  restore: (index: number, draft: LabelDraft | null) => void;
}

const EMPTY: LabelDraft = { rating: null, tags: [], note: "" };

export function useOptimisticLabels(opts: {
  state: TraceState;
  canAct: boolean;
  send: SendAction;
  onError: (e: unknown) => void;
  onChange?: (index: number, before: LabelDraft | null) => void;
}): OptimisticLabels {
  const [pending, setPending] = useState<Record<number, LabelDraft | null>>({});
  // The drafts as of the last change, not the last render: two keys pressed before React renders
  // (rate, then tag) must each build on the other.
  const drafts = useRef(pending);
  const latest = useLatest(opts);

  const put = useCallback((index: number, draft: LabelDraft | null | undefined) => {
    const next = { ...drafts.current };
    if (draft !== undefined) next[index] = draft;
    else delete next[index];
    drafts.current = next;
    setPending(next);
  }, []);

  const current = useCallback(
    (index: number): LabelDraft | null => {
      const { state } = latest.current;
      if (index in drafts.current) return drafts.current[index];
      const step = state.trace?.steps.find((s) => s.index === index);
      const mine = step ? myLabel(step, state.me) : undefined;
      return mine ? { rating: mine.rating ?? null, tags: mine.safety_tags ?? [], note: mine.note ?? "" } : null;
    },
    [latest],
  );

  const send = useCallback(
    (index: number, draft: LabelDraft | null, record = true) => {
      const { canAct, send: sendAction } = latest.current;
      if (!canAct) return;
      const shown = index in drafts.current ? drafts.current[index] : undefined;
      const before = current(index);
      put(index, draft);
      if (record) latest.current.onChange?.(index, before);
      const sent =
        draft === null
          ? sendAction("unlabel", { step_index: index })
          : sendAction("label", { step_index: index, rating: draft.rating, safety_tags: draft.tags, note: draft.note });
      sent.catch((e: unknown) => {
        // Undo only if nothing newer was drawn over this draft meanwhile.
        if (drafts.current[index] === draft) put(index, shown);
        latest.current.onError(e);
      });
    },
    [current, latest, put],
  );

  const rate = useCallback(
    (index: number, rating: number | null) => {
      const cur = current(index);
      if (cur && cur.rating === rating) {
        // The same rating again clears it: the whole label when nothing else is on it.
        send(index, cur.tags.length || cur.note ? { ...cur, rating: null } : null);
        return;
      }
      send(index, { ...(cur ?? EMPTY), rating });
    },
    [current, send],
  );

  const toggleTag = useCallback(
    (index: number, tag: string) => {
      const cur = current(index) ?? EMPTY;
      const tags = cur.tags.includes(tag) ? cur.tags.filter((t) => t !== tag) : [...cur.tags, tag];
      send(index, { ...cur, tags });
    },
    [current, send],
  );

  const setNote = useCallback(
    (index: number, note: string) => {
      const cur = current(index) ?? EMPTY;
      if (cur.note === note) return;
      send(index, { ...cur, note });
    },
    [current, send],
  );

  const restore = useCallback((index: number, draft: LabelDraft | null) => send(index, draft, false), [send]);

  return { pending, rate, toggleTag, setNote, restore };
}
