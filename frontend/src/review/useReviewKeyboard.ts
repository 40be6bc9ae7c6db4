// The review screen's keyboard: one keydown listener on the window for the page's lifetime. It
// reads the page's current state through an Effect Event, so it never has to re-subscribe.
import { useEffect, useEffectEvent } from "react";

export interface ReviewKeys {
  helpOpen: boolean;
  setHelp: (open: boolean) => void;
  /** Indexes of the saved steps, in order. */
  steps: number[];
  selected: number | null;
  select: (index: number) => void;
  rate: (index: number, rating: number | null) => void;
  editing: boolean;
  startEdit: (index: number) => void;
  cancelEdit: () => void;
  submitEdit: () => void;
  /** The trace's status (Esc / p stop a running trace, Ctrl+Enter / p continue a stopped one). */
  status: string | undefined;
  stop: () => void;
  resume: () => void;
  /** The trace's finish_reason: "step" when step mode paused it at the end of a step. */
  finishReason?: string;
  /** Enter, while paused in step mode: accept the step (the model writes the next). */
  acceptStep?: () => void;
  /** Ctrl+Z: undo your last label or review change of the session. */
  undo?: () => void;
  /** n: open the next item of your queue. */
  next?: () => void;
  /** a: ask for K alternatives of the selected step (or of the last one, when none is selected). */
  alternatives?: (index: number) => void;
  /** Set while a ready set of alternatives is open and nothing is picked: 1…K pick, Esc closes it. */
  picking?: boolean;
  pick?: (candidate: number) => void;
  closeAlternatives?: () => void;
  /** y / r: set the verdict (accept / reject) in the review form; s: save the review. */
  verdict?: (verdict: "accept" | "reject") => void;
  saveReview?: () => void;
  /** Shift+1…9: switch the selected step's Nth safety tag. */
  toggleTag?: (index: number, n: number) => void;
}

const RATING_KEYS: Record<string, number | null> = { "1": 1, "2": 0, "3": -1, "4": null };

function isTyping(el: EventTarget | null): boolean {
  const t = el as HTMLElement | null;
  if (!t || !t.tagName) return false;
  return t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable;
}

/** A focused button or link: Enter is its own (it clicks it), not a page shortcut. */
function isControl(el: EventTarget | null): boolean {
  const t = el as HTMLElement | null;
  if (!t || !t.tagName) return false;
  return t.tagName === "BUTTON" || t.tagName === "A" || t.getAttribute?.("role") === "button";
}

/** What one key press does on the review screen (exported for tests). */
export function handleReviewKey(e: KeyboardEvent, k: ReviewKeys): void {
  if (k.helpOpen) {
    if (e.key === "Escape" || e.key === "?") {
      e.preventDefault();
      k.setHelp(false);
    }
    return;
  }
  if (isTyping(e.target)) return; // the edit textarea handles its own Ctrl+Enter / Esc
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    if (k.editing) k.submitEdit();
    else if (k.status === "stopped") k.resume();
    return;
  }
  if ((e.ctrlKey || e.metaKey) && !e.shiftKey && (e.key === "z" || e.key === "Z")) {
    e.preventDefault();
    k.undo?.();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "Enter") {
    // Plain Enter accepts the step only while step mode waits at the end of one; never while
    // editing, in a field (the comment field saves on Enter) or on a focused button (it clicks it).
    if (!e.shiftKey && !k.editing && !isControl(e.target) && k.status === "stopped" && k.finishReason === "step" && k.acceptStep) {
      e.preventDefault();
      k.acceptStep();
    }
    return;
  }
  // Shift+digit reads the key's position (e.code): the character differs by keyboard layout.
  const digit = /^Digit([1-9])$/.exec(e.code ?? "");
  if (e.shiftKey && digit) {
    if (k.selected !== null && k.toggleTag) {
      e.preventDefault();
      k.toggleTag(k.selected, Number(digit[1]) - 1);
    }
    return;
  }
  if (k.picking && k.pick && /^[1-9]$/.test(e.key)) {
    // While alternatives wait for a pick, the digits pick a candidate (not a rating).
    e.preventDefault();
    k.pick(Number(e.key) - 1);
    return;
  }
  if (e.key === "Escape" && k.closeAlternatives && !k.editing && k.status !== "running") {
    k.closeAlternatives();
    return;
  }
  const pos = k.selected === null ? -1 : k.steps.indexOf(k.selected);
  switch (e.key) {
    case "j":
      if (k.steps.length) k.select(k.steps[Math.min(k.steps.length - 1, pos + 1)]);
      break;
    case "k":
      if (k.steps.length) k.select(k.steps[Math.max(0, pos < 0 ? 0 : pos - 1)]);
      break;
    case "1":
    case "2":
    case "3":
    case "4":
      if (k.selected !== null) k.rate(k.selected, RATING_KEYS[e.key]);
      break;
    case "e":
      if (k.selected !== null) {
        e.preventDefault(); // keep the "e" out of the textarea that opens
        k.startEdit(k.selected);
      }
      break;
    case "Escape":
      if (k.editing) k.cancelEdit();
      else if (k.status === "running") k.stop();
      break;
    case "?":
      k.setHelp(true);
      break;
    case "p":
      // Pause / resume: stop a running trace, continue a stopped (or paused) one.
      if (k.editing) break;
      if (k.status === "running") k.stop();
      else if (k.status === "stopped") k.resume();
      break;
    case "n":
      k.next?.();
      break;
    case "a": {
      const index = k.selected ?? k.steps[k.steps.length - 1];
      if (index !== undefined && k.alternatives) {
        e.preventDefault();
        k.alternatives(index);
      }
      break;
    }
    case "y":
      k.verdict?.("accept");
      break;
    case "r":
      k.verdict?.("reject");
      break;
    case "s":
      e.preventDefault();
      k.saveReview?.();
      break;
  }
}

export function useReviewKeyboard(keys: ReviewKeys): void {
  const onKey = useEffectEvent((e: KeyboardEvent) => handleReviewKey(e, keys));
  useEffect(() => {
    const listener = (e: KeyboardEvent) => onKey(e);
    window.addEventListener("keydown", listener);
    return () => window.removeEventListener("keydown", listener);
  }, []);
}
