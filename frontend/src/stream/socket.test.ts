import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeSocket } from "./fixtures";
import { backoffDelay, LiveSocket, type ConnStatus } from "./socket";

function make(path = "/ws/runs/3/") {
  const seen: { messages: unknown[]; statuses: ConnStatus[]; opens: boolean[]; lost: number } = {
    messages: [],
    statuses: [],
    opens: [],
    lost: 0,
  };
  const socket = new LiveSocket({
    path: () => path,
    onMessage: (m) => seen.messages.push(m),
    onStatus: (s) => seen.statuses.push(s),
    onOpen: (again) => seen.opens.push(again),
    onLost: () => seen.lost++,
    makeSocket: (u) => new FakeSocket(u) as unknown as WebSocket,
  });
  return { socket, seen };
}

const last = () => FakeSocket.all[FakeSocket.all.length - 1];

describe("LiveSocket", () => {
  beforeEach(() => {
    FakeSocket.all = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  it("backs off exponentially with jitter, up to 10 s", () => {
    for (const [attempt, base] of [[0, 500], [1, 1000], [3, 4000], [5, 10_000], [12, 10_000]]) {
      for (let i = 0; i < 20; i++) {
        const d = backoffDelay(attempt);
        expect(d).toBeGreaterThanOrEqual(base / 2);
        expect(d).toBeLessThanOrEqual(base);
      }
    }
  });

  it("reconnects after a drop, waiting longer each time, and starts over once a socket opens", () => {
    const { socket, seen } = make();
    socket.connect();
    expect(last().url).toMatch(/^ws:\/\/[^/]+\/ws\/runs\/3\/$/);
    last().open();
    last().drop();
    expect(seen.statuses).toEqual(["open", "reconnecting"]);
    // First retry: within 0.5 s; nothing before 0.25 s.
    vi.advanceTimersByTime(249);
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(251);
    expect(FakeSocket.all).toHaveLength(2);
    // It fails again: the second wait is 0.5–1 s.
    last().drop();
    vi.advanceTimersByTime(499);
    expect(FakeSocket.all).toHaveLength(2);
    vi.advanceTimersByTime(501);
    expect(FakeSocket.all).toHaveLength(3);
    last().open();
    expect(seen.opens).toEqual([false, true]); // the owner learns it is a reconnect
    // Open again: the next drop is retried quickly again.
    last().drop();
    vi.advanceTimersByTime(500);
    expect(FakeSocket.all).toHaveLength(4);
    expect(seen.lost).toBe(3);
    socket.close();
  });

  it("asks for the path before every attempt", () => {
    let n = 0;
    const socket = new LiveSocket({
      path: () => `/ws/traces/1/?last_seq=${n++}`,
      onMessage: () => {},
      onStatus: () => {},
      makeSocket: (u) => new FakeSocket(u) as unknown as WebSocket,
    });
    socket.connect();
    last().open();
    last().drop();
    vi.advanceTimersByTime(10_000);
    expect(FakeSocket.all.map((s) => s.url.split("?")[1])).toEqual(["last_seq=0", "last_seq=1"]);
    socket.close();
  });

  it.each([4401, 4403, 4404])("gives up on a handshake refused with %i", (code) => {
    const { socket, seen } = make();
    socket.connect();
    last().drop(code);
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(socket.status).toBe("denied");
    expect(socket.deniedCode).toBe(code);
    expect(seen.statuses).toEqual(["denied"]);
  });

  it("passes JSON frames on, drops others, and ignores a socket it has replaced", () => {
    const { socket, seen } = make();
    socket.connect();
    const first = last();
    first.open();
    first.push({ type: "a" });
    first.onmessage?.({ data: "not json" });
    socket.resync();
    expect(FakeSocket.all).toHaveLength(2);
    expect(first.readyState).toBe(3); // closed by us
    first.push({ type: "stale" });
    first.drop(); // its late close event does not schedule another socket
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(2);
    last().open();
    last().push({ type: "b" });
    expect(seen.messages).toEqual([{ type: "a" }, { type: "b" }]);
    socket.close();
  });

  it("sends only while open", () => {
    const { socket } = make();
    socket.connect();
    expect(socket.send({ action: "stop" })).toBe(false);
    last().open();
    expect(socket.send({ action: "stop" })).toBe(true);
    expect(last().sent).toEqual([{ action: "stop" }]);
  });

  it("close stops a pending retry for good; connect opens it again", () => {
    const { socket } = make();
    socket.connect();
    last().open();
    last().drop();
    socket.close();
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(socket.status).toBe("closed");
    socket.connect(); // React's development double effect: close, then connect again
    expect(FakeSocket.all).toHaveLength(2);
    last().open();
    expect(socket.status).toBe("open");
    socket.close();
  });
});
