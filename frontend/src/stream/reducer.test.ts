import { describe, expect, it } from "vitest";
import type { ServerMsg } from "./protocol";
import { snapshot, step, stepEv, tok, trace } from "./fixtures";
import { initialState, partialAfterStep, resumeSeq, traceReducer, type TraceState } from "./reducer";

function feed(state: TraceState, ...msgs: ServerMsg[]): TraceState {
  return msgs.reduce((s, msg) => traceReducer(s, { type: "message", traceId: s.traceId!, msg }), state);
}

describe("trace stream reducer", () => {
  it("applies a snapshot then events in seq order", () => {
    let s = feed(initialState(5), snapshot(5, 10, { trace: trace(5, { steps: [step(0, "First.")] }), partial: "Sec" }));
    expect(s.seq).toBe(10);
    expect(s.partial).toBe("Sec");
    s = feed(s, tok(11, "ond step."), tok(12, "\nThi"));
    expect(s.partial).toBe("Second step.\nThi");
    s = feed(s, stepEv(13, step(1, "Second step.")));
    expect(s.trace!.steps.map((x) => x.text)).toEqual(["First.", "Second step."]);
    // The start of the next step that arrived before the step closed stays in the partial.
    expect(s.partial).toBe("Thi");
    expect(s.seq).toBe(13);
  });

  it("ignores duplicate and older events", () => {
    let s = feed(initialState(5), snapshot(5, 3), tok(4, "a"), tok(5, "b"));
    const before = s;
    s = feed(s, tok(5, "b"), tok(4, "a"), tok(2, "zzz"));
    expect(s).toBe(before);
    expect(s.partial).toBe("ab");
    expect(s.seq).toBe(5);
  });

  it("detects a gap, drops events past it, and resumes when the missing ones arrive", () => {
    let s = feed(initialState(5), snapshot(5, 3), tok(4, "a"));
    s = feed(s, tok(6, "c"), tok(7, "d"));
    expect(s.gap).toEqual({ expected: 5, got: 6 });
    expect(s.partial).toBe("a");
    expect(s.seq).toBe(4);
    // Reconnecting with ?last_seq=4 replays 5, 6, 7 in order.
    expect(resumeSeq(s)).toBe(4);
    s = feed(s, tok(5, "b"), tok(6, "c"), tok(7, "d"));
    expect(s.gap).toBeNull();
    expect(s.partial).toBe("abcd");
    expect(s.seq).toBe(7);
  });

  it("has nothing to resume from before the first snapshot, and ignores events without one", () => {
    const s0 = initialState(5);
    expect(resumeSeq(s0)).toBeNull();
    expect(feed(s0, tok(1, "x"))).toBe(s0);
  });

  it("lets a snapshot replace the whole state, even with a lower seq", () => {
    let s = feed(initialState(5), snapshot(5, 20), tok(21, "old partial"));
    s = feed(s, tok(30, "gap"));
    expect(s.gap).not.toBeNull();
    s = feed(
      s,
      snapshot(5, 8, {
        trace: trace(5, { steps: [step(0, "A"), step(1, "B")], status: "stopped", version: 3 }),
        partial: "",
        watchers: [{ id: 2, username: "bob" }],
      }),
    );
    expect(s.seq).toBe(8);
    expect(s.gap).toBeNull();
    expect(s.partial).toBe("");
    expect(s.trace!.steps).toHaveLength(2);
    expect(s.trace!.version).toBe(3);
    expect(s.watchers.map((w) => w.username)).toEqual(["bob"]);
    expect(feed(s, tok(9, "x")).seq).toBe(9);
  });

  it("switching to a branch drops the old trace's state and ignores its late events", () => {
    let s = feed(initialState(5), snapshot(5, 50, { trace: trace(5, { steps: [step(0, "orig")] }) }));
    s = traceReducer(s, { type: "reset", traceId: 9 });
    expect(s.trace).toBeNull();
    expect(s.seq).toBe(-1);
    // A late event from trace 5's socket must not touch trace 9.
    const after = traceReducer(s, { type: "message", traceId: 5, msg: tok(51, "late") });
    expect(after).toBe(s);
    // The branch's own sequence starts lower than the original's and still applies.
    s = feed(s, snapshot(9, 2, { trace: trace(9, { parent: 5, branch_step_index: 0, steps: [step(0, "fixed", { origin: "human" })] }) }));
    s = feed(s, tok(3, "next"));
    expect(s.traceId).toBe(9);
    expect(s.trace!.steps[0].text).toBe("fixed");
    expect(s.partial).toBe("next");
  });

  it("keeps presence out of the sequence", () => {
    let s = feed(initialState(5), snapshot(5, 3));
    s = feed(s, { type: "presence", watchers: [{ id: 1, username: "ann" }, { id: 2, username: "bob" }] });
    expect(s.watchers).toHaveLength(2);
    expect(s.seq).toBe(3);
  });

  it("applies status, labels, reviews and branches", () => {
    let s = feed(initialState(5), snapshot(5, 0, { trace: trace(5, { steps: [step(0, "A")] }), partial: "unfinished" }));
    const ann = { id: 1, username: "ann" };
    s = feed(
      s,
      { type: "label.updated", seq: 1, step_index: 0, label: { id: 1, annotator: ann, rating: 1, safety_tags: [], note: "" } },
      { type: "label.updated", seq: 2, step_index: 0, label: { id: 1, annotator: ann, rating: -1, safety_tags: ["privacy"], note: "" } },
      { type: "trace.status", seq: 3, status: "stopped", finish_reason: "stopped", version: 2 },
      {
        type: "review.updated",
        seq: 4,
        review: { id: 3, annotator: ann, verdict: "reject", safety_label: "unsafe", value_label: "", knowledge_label: "", note: "" },
      },
      {
        type: "branch.created",
        seq: 5,
        branch: { id: 9, branch_step_index: 0, status: "queued" },
        correction: { id: 4, step_index: 0, old_text: "A", new_text: "A'", author: ann },
        version: 3,
      },
    );
    expect(s.trace!.steps[0].labels).toEqual([{ id: 1, annotator: ann, rating: -1, safety_tags: ["privacy"], note: "" }]);
    expect(s.trace!.status).toBe("stopped");
    expect(s.partial).toBe(""); // a stop drops the unfinished step
    expect(s.trace!.reviews[0].verdict).toBe("reject");
    expect(s.trace!.branches).toEqual([9]);
    expect(s.trace!.version).toBe(3);
    expect(s.branchInfo[9].correction?.new_text).toBe("A'");
  });

  it("streams the answer separately and takes the final answer on finish", () => {
    let s = feed(initialState(5), snapshot(5, 0));
    s = feed(s, tok(1, "The answer", "answer"), tok(2, " is 4", "answer"));
    expect(s.answer).toBe("The answer is 4");
    s = feed(s, { type: "trace.status", seq: 3, status: "finished", final_answer: "The answer is 4." });
    expect(s.answer).toBe("The answer is 4.");
    expect(s.trace!.final_answer).toBe("The answer is 4.");
  });
});

describe("server-provided partial", () => {
  it("uses the partial and answer carried by token events when present", () => {
    let s = feed(initialState(5), snapshot(5, 0));
    s = feed(s, { type: "trace.token", seq: 1, text: "2. Then", phase: "think", partial: "Then", answer: "" });
    expect(s.partial).toBe("Then");
    s = feed(s, { type: "trace.token", seq: 2, text: "</think>\n7", phase: "answer", partial: "", answer: "7" });
    expect(s.partial).toBe("");
    expect(s.answer).toBe("7");
  });
});

describe("partialAfterStep", () => {
  it("keeps text after the closed step and clears unknown partials", () => {
    expect(partialAfterStep("<think>\n1. Add 2.\n2. Mul", "1. Add 2.")).toBe("2. Mul");
    expect(partialAfterStep("something else", "1. Add 2.")).toBe("");
  });
});

describe("trace stream reducer: claims and removals", () => {
  const ann = { id: 1, username: "ann" };
  const bob = { id: 2, username: "bob" };
  it("tracks who controls the trace and who asks for it", () => {
    let s = feed(initialState(5), snapshot(5, 1, { controller: null }));
    s = feed(s, { type: "trace.claimed", seq: 2, controller: ann, expires_at: "2099-01-01T00:00:00Z", idle_s: 120 });
    expect(s.controller?.user).toEqual(ann);
    s = feed(s, { type: "control.requested", seq: 3, by: bob, controller: ann });
    expect(s.controlRequest).toEqual(bob);
    s = feed(s, { type: "trace.released", seq: 4, by: ann });
    expect([s.controller, s.controlRequest]).toEqual([null, null]);
  });

  it("a lapsed claim is nobody's", async () => {
    const { activeController } = await import("./reducer");
    const s = feed(initialState(5), snapshot(5, 1, { controller: { user: ann, expires_at: "2020-01-01T00:00:00Z" } }));
    expect(s.controller).not.toBeNull();
    expect(activeController(s, Date.parse("2021-01-01T00:00:00Z"))).toBeNull();
    expect(activeController(s, Date.parse("2019-01-01T00:00:00Z"))?.user).toEqual(ann);
  });

  it("removes a label and a review", () => {
    const labelled = step(0, "a", { labels: [{ id: 9, annotator: ann, rating: 1, safety_tags: [], note: "" }] });
    let s = feed(initialState(5), snapshot(5, 1, { trace: trace(5, { steps: [labelled], reviews: [
      { id: 3, annotator: ann, verdict: "accept", safety_label: "", value_label: "", knowledge_label: "", note: "" }] }) }));
    s = feed(s, { type: "label.removed", seq: 2, step_index: 0, annotator: ann }, { type: "review.removed", seq: 3, annotator: ann });
    expect(s.trace!.steps[0].labels).toEqual([]);
    expect(s.trace!.reviews).toEqual([]);
  });
});
