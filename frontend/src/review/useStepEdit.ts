// Correcting a step in place: the draft text and reason, and the `edit` action that creates the
// branch. A stale edit (someone changed the trace meanwhile) keeps the draft so nothing typed is lost.
import { useCallback, useState } from "react";
import { useLatest } from "../lib/hooks";
import { ActionError } from "../stream/connection";
import type { LiveTrace } from "../stream/protocol";
import type { SendAction } from "./useOptimisticLabels";

export interface StepDraft {
  index: number;
  text: string;
  reason: string;
}

export interface StepEdit {
  editing: StepDraft | null;
  /** Opens the editor on step `index` with its text; false when there is no such step or you may not act. */
  start: (index: number) => boolean;
  change: (text: string) => void;
  setReason: (reason: string) => void;
  cancel: () => void;
  /** Sends the edit with the trace version you saw; `onBranch` gets the new branch's id. */
  submit: () => Promise<void>;
}

export function useStepEdit(opts: {
  trace: LiveTrace | null;
  canAct: boolean;
  send: SendAction;
  onNotice: (text: string) => void;
  onBranch: (branchId: number) => void;
}): StepEdit {
  const [editing, setEditing] = useState<StepDraft | null>(null);
  const latest = useLatest({ ...opts, editing });

  const start = useCallback(
    (index: number) => {
      const { trace, canAct } = latest.current;
      const step = trace?.steps.find((s) => s.index === index);
      if (!step || !canAct) return false;
      setEditing({ index, text: step.text, reason: "" });
      return true;
    },
    [latest],
  );
  const change = useCallback((text: string) => setEditing((e) => (e ? { ...e, text } : e)), []);
  const setReason = useCallback((reason: string) => setEditing((e) => (e ? { ...e, reason } : e)), []);
  const cancel = useCallback(() => setEditing(null), []);

  const submit = useCallback(async () => {
    const { editing: draft, trace, send, onNotice, onBranch } = latest.current;
    if (!draft || !trace) return;
    if (!draft.text.trim()) {
      onNotice("The corrected step is empty.");
      return;
    }
    onNotice("Creating the branch…");
    try {
      const ack = await send("edit", {
        step_index: draft.index,
        text: draft.text,
        expected_version: trace.version,
        reason: draft.reason,
      });
      onNotice("");
      if (ack.branch?.id) onBranch(ack.branch.id);
    } catch (e) {
      if (e instanceof ActionError && e.code === "stale_version")
        onNotice("Someone changed this trace while you were editing. Your text is kept; check the steps and submit again.");
      else onNotice(e instanceof Error ? e.message : String(e));
    }
  }, [latest]);

  return { editing, start, change, setReason, cancel, submit };
}
