// The one websocket the studio's live pages use (trace review and training runs): it reconnects
// with exponential backoff and jitter, asks its owner for the path before every attempt (so a
// trace resumes with ?last_seq), gives up on a refused handshake (4401/4403/4404), and ignores
// frames from a socket it has already replaced.
import { wsUrl } from "../lib/api";
import { DENIED_CODES } from "./protocol";

export type ConnStatus = "connecting" | "open" | "reconnecting" | "closed" | "denied";
export type SocketFactory = (url: string) => WebSocket;

export interface LiveSocketOptions {
  /** The path to connect to, asked before every attempt. */
  path: () => string;
  /** Each parsed JSON frame (frames that are not JSON are dropped). */
  onMessage: (msg: unknown) => void;
  /** Every change of status; on "denied", the socket's `deniedCode` says why. */
  onStatus: (status: ConnStatus) => void;
  /** The socket opened; `reconnected` when an earlier one had been open. */
  onOpen?: (reconnected: boolean) => void;
  /** The socket went away (before a reconnect is scheduled): answers still awaited never come. */
  onLost?: () => void;
  makeSocket?: SocketFactory;
}

/** Delay before reconnect attempt `attempt` (0-based): 0.5 s doubling to 10 s, jittered to 50–100 %. */
export function backoffDelay(attempt: number): number {
  const base = Math.min(10_000, 500 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

export class LiveSocket {
  status: ConnStatus = "connecting";
  /** The close code of a refused handshake, once status is "denied". */
  deniedCode: number | null = null;
  private ws: WebSocket | null = null;
  private attempt = 0;
  private everOpen = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  private readonly opts: LiveSocketOptions;
  private readonly makeSocket: SocketFactory;

  constructor(opts: LiveSocketOptions) {
    this.opts = opts;
    this.makeSocket = opts.makeSocket ?? ((u) => new WebSocket(u));
  }

  get isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /** Opens the socket; after close() it opens again (React runs effects twice in development). */
  connect(): void {
    this.disposed = false;
    this.clearRetry();
    const ws = this.makeSocket(wsUrl(this.opts.path()));
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      const reconnected = this.everOpen;
      this.everOpen = true;
      this.setStatus("open");
      this.opts.onOpen?.(reconnected);
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      let msg: unknown;
      try {
        msg = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      this.opts.onMessage(msg);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.opts.onLost?.();
      if (this.disposed) return;
      if (DENIED_CODES.has(ev.code)) {
        this.deniedCode = ev.code;
        this.setStatus("denied");
        return;
      }
      this.setStatus("reconnecting");
      const delay = backoffDelay(this.attempt++);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.connect();
      }, delay);
    };
  }

  /** Drops the socket and reconnects at once (e.g. to fetch exactly what a gap missed). */
  resync(): void {
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.opts.onLost?.();
    this.setStatus("reconnecting");
    this.connect();
  }

  /** Sends one JSON frame; false when the socket is not open (nothing is queued). */
  send(frame: object): boolean {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close(): void {
    this.disposed = true;
    this.clearRetry();
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.status = "closed";
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private setStatus(status: ConnStatus): void {
    this.status = status;
    this.opts.onStatus(status);
  }
}
