// One live connection to /ws/traces/<id>/ on a LiveSocket: owns the reducer state (so gap
// detection can act synchronously), resumes with ?last_seq after every reconnect, and turns client
// actions into promises settled by the matching ack / error.

import type { UserBrief } from "../lib/api";
import type { AckMsg, ErrorMsg, ServerMsg } from "./protocol";
import { initialState, resumeSeq, traceReducer, type TraceState } from "./reducer";
import { LiveSocket, type ConnStatus, type SocketFactory } from "./socket";

export type { ConnStatus } from "./socket";

export class ActionError extends Error {
  code: string;
  constructor(code: string, detail: string) {
    super(detail);
    this.code = code;
  }
}

interface Pending {
  resolve: (ack: AckMsg) => void;
  reject: (e: ActionError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export interface TraceView {
  state: TraceState;
  status: ConnStatus;
  lastError: ErrorMsg | null;
}

export function traceSocketPath(traceId: number, lastSeq: number | null): string {
  return `/ws/traces/${traceId}/` + (lastSeq === null ? "" : `?last_seq=${lastSeq}`);
}

const ACTION_TIMEOUT_MS = 15_000;

export class TraceConnection {
  readonly traceId: number;
  state: TraceState;
  status: ConnStatus = "connecting";
  lastError: ErrorMsg | null = null;
  private readonly socket: LiveSocket;
  private listeners = new Set<() => void>();
  private pending = new Map<string, Pending>();
  private nextId = 1;
  private view: TraceView;

  constructor(traceId: number, makeSocket?: SocketFactory) {
    this.traceId = traceId;
    this.state = initialState(traceId);
    this.view = { state: this.state, status: this.status, lastError: this.lastError };
    this.socket = new LiveSocket({
      path: () => traceSocketPath(this.traceId, resumeSeq(this.state)),
      onMessage: (msg) => this.receive(msg as ServerMsg),
      onStatus: (status) => this.statusChanged(status),
      onLost: () => this.failPending("disconnected", "The connection closed before the server answered."),
      makeSocket,
    });
  }

  // For useSyncExternalStore: a stable subscribe and a snapshot that changes only on emit.
  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): TraceView => this.view;

  private emit(): void {
    this.view = { state: this.state, status: this.status, lastError: this.lastError };
    for (const fn of this.listeners) fn();
  }

  connect(): void {
    this.socket.connect();
  }

  private statusChanged(status: ConnStatus): void {
    this.status = status;
    if (status === "denied") {
      const code = this.socket.deniedCode ?? 4404;
      this.lastError = {
        type: "error",
        code: code === 4401 ? "unauthenticated" : "not_found",
        detail: code === 4401 ? "Please log in." : "This trace does not exist or you are not a member.",
      };
    }
    this.emit();
  }

  /** Applies one server message; exposed for tests. */
  receive(msg: ServerMsg): void {
    if (msg.type === "ack" || msg.type === "error") {
      this.settle(msg);
      if (msg.type === "error") this.lastError = msg;
      if (msg.type === "ack") this.learnMe(msg);
      this.emit();
      return;
    }
    const before = this.state;
    this.state = traceReducer(this.state, { type: "message", traceId: this.traceId, msg });
    if (this.state !== before) this.emit();
    // A skipped seq: reconnect at once with ?last_seq to fetch exactly what was missed.
    if (this.state.gap && !before.gap) this.socket.resync();
  }

  private learnMe(ack: AckMsg): void {
    const me: UserBrief | undefined = ack.label?.annotator ?? ack.review?.annotator;
    if (me && !this.state.me) this.state = traceReducer(this.state, { type: "me", me });
  }

  send(action: string, fields: Record<string, unknown> = {}): Promise<AckMsg> {
    const request_id = `r${this.nextId++}`;
    return new Promise<AckMsg>((resolve, reject) => {
      if (!this.socket.isOpen) {
        reject(new ActionError("disconnected", "Not connected; reconnecting…"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(request_id);
        reject(new ActionError("timeout", "The server did not answer in time."));
      }, ACTION_TIMEOUT_MS);
      this.pending.set(request_id, { resolve, reject, timer });
      this.socket.send({ action, request_id, ...fields });
    });
  }

  private settle(msg: AckMsg | ErrorMsg): void {
    if (msg.request_id === undefined || msg.request_id === null) return;
    const p = this.pending.get(String(msg.request_id));
    if (!p) return;
    this.pending.delete(String(msg.request_id));
    clearTimeout(p.timer);
    if (msg.type === "ack") p.resolve(msg);
    else p.reject(new ActionError(msg.code, msg.detail));
  }

  private failPending(code: string, detail: string): void {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ActionError(code, detail));
    }
    this.pending.clear();
  }

  clearError(): void {
    this.lastError = null;
    this.emit();
  }

  close(): void {
    this.failPending("closed", "Connection closed.");
    this.socket.close();
    this.status = "closed";
  }
}
