// The live view of one training run, /ws/runs/<id>/ (annotator/run_consumer.py), on a LiveSocket.
// Run events carry no seq: instead every connect, the first and each reconnect, starts with a
// snapshot of the run and all its metric points, so a reconnect loses nothing. A metric point
// may arrive twice (in the snapshot and live); points are keyed by (name, step), so it counts once.
import type { TrainingRun } from "../lib/api";
import type { RunServerMsg } from "./protocol";
import { LiveSocket, type ConnStatus, type SocketFactory } from "./socket";

/** Metric name → (step → value). */
export type SeriesMap = Record<string, Map<number, number>>;

export interface RunState {
  run: TrainingRun | null;
  series: SeriesMap;
  log: string[];
}

export interface RunView {
  state: RunState;
  status: ConnStatus;
}

const LOG_LINES = 500;

export const ACTIVE_RUN = new Set(["queued", "running", "cancelling"]);

export function initialRunState(): RunState {
  return { run: null, series: {}, log: [] };
}

function withPoints(series: SeriesMap, points: Iterable<{ name: string; step: number; value: number }>): SeriesMap {
  const next: SeriesMap = { ...series };
  const copied = new Set<string>();
  for (const p of points) {
    if (!copied.has(p.name)) {
      next[p.name] = new Map(next[p.name] ?? []);
      copied.add(p.name);
    }
    next[p.name].set(p.step, p.value);
  }
  return next;
}

export function runReducer(state: RunState, msg: RunServerMsg): RunState {
  switch (msg.type) {
    case "snapshot":
      // The whole run as stored: it replaces what this view had (and fills a reconnect's gap).
      return {
        run: msg.run,
        series: withPoints({}, msg.metrics),
        log: msg.run.log ? msg.run.log.replace(/\n$/, "").split("\n").slice(-LOG_LINES) : [],
      };
    case "run.progress":
      if (!state.run) return state;
      return {
        ...state,
        run: {
          ...state.run,
          progress: Number(msg.progress ?? state.run.progress),
          status: msg.status ?? state.run.status,
          error: msg.error ?? state.run.error,
        },
      };
    case "run.metrics": {
      const step = Number(msg.step);
      const points = Object.entries(msg.metrics ?? {}).map(([name, v]) => ({ name, step, value: Number(v) }));
      return { ...state, series: withPoints(state.series, points) };
    }
    case "run.log":
      return { ...state, log: [...state.log.slice(-(LOG_LINES - 1)), String(msg.line ?? "")] };
    default:
      return state; // `error` (the socket is read-only) changes nothing
  }
}

export class RunConnection {
  readonly runId: number;
  state: RunState = initialRunState();
  status: ConnStatus = "connecting";
  private readonly socket: LiveSocket;
  private listeners = new Set<() => void>();
  private view: RunView;

  constructor(runId: number, makeSocket?: SocketFactory) {
    this.runId = runId;
    this.view = { state: this.state, status: this.status };
    this.socket = new LiveSocket({
      path: () => `/ws/runs/${this.runId}/`,
      onMessage: (msg) => this.receive(msg as RunServerMsg),
      onStatus: (status) => {
        this.status = status;
        this.emit();
      },
      makeSocket,
    });
  }

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): RunView => this.view;

  private emit(): void {
    this.view = { state: this.state, status: this.status };
    for (const fn of this.listeners) fn();
  }

  /** Applies one server message; exposed for tests. */
  receive(msg: RunServerMsg): void {
    const before = this.state;
    this.state = runReducer(this.state, msg);
    if (this.state !== before) this.emit();
  }

  /** A fresher copy of the run from REST (e.g. its output model once it has ended). */
  setRun(run: TrainingRun): void {
    this.state = { ...this.state, run };
    this.emit();
  }

  connect(): void {
    this.socket.connect();
  }

  close(): void {
    this.socket.close();
    this.status = "closed";
  }
}
