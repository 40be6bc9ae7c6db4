// One live connection to /ws/traces/<id>/: owns the reducer state (so gap detection can act
// synchronously), reconnects with exponential backoff and resumes with ?last_seq, and turns
// client actions into promises settled by the matching ack / error.

import { wsUrl } from "../lib/api";
import type { AckMsg, ErrorMsg, ServerMsg, UserBrief } from "../lib/types";
import { initialState, resumeSeq, traceReducer, type TraceState } from "./reducer";

export type ConnStatus = "connecting" | "open" | "reconnecting" | "closed" | "denied";

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

type SocketFactory = (url: string) => WebSocket;

export function traceSocketPath(traceId: number, lastSeq: number | null): string {
  return `/ws/traces/${traceId}/` + (lastSeq === null ? "" : `?last_seq=${lastSeq}`);
}

export function backoffDelay(attempt: number): number {
  const base = Math.min(10_000, 500 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

export class TraceConnection {
  readonly traceId: number;
  state: TraceState;
  status: ConnStatus = "connecting";
  lastError: ErrorMsg | null = null;
  private ws: WebSocket | null = null;
  private listeners = new Set<() => void>();
  private pending = new Map<string, Pending>();
  private nextId = 1;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  private makeSocket: SocketFactory;

  constructor(traceId: number, makeSocket: SocketFactory = (u) => new WebSocket(u)) {
    this.traceId = traceId;
    this.state = initialState(traceId);
    this.makeSocket = makeSocket;
    this.view = { state: this.state, status: this.status, lastError: this.lastError };
  }

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): { state: TraceState; status: ConnStatus; lastError: ErrorMsg | null } => this.view;
  private view: { state: TraceState; status: ConnStatus; lastError: ErrorMsg | null };

  private emit(): void {
    this.view = { state: this.state, status: this.status, lastError: this.lastError };
    for (const fn of this.listeners) fn();
  }

  connect(): void {
    if (this.disposed) return;
    const url = wsUrl(traceSocketPath(this.traceId, resumeSeq(this.state)));
    const ws = this.makeSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.status = "open";
      this.emit();
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      let msg: ServerMsg;
      try {
        msg = JSON.parse(String(ev.data)) as ServerMsg;
      } catch {
        return;
      }
      this.receive(msg);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending("disconnected", "The connection closed before the server answered.");
      if (this.disposed) return;
      if (ev.code === 4401 || ev.code === 4403 || ev.code === 4404) {
        // Refused at the handshake: retrying cannot help.
        this.status = "denied";
        this.lastError = {
          type: "error",
          code: ev.code === 4401 ? "unauthenticated" : "not_found",
          detail: ev.code === 4401 ? "Please log in." : "This trace does not exist or you are not a member.",
        };
        this.emit();
        return;
      }
      this.status = "reconnecting";
      this.emit();
      this.scheduleReconnect();
    };
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
    if (this.state.gap && !before.gap) this.resync();
  }

  private learnMe(ack: AckMsg): void {
    const label = ack.label as { annotator?: UserBrief } | undefined;
    const review = ack.review as { annotator?: UserBrief } | undefined;
    const me = label?.annotator ?? review?.annotator;
    if (me && !this.state.me) this.state = traceReducer(this.state, { type: "me", me });
  }

  /** Drop the socket and reconnect at once with ?last_seq to fetch exactly what was missed. */
  resync(): void {
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.status = "reconnecting";
    this.emit();
    this.connect();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.attempt++);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  send(action: string, fields: Record<string, unknown> = {}): Promise<AckMsg> {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) {
      return Promise.reject(new ActionError("disconnected", "Not connected; reconnecting…"));
    }
    const request_id = `r${this.nextId++}`;
    return new Promise<AckMsg>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(request_id);
        reject(new ActionError("timeout", "The server did not answer in time."));
      }, 15_000);
      this.pending.set(request_id, { resolve, reject, timer });
      ws.send(JSON.stringify({ action, request_id, ...fields }));
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
    this.disposed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    this.failPending("closed", "Connection closed.");
    ws?.close();
    this.status = "closed";
  }
}
