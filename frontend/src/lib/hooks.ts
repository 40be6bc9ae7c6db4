import { useCallback, useEffect, useLayoutEffect, useRef, useState, type RefObject } from "react";
import { ApiError } from "./api";

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  reload: () => void;
  setData: (d: T) => void;
}

/** Loads with `fn` whenever `deps` change; stale answers of earlier loads are discarded. */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const gen = useRef(0);
  useEffect(() => {
    const mine = ++gen.current;
    setLoading(true);
    fn().then(
      (d) => {
        if (gen.current !== mine) return;
        setData(d);
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (gen.current !== mine) return;
        setError(e instanceof ApiError ? e : new ApiError(0, "client", String(e), null));
        setLoading(false);
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload, setData };
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
