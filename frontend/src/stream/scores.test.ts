import { describe, expect, it } from "vitest";
import { initialState, traceReducer, type TraceState } from "./reducer";
import { snapshot, step, trace } from "./fixtures";
import type { ServerMsg } from "./protocol";

function feed(state: TraceState, ...msgs: ServerMsg[]): TraceState {
  return msgs.reduce((s, msg) => traceReducer(s, { type: "message", traceId: s.traceId!, msg }), state);
}

describe("live step scores and pauses (issue 12)", () => {
  it("keeps each step's machine scores from trace.score events, replacing a scorer's earlier score", () => {
    const s = feed(
      initialState(1),
      snapshot(1, 3, { trace: trace(1, { steps: [step(0, "a")] }) }),
      { type: "trace.score", seq: 4, scores: [{ step_index: 0, scorer: "rule:demo_task", score: 1, detail: "the next right step", model_version: null }] },
      { type: "trace.score", seq: 5, scores: [{ step_index: 0, scorer: "rule:demo_task", score: 0, detail: "wrong", model_version: null }] },
    );
    expect(s.trace?.scores).toEqual([{ step_index: 0, scorer: "rule:demo_task", score: 0, detail: "wrong", model_version: null }]);
    expect(s.trace?.steps[0].labels).toEqual([]); // a score is never a label
  });

  it("takes the mode and the pause reason from trace.status", () => {
    const s = feed(initialState(1), snapshot(1, 1), {
      type: "trace.status",
      seq: 2,
      status: "stopped",
      finish_reason: "auto_pause",
      mode: "paced",
      pause_reason: "Paused: the rule checker (rule-based) scored step 3 0.00",
    });
    expect(s.trace?.status).toBe("stopped");
    expect(s.trace?.mode).toBe("paced");
    expect(s.trace?.pause_reason).toContain("scored step 3");
  });
});
