// Pure reducer for the live trace stream (docs/websocket.md). It applies the snapshot and the
// seq-numbered events in order: an event at or below the last applied seq is a duplicate and is
// dropped; an event beyond last seq + 1 means we missed some, so the state records a gap and the
// connection reconnects with ?last_seq to get exactly the missing ones.

import type { RoleEnum, UserBrief } from "../lib/api";
import type {
  BranchInfo,
  Controller,
  LiveCorrection,
  LiveLabel,
  LiveReview,
  LiveStep,
  LiveTrace,
  SeqMsg,
  ServerMsg,
} from "./protocol";

export interface TraceState {
  traceId: number | null;
  /** Last applied seq; -1 until a snapshot arrives. */
  seq: number;
  trace: LiveTrace | null;
  partial: string;
  answer: string;
  watchers: UserBrief[];
  role: RoleEnum | null;
  me: UserBrief | null;
  /** Branches created while watching (the REST trace only lists their ids). */
  branchInfo: Record<number, BranchInfo & { correction?: LiveCorrection }>;
  /** Set when an event skipped ahead; cleared once the missing events arrive or a snapshot does. */
  gap: { expected: number; got: number } | null;
  /** Who controls the live trace now (null: nobody; the next control action takes it). */
  controller: Controller | null;
  /** The latest request for control by someone else, for the controller to answer. */
  controlRequest: UserBrief | null;
}

export type TraceAction =
  | { type: "reset"; traceId: number }
  | { type: "message"; traceId: number; msg: ServerMsg }
  | { type: "me"; me: UserBrief };

export function initialState(traceId: number | null = null): TraceState {
  return {
    traceId,
    seq: -1,
    trace: null,
    partial: "",
    answer: "",
    watchers: [],
    role: null,
    me: null,
    branchInfo: {},
    gap: null,
    controller: null,
    controlRequest: null,
  };
}

/** The seq to resume from after a reconnect, or null when only a snapshot can help. */
export function resumeSeq(state: TraceState): number | null {
  return state.trace && state.seq >= 0 ? state.seq : null;
}

const FINAL = new Set(["stopped", "finished", "failed"]);

export function traceReducer(state: TraceState, action: TraceAction): TraceState {
  switch (action.type) {
    case "reset":
      // Switching to another trace (e.g. a branch): nothing of the old one may leak into it.
      return action.traceId === state.traceId ? state : initialState(action.traceId);
    case "me":
      return { ...state, me: action.me };
    case "message":
      // A message from a socket of a trace we have left is ignored.
      if (action.traceId !== state.traceId) return state;
      return applyMessage(state, action.msg);
  }
}

function applyMessage(state: TraceState, msg: ServerMsg): TraceState {
  switch (msg.type) {
    case "snapshot":
      return {
        ...state,
        seq: msg.seq,
        trace: msg.trace,
        partial: msg.partial ?? "",
        answer: msg.answer ?? msg.trace.final_answer ?? "",
        watchers: msg.watchers ?? [],
        role: msg.role ?? null,
        me: msg.me ?? state.me,
        gap: null,
        controller: msg.controller ?? null,
      };
    case "presence":
      return { ...state, watchers: msg.watchers ?? [] };
    case "ack":
    case "error":
      return state; // handled by the connection (request promises), not part of the trace state
    default:
      return applySeq(state, msg);
  }
}

function applySeq(state: TraceState, msg: SeqMsg): TraceState {
  if (typeof msg.seq !== "number" || !state.trace) return state; // no base to apply onto yet
  if (msg.seq <= state.seq) return state; // duplicate or older
  if (msg.seq > state.seq + 1) {
    // Keep the first gap we saw; later events beyond it are dropped too until we resume.
    return state.gap ? state : { ...state, gap: { expected: state.seq + 1, got: msg.seq } };
  }
  const next = applyEvent({ ...state, seq: msg.seq, gap: null }, state.trace, msg);
  return next;
}

function applyEvent(state: TraceState, trace: LiveTrace, msg: SeqMsg): TraceState {
  switch (msg.type) {
    case "trace.token":
      // Prefer the server's segmenter output (it knows where steps split); else accumulate.
      return {
        ...state,
        partial: typeof msg.partial === "string" ? msg.partial : msg.phase === "answer" ? state.partial : state.partial + msg.text,
        answer: typeof msg.answer === "string" ? msg.answer : msg.phase === "answer" ? state.answer + msg.text : state.answer,
      };
    case "trace.step": {
      const steps = upsertStep(trace.steps, msg.step);
      return {
        ...state,
        trace: { ...trace, steps, step_count: steps.length },
        partial: partialAfterStep(state.partial, msg.step.text),
      };
    }
    case "trace.status": {
      const t: LiveTrace = {
        ...trace,
        status: msg.status,
        finish_reason: msg.finish_reason ?? trace.finish_reason,
        final_answer: msg.final_answer !== undefined ? msg.final_answer : trace.final_answer,
        version: msg.version ?? trace.version,
        error: msg.error ?? trace.error,
        mode: msg.mode ?? trace.mode,
        pause_reason: msg.pause_reason ?? trace.pause_reason,
      };
      return {
        ...state,
        trace: t,
        // A stop drops the unfinished step; a finished trace has none.
        partial: FINAL.has(msg.status) ? "" : state.partial,
        answer: msg.final_answer != null ? msg.final_answer : state.answer,
      };
    }
    case "trace.score": {
      const key = (s: { step_index: number; scorer: string }) => `${s.step_index}/${s.scorer}`;
      const fresh = new Set(msg.scores.map(key));
      const scores = [...(trace.scores ?? []).filter((s) => !fresh.has(key(s))), ...msg.scores];
      return { ...state, trace: { ...trace, scores } };
    }
    case "trace.alternatives": {
      const sets = trace.alternatives ?? [];
      const alternatives = sets.some((a) => a.id === msg.set.id)
        ? sets.map((a) => (a.id === msg.set.id ? msg.set : a))
        : [...sets, msg.set];
      return { ...state, trace: { ...trace, alternatives } };
    }
    case "label.updated": {
      const steps = trace.steps.map((s) =>
        s.index === msg.step_index ? { ...s, labels: upsertBy(s.labels, msg.label, sameAnnotator) } : s,
      );
      return { ...state, trace: { ...trace, steps } };
    }
    case "review.updated":
      return { ...state, trace: { ...trace, reviews: upsertBy(trace.reviews, msg.review, sameAnnotator) } };
    case "label.removed": {
      const steps = trace.steps.map((s) =>
        s.index === msg.step_index ? { ...s, labels: s.labels.filter((l) => l.annotator?.id !== msg.annotator.id) } : s,
      );
      return { ...state, trace: { ...trace, steps } };
    }
    case "review.removed":
      return { ...state, trace: { ...trace, reviews: trace.reviews.filter((r) => r.annotator?.id !== msg.annotator.id) } };
    case "adjudication.updated":
      return { ...state, trace: { ...trace, adjudication: msg.adjudication } };
    case "trace.claimed": {
      const same = state.controller?.user.id === msg.controller.id;
      return {
        ...state,
        controller: { user: msg.controller, expires_at: msg.expires_at },
        controlRequest: same ? state.controlRequest : null,
      };
    }
    case "trace.released":
      return { ...state, controller: null, controlRequest: null };
    case "control.requested":
      return { ...state, controlRequest: msg.by };
    case "branch.created": {
      const branches = trace.branches.includes(msg.branch.id) ? trace.branches : [...trace.branches, msg.branch.id];
      return {
        ...state,
        trace: { ...trace, branches, version: msg.version ?? trace.version },
        branchInfo: { ...state.branchInfo, [msg.branch.id]: { ...msg.branch, correction: msg.correction } },
      };
    }
  }
  return state;
}

function upsertStep(steps: LiveStep[], step: LiveStep): LiveStep[] {
  const i = steps.findIndex((s) => s.index === step.index);
  const withLabels = { ...step, labels: step.labels ?? [] };
  if (i >= 0) {
    const copy = steps.slice();
    copy[i] = withLabels;
    return copy;
  }
  return [...steps, withLabels].sort((a, b) => a.index - b.index);
}

function sameAnnotator(a: LiveLabel | LiveReview, b: LiveLabel | LiveReview): boolean {
  return a.id === b.id || (a.annotator?.id != null && a.annotator.id === b.annotator?.id);
}

function upsertBy<T>(list: T[], item: T, same: (a: T, b: T) => boolean): T[] {
  const i = list.findIndex((x) => same(x, item));
  if (i < 0) return [...list, item];
  const copy = list.slice();
  copy[i] = item;
  return copy;
}

/**
 * Token batches can run past the end of a step before `trace.step` for it arrives, so the partial
 * may already hold the start of the next step: keep what follows the closed step's text.
 */
export function partialAfterStep(partial: string, stepText: string): string {
  const text = stepText.trim();
  if (!text) return partial;
  const at = partial.indexOf(text);
  if (at < 0) return "";
  return partial.slice(at + text.length).replace(/^\s+/, "");
}

/** Text of the partial step for display: the think tags are protocol, not content. */
export function displayPartial(partial: string): string {
  return partial.replace(/<\/?think>/g, "").replace(/^\s+/, "");
}

/** The current user's label of a step, if known. */
export function myLabel(step: LiveStep, me: UserBrief | null): LiveLabel | undefined {
  if (!me) return undefined;
  return step.labels.find((l) => l.annotator?.id === me.id);
}

export function canAct(role: RoleEnum | null): boolean {
  return role === "supervisor" || role === "reviewer" || role === "owner";
}

/** The controller unless their claim has lapsed by `now` (ms since the epoch). */
export function activeController(state: TraceState, now: number): Controller | null {
  const c = state.controller;
  if (!c) return null;
  const until = Date.parse(c.expires_at);
  return Number.isNaN(until) || until > now ? c : null;
}
