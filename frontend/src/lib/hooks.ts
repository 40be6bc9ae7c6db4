import { useCallback, useEffect, useLayoutEffect, useRef, useState, type RefObject } from "react";
import { ApiError } from "./api";

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  reload: () => void;
}

interface Result<T> {
  /** Which load (deps and reload count) this result answers. */
  key: string;
  data: T | null;
  error: ApiError | null;
}

/**
 * Loads with `fn` whenever `deps` (plain values: ids, filters) change, and on `reload()`. The last
 * data stays on screen while the next load runs; an earlier load answering late is discarded.
 */
export function useLoad<T>(fn: () => Promise<T>, deps: ReadonlyArray<string | number | boolean | null | undefined>): Loaded<T> {
  const [tick, setTick] = useState(0);
  const [result, setResult] = useState<Result<T>>({ key: "", data: null, error: null });
  const latestFn = useLatest(fn);
  const key = JSON.stringify([...deps, tick]);
  useEffect(() => {
    let current = true;
    latestFn.current().then(
      (data) => current && setResult({ key, data, error: null }),
      (e: unknown) =>
        current &&
        setResult((r) => ({ key, data: r.data, error: e instanceof ApiError ? e : new ApiError(0, "client", String(e), null) })),
    );
    return () => {
      current = false;
    };
  }, [key, latestFn]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data: result.data, error: result.error, loading: result.key !== key, reload };
}

/**
 * A ref that holds the latest `value` once each render is committed: stable callbacks (handed to
 * memoised rows, or to a listener subscribed once) read it instead of closing over old values.
 */
export function useLatest<T>(value: T): RefObject<T> {
  const ref = useRef(value);
  useLayoutEffect(() => {
    ref.current = value;
  });
  return ref;
}

/** The time (ms since the epoch), updated every `everyMs`: for showing what lapses (a claim). */
export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}
