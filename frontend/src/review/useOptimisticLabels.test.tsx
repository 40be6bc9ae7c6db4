import { act, renderHook } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TraceConnection } from "../stream/connection";
import { FakeSocket, snapshot, step, trace } from "../stream/fixtures";
import type { TraceState } from "../stream/reducer";
import { useOptimisticLabels } from "./useOptimisticLabels";

const ann = { id: 1, username: "ann" };

// A real trace connection on the fake socket: the hook sends through it, and the test answers as
// the server would.
function connected() {
  const conn = new TraceConnection(5, (u) => new FakeSocket(u) as unknown as WebSocket);
  conn.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.push(
    snapshot(5, 1, {
      me: ann,
      trace: trace(5, {
        steps: [
          step(0, "a", { labels: [{ id: 9, annotator: ann, rating: -1, safety_tags: ["privacy"], note: "" }] }),
          step(1, "b"),
        ],
      }),
    }),
  );
  return { conn, ws };
}

function mount(conn: TraceConnection, opts: { canAct?: boolean; state?: TraceState } = {}) {
  const errors: unknown[] = [];
  const hook = renderHook((props: { canAct: boolean; state: TraceState }) =>
    useOptimisticLabels({ state: props.state, canAct: props.canAct, send: (a, f) => conn.send(a, f), onError: (e) => errors.push(e) }),
    { initialProps: { canAct: opts.canAct ?? true, state: opts.state ?? conn.state } },
  );
  return { ...hook, errors };
}

const flush = () => act(async () => {});

describe("useOptimisticLabels", () => {
  beforeEach(() => {
    FakeSocket.all = [];
  });
  afterEach(() => vi.useRealTimers());

  it("shows a rating at once and sends it with the step's current tags", async () => {
    const { conn, ws } = connected();
    const { result } = mount(conn);
    act(() => result.current.rate(0, 1));
    expect(result.current.pending[0]).toEqual({ rating: 1, tags: ["privacy"], note: "" });
    expect(ws.sent.at(-1)).toMatchObject({ action: "label", step_index: 0, rating: 1, safety_tags: ["privacy"], note: "" });
    await act(async () => conn.close());
  });

  it("a tag toggled right after a rating keeps that rating, before React has rendered", async () => {
    const { conn, ws } = connected();
    const { result } = mount(conn);
    const { rate, toggleTag } = result.current;
    act(() => {
      rate(1, 0);
      toggleTag(1, "bias");
    });
    expect(ws.sent.slice(-2).map((f) => [f.rating, f.safety_tags])).toEqual([
      [0, []],
      [0, ["bias"]],
    ]);
    act(() => result.current.toggleTag(1, "bias"));
    expect(result.current.pending[1]).toEqual({ rating: 0, tags: [], note: "" });
    await act(async () => conn.close());
  });

  it("the same rating again clears it, and every change reports what was there before", async () => {
    const { conn, ws } = connected();
    const befores: unknown[] = [];
    const { result } = renderHook(() =>
      useOptimisticLabels({
        state: conn.state,
        canAct: true,
        send: (a, f) => conn.send(a, f),
        onError: () => {},
        onChange: (index, before) => befores.push([index, before]),
      }),
    );
    act(() => result.current.rate(1, 1));
    act(() => result.current.rate(1, 1)); // pressed again: the label goes
    expect(ws.sent.at(-1)).toMatchObject({ action: "unlabel", step_index: 1 });
    expect(result.current.pending[1]).toBeNull();
    act(() => result.current.rate(0, -1)); // step 0 has tags: its rating is cleared, the tags stay
    expect(ws.sent.at(-1)).toMatchObject({ action: "label", step_index: 0, rating: null, safety_tags: ["privacy"] });
    act(() => result.current.setNote(0, "the sum is wrong"));
    expect(ws.sent.at(-1)).toMatchObject({ action: "label", step_index: 0, note: "the sum is wrong" });
    expect(befores).toEqual([
      [1, null],
      [1, { rating: 1, tags: [], note: "" }],
      [0, { rating: -1, tags: ["privacy"], note: "" }],
      [0, { rating: null, tags: ["privacy"], note: "" }],
    ]);
    await act(async () => conn.close());
  });

  it("a refused label goes back to what was shown before, and the error is reported", async () => {
    const { conn, ws } = connected();
    const { result, errors } = mount(conn);
    act(() => result.current.rate(0, 1));
    act(() => ws.push({ type: "error", code: "forbidden", detail: "Viewers cannot label.", request_id: ws.sent.at(-1)!.request_id as string }));
    await flush();
    expect(result.current.pending[0]).toBeUndefined();
    expect(errors).toMatchObject([{ code: "forbidden" }]);
    await act(async () => conn.close());
  });

  it("a late failure does not undo a newer label of the same step", async () => {
    const { conn, ws } = connected();
    const { result } = mount(conn);
    act(() => result.current.rate(0, 1));
    const first = ws.sent.at(-1)!.request_id as string;
    act(() => result.current.rate(0, 0));
    act(() => ws.push({ type: "error", code: "rate_limited", detail: "Slow down.", request_id: first }));
    await flush();
    expect(result.current.pending[0]).toEqual({ rating: 0, tags: ["privacy"], note: "" });
    await act(async () => conn.close());
  });

  it("a dropped socket fails what was awaiting an answer", async () => {
    const { conn, ws } = connected();
    const { result, errors } = mount(conn);
    act(() => result.current.rate(1, -1));
    act(() => ws.drop());
    await flush();
    expect(result.current.pending[1]).toBeUndefined();
    expect(errors).toMatchObject([{ code: "disconnected" }]);
    await act(async () => conn.close());
  });

  it("sends nothing for someone who may not act, and keeps its handlers stable", async () => {
    const { conn, ws } = connected();
    const { result, rerender } = mount(conn, { canAct: false });
    const { rate, toggleTag } = result.current;
    act(() => rate(0, 1));
    act(() => toggleTag(0, "bias"));
    expect(ws.sent).toEqual([]);
    expect(result.current.pending).toEqual({});
    rerender({ canAct: true, state: conn.state });
    expect(result.current.rate).toBe(rate);
    expect(result.current.toggleTag).toBe(toggleTag);
    act(() => result.current.rate(0, 1)); // the same function now acts: it reads the latest props
    expect(ws.sent).toHaveLength(1);
    await act(async () => conn.close());
  });
});
