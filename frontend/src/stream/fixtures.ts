// Test data builders shared by the unit tests.
import type { LiveStep, LiveTrace, ServerMsg, SnapshotMsg } from "./protocol";

export function step(index: number, text: string, extra: Partial<LiveStep> = {}): LiveStep {
  return { id: 100 + index, index, text, origin: "model", labels: [], guide: null, ...extra };
}

export function trace(id: number, extra: Partial<LiveTrace> = {}): LiveTrace {
  return {
    id,
    prompt: 7,
    model_version: 1,
    parent: null,
    branch_step_index: null,
    sampling_params: {},
    seed: 1,
    status: "running",
    finish_reason: "",
    final_answer: null,
    error: "",
    mode: "live",
    pace_tps: null,
    pause_reason: "",
    guide: null,
    scores: [],
    prompt_tokens: 10,
    completion_tokens: 0,
    version: 1,
    review_count: 0,
    verdict: "",
    disputed: false,
    adjudication: null,
    created_at: "2025-01-01T00:00:00Z",
    updated_at: "2025-01-01T00:00:00Z",
    steps: [],
    reviews: [],
    branches: [],
    ...extra,
  };
}

export function snapshot(traceId: number, seq: number, extra: Partial<SnapshotMsg> = {}): SnapshotMsg {
  return {
    type: "snapshot",
    seq,
    trace: trace(traceId),
    partial: "",
    answer: "",
    watchers: [{ id: 1, username: "ann" }],
    role: "supervisor",
    ...extra,
  };
}

export const tok = (seq: number, text: string, phase: "think" | "answer" = "think"): ServerMsg => ({
  type: "trace.token",
  seq,
  text,
  phase,
});
export const stepEv = (seq: number, s: LiveStep): ServerMsg => ({ type: "trace.step", seq, step: s });

// A stand-in for the browser WebSocket: records URLs and sent frames, lets the test push frames.
export class FakeSocket {
  static all: FakeSocket[] = [];
  url: string;
  readyState = 0;
  sent: Array<Record<string, unknown>> = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  constructor(url: string) {
    this.url = url;
    FakeSocket.all.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  push(msg: object) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}
