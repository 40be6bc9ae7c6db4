import { act, renderHook } from "@testing-library/react";
import { beforeEach, describe, expect, it } from "vitest";
import { TraceConnection } from "../stream/connection";
import { FakeSocket, snapshot, step, trace } from "../stream/fixtures";
import { useStepEdit } from "./useStepEdit";

function setup(canAct = true) {
  const conn = new TraceConnection(5, (u) => new FakeSocket(u) as unknown as WebSocket);
  conn.connect();
  const ws = FakeSocket.all[0];
  ws.open();
  ws.push(snapshot(5, 1, { trace: trace(5, { version: 4, steps: [step(0, "3 + 4 = 8")] }) }));
  const notices: string[] = [];
  const branches: number[] = [];
  const hook = renderHook(() =>
    useStepEdit({
      trace: conn.state.trace,
      canAct,
      send: (a, f) => conn.send(a, f),
      onNotice: (t) => notices.push(t),
      onBranch: (id) => branches.push(id),
    }),
  );
  return { conn, ws, notices, branches, ...hook };
}

describe("useStepEdit", () => {
  beforeEach(() => {
    FakeSocket.all = [];
  });

  it("opens on a saved step with its text, and not on a missing step or for a viewer", () => {
    const { result } = setup();
    let opened = false;
    act(() => void (opened = result.current.start(3)));
    expect([opened, result.current.editing]).toEqual([false, null]);
    act(() => void (opened = result.current.start(0)));
    expect(opened).toBe(true);
    expect(result.current.editing).toEqual({ index: 0, text: "3 + 4 = 8", reason: "" });
    const viewer = setup(false);
    act(() => void (opened = viewer.result.current.start(0)));
    expect([opened, viewer.result.current.editing]).toEqual([false, null]);
  });

  it("sends the edit with the version seen and opens the branch the ack names", async () => {
    const { result, ws, notices, branches } = setup();
    act(() => void result.current.start(0));
    act(() => result.current.change("3 + 4 = 7"));
    act(() => result.current.setReason("arithmetic"));
    let done: Promise<void> = Promise.resolve();
    act(() => void (done = result.current.submit()));
    expect(ws.sent.at(-1)).toMatchObject({ action: "edit", step_index: 0, text: "3 + 4 = 7", expected_version: 4, reason: "arithmetic" });
    await act(async () => {
      ws.push({ type: "ack", action: "edit", request_id: ws.sent.at(-1)!.request_id, branch: { id: 9 } });
      await done;
    });
    expect(branches).toEqual([9]);
    expect(notices).toEqual(["Creating the branch…", ""]);
  });

  it("refuses an empty step without sending, and keeps a stale edit's text", async () => {
    const { result, ws, notices } = setup();
    act(() => void result.current.start(0));
    act(() => result.current.change("   "));
    await act(() => result.current.submit());
    expect(notices.at(-1)).toBe("The corrected step is empty.");
    expect(ws.sent).toEqual([]);

    act(() => result.current.change("changed"));
    let done: Promise<void> = Promise.resolve();
    act(() => void (done = result.current.submit()));
    await act(async () => {
      ws.push({ type: "error", code: "stale_version", detail: "stale", request_id: ws.sent.at(-1)!.request_id });
      await done;
    });
    expect(notices.at(-1)).toMatch(/changed this trace while you were editing/);
    expect(result.current.editing?.text).toBe("changed");
    act(() => result.current.cancel());
    expect(result.current.editing).toBeNull();
  });
});
