import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ActionError, TraceConnection } from "./connection";
import { FakeSocket, snapshot, tok } from "./fixtures";


const make = (id: number) => new TraceConnection(id, (u) => new FakeSocket(u) as unknown as WebSocket);

describe("TraceConnection", () => {
  beforeEach(() => {
    FakeSocket.all = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  it("connects without last_seq first, then resumes with last_seq after a drop", () => {
    const c = make(5);
    c.connect();
    const ws = FakeSocket.all[0];
    expect(ws.url).toMatch(/\/ws\/traces\/5\/$/);
    ws.open();
    ws.push(snapshot(5, 10));
    ws.push(tok(11, "a"));
    ws.drop();
    expect(c.status).toBe("reconnecting");
    vi.advanceTimersByTime(10_000);
    expect(FakeSocket.all).toHaveLength(2);
    expect(FakeSocket.all[1].url).toMatch(/\/ws\/traces\/5\/\?last_seq=11$/);
    FakeSocket.all[1].open();
    FakeSocket.all[1].push(tok(11, "a")); // a duplicate from the server is harmless
    FakeSocket.all[1].push(tok(12, "b"));
    expect(c.state.partial).toBe("ab");
    c.close();
  });

  it("reconnects at once with last_seq when it sees a gap", () => {
    const c = make(5);
    c.connect();
    const ws = FakeSocket.all[0];
    ws.open();
    ws.push(snapshot(5, 3));
    ws.push(tok(4, "a"));
    ws.push(tok(7, "d"));
    expect(FakeSocket.all).toHaveLength(2);
    expect(FakeSocket.all[1].url).toMatch(/\?last_seq=4$/);
    // Frames still arriving on the dropped socket are ignored.
    ws.push(tok(5, "stale"));
    expect(c.state.partial).toBe("a");
    c.close();
  });

  it("does not retry a refused handshake", () => {
    const c = make(5);
    c.connect();
    FakeSocket.all[0].drop(4404);
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(c.status).toBe("denied");
  });

  it("settles actions by request_id: ack resolves, error rejects with its code", async () => {
    const c = make(5);
    c.connect();
    const ws = FakeSocket.all[0];
    ws.open();
    ws.push(snapshot(5, 1));
    const edit = c.send("edit", { step_index: 0, text: "fixed", expected_version: 1, reason: "" });
    const stop = c.send("stop");
    expect(ws.sent[0]).toMatchObject({ action: "edit", step_index: 0, text: "fixed", expected_version: 1 });
    ws.push({ type: "error", code: "stale_version", detail: "stale", request_id: ws.sent[0].request_id as string });
    ws.push({ type: "ack", action: "stop", request_id: ws.sent[1].request_id as string });
    await expect(edit).rejects.toMatchObject({ code: "stale_version" });
    await expect(stop).resolves.toMatchObject({ action: "stop" });
    await expect(make(6).send("stop")).rejects.toBeInstanceOf(ActionError);
    c.close();
  });
});
