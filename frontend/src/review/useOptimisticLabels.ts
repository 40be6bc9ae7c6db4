// Your step labels, shown before the server confirms them: a rating or tag change is drawn at once
// and sent over the trace socket; if the server refuses it (or the socket drops first), the step
// shows what it showed before and the error is reported.
import { useCallback, useRef, useState } from "react";
import { useLatest } from "../lib/hooks";
import type { AckMsg } from "../stream/protocol";
import { myLabel, type TraceState } from "../stream/reducer";

export interface LabelDraft {
  rating: number | null;
  tags: string[];
}

export type SendAction = (action: string, fields: Record<string, unknown>) => Promise<AckMsg>;

export interface OptimisticLabels {
  /** Labels sent in this view, by step index; they win over the server's copy of yours. */
  pending: Record<number, LabelDraft>;
  /** Stable: rate step `index` (1, 0, -1, or null for unsure), keeping its tags. */
  rate: (index: number, rating: number | null) => void;
  /** Stable: switch one safety tag of step `index`, keeping its rating. */
  toggleTag: (index: number, tag: string) => void;
}

export function useOptimisticLabels(opts: {
  state: TraceState;
  canAct: boolean;
  send: SendAction;
  onError: (e: unknown) => void;
}): OptimisticLabels {
  const [pending, setPending] = useState<Record<number, LabelDraft>>({});
  // The drafts as of the last change, not the last render: two keys pressed before React renders
  // (rate, then tag) must each build on the other.
  const drafts = useRef(pending);
  const latest = useLatest(opts);

  const put = useCallback((index: number, draft: LabelDraft | undefined) => {
    const next = { ...drafts.current };
    if (draft) next[index] = draft;
    else delete next[index];
    drafts.current = next;
    setPending(next);
  }, []);

  const send = useCallback(
    (index: number, draft: LabelDraft) => {
      const { canAct, send: sendAction } = latest.current;
      if (!canAct) return;
      const before = drafts.current[index];
      put(index, draft);
      sendAction("label", { step_index: index, rating: draft.rating, safety_tags: draft.tags, note: "" }).catch(
        (e: unknown) => {
          // Undo only if nothing newer was drawn over this draft meanwhile.
          if (drafts.current[index] === draft) put(index, before);
          latest.current.onError(e);
        },
      );
    },
    [latest, put],
  );

  const current = useCallback(
    (index: number): LabelDraft => {
      const { state } = latest.current;
      const draft = drafts.current[index];
      if (draft) return draft;
      const step = state.trace?.steps.find((s) => s.index === index);
      const mine = step ? myLabel(step, state.me) : undefined;
      return { rating: mine?.rating ?? null, tags: mine?.safety_tags ?? [] };
    },
    [latest],
  );

  const rate = useCallback(
    (index: number, rating: number | null) => send(index, { rating, tags: current(index).tags }),
    [current, send],
  );

  const toggleTag = useCallback(
    (index: number, tag: string) => {
      const cur = current(index);
      const tags = cur.tags.includes(tag) ? cur.tags.filter((t) => t !== tag) : [...cur.tags, tag];
      send(index, { rating: cur.rating, tags });
    },
    [current, send],
  );

  return { pending, rate, toggleTag };
}
