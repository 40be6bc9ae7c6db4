// React bindings of the live connections: one connection per trace / run, opened while the
// component is mounted, read through useSyncExternalStore (no copy of its state in React state).
import { useEffect, useEffectEvent, useState, useSyncExternalStore } from "react";
import { TraceConnection } from "./connection";
import { ProjectConnection } from "./project";
import type { ProjectEvent } from "./protocol";
import { RunConnection } from "./runs";

interface Live<V> {
  subscribe: (fn: () => void) => () => void;
  getSnapshot: () => V;
  connect(): void;
  close(): void;
}

function useLive<C extends Live<V>, V>(id: number, idOf: (c: C) => number, create: (id: number) => C): C {
  const [conn, setConn] = useState(() => create(id));
  // Another trace / run: a new connection, made while rendering (its constructor opens nothing).
  if (idOf(conn) !== id) setConn(create(id));
  useEffect(() => {
    conn.connect();
    return () => conn.close();
  }, [conn]);
  return conn;
}

const newTrace = (id: number) => new TraceConnection(id);
const traceIdOf = (c: TraceConnection) => c.traceId;

/** The live trace: its state, the socket's status and last error, and the connection to act on. */
export function useTraceConnection(traceId: number) {
  const conn = useLive(traceId, traceIdOf, newTrace);
  const view = useSyncExternalStore(conn.subscribe, conn.getSnapshot);
  return { conn, ...view };
}

const newRun = (id: number) => new RunConnection(id);
const runIdOf = (c: RunConnection) => c.runId;

/** The live training run: the run, its metric series and log, and the socket's status. */
export function useRunConnection(runId: number) {
  const conn = useLive(runId, runIdOf, newRun);
  const view = useSyncExternalStore(conn.subscribe, conn.getSnapshot);
  return { conn, ...view };
}

/** Calls `onEvent` for every event of the project socket while the component is mounted. */
export function useProjectEvents(projectId: number, onEvent: (e: ProjectEvent) => void): void {
  const handle = useEffectEvent(onEvent);
  useEffect(() => {
    const conn = new ProjectConnection(projectId);
    const off = conn.on((e) => handle(e));
    conn.connect();
    return () => {
      off();
      conn.close();
    };
  }, [projectId]);
}
