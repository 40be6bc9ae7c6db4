import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { TrainingRun } from "../lib/api";
import { FakeSocket } from "./fixtures";
import { RunConnection } from "./runs";

function run(extra: Partial<TrainingRun> = {}): TrainingRun {
  return {
    id: 3,
    stage: "sft",
    base_model: 1,
    snapshots: [2],
    config: {},
    status: "running",
    progress: 0.1,
    worker: "w1",
    output_model: null,
    error: "",
    log: "",
    automatic: false,
    created_by: 1,
    created_at: "2025-01-01T00:00:00Z",
    started_at: "2025-01-01T00:00:01Z",
    finished_at: null,
    ...extra,
  };
}

const make = () => new RunConnection(3, (u) => new FakeSocket(u) as unknown as WebSocket);
const last = () => FakeSocket.all[FakeSocket.all.length - 1];
const points = (c: RunConnection, name: string) => [...(c.state.series[name] ?? new Map()).entries()];

describe("RunConnection", () => {
  beforeEach(() => {
    FakeSocket.all = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  it("starts from the snapshot, then applies live metrics, progress and log lines", () => {
    const c = make();
    c.connect();
    expect(last().url).toMatch(/\/ws\/runs\/3\/$/);
    last().open();
    last().push({
      type: "snapshot",
      run: run({ log: "loading model\nstep 1\n" }),
      metrics: [
        { step: 1, name: "loss", value: 2.5 },
        { step: 1, name: "grad_norm", value: 1 },
      ],
      role: "viewer",
    });
    expect(c.state.run?.status).toBe("running");
    expect(c.state.log).toEqual(["loading model", "step 1"]);
    last().push({ type: "run.metrics", step: 1, metrics: { loss: 2.5 } }); // already in the snapshot
    last().push({ type: "run.metrics", step: 2, metrics: { loss: 2.0, grad_norm: 0.5 } });
    last().push({ type: "run.progress", progress: 0.5, status: "running" });
    last().push({ type: "run.log", line: "step 2" });
    expect(points(c, "loss")).toEqual([
      [1, 2.5],
      [2, 2.0],
    ]);
    expect(points(c, "grad_norm")).toEqual([
      [1, 1],
      [2, 0.5],
    ]);
    expect(c.state.run?.progress).toBe(0.5);
    expect(c.state.log.at(-1)).toBe("step 2");
    c.close();
  });

  it("after a drop, the reconnect's snapshot fills in what was missed, each point once", () => {
    const c = make();
    c.connect();
    last().open();
    last().push({ type: "snapshot", run: run(), metrics: [{ step: 1, name: "loss", value: 3 }] });
    last().drop();
    expect(c.status).toBe("reconnecting");
    vi.advanceTimersByTime(10_000);
    expect(FakeSocket.all).toHaveLength(2);
    last().open();
    // Steps 2 and 3 were logged while the socket was down.
    last().push({
      type: "snapshot",
      run: run({ progress: 0.3 }),
      metrics: [1, 2, 3].map((step) => ({ step, name: "loss", value: 4 - step })),
    });
    last().push({ type: "run.metrics", step: 3, metrics: { loss: 1 } });
    expect(points(c, "loss")).toEqual([
      [1, 3],
      [2, 2],
      [3, 1],
    ]);
    expect(c.state.run?.progress).toBe(0.3);
    expect(c.status).toBe("open");
    c.close();
  });

  it("notifies subscribers with a new view only when something changed", () => {
    const c = make();
    const seen: unknown[] = [];
    c.subscribe(() => seen.push(c.getSnapshot()));
    c.connect();
    last().open();
    last().push({ type: "run.progress", progress: 0.5, status: "running" }); // no run yet: ignored
    last().push({ type: "error", code: "read_only", detail: "This socket only streams" });
    expect(seen).toHaveLength(1); // the status change to open
    last().push({ type: "snapshot", run: run(), metrics: [] });
    expect(seen).toHaveLength(2);
    expect(seen[0]).not.toBe(seen[1]);
    c.close();
  });

  it("stops at a refused handshake", () => {
    const c = make();
    c.connect();
    last().drop(4404);
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(c.status).toBe("denied");
  });
});
