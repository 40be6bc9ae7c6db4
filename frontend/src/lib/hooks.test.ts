import { act, renderHook } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { ApiError } from "./api";
import { useLoad } from "./hooks";

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("useLoad", () => {
  it("keeps the last data while the next load runs, and drops an earlier load that answers late", async () => {
    const calls: Array<ReturnType<typeof deferred<string>>> = [];
    const { result, rerender } = renderHook(({ id }: { id: number }) =>
      useLoad(() => {
        const d = deferred<string>();
        calls.push(d);
        return d.promise;
      }, [id]),
      { initialProps: { id: 1 } },
    );
    expect(result.current.loading).toBe(true);
    await act(async () => calls[0].resolve("one"));
    expect([result.current.data, result.current.loading]).toEqual(["one", false]);

    rerender({ id: 2 });
    rerender({ id: 3 });
    expect([result.current.data, result.current.loading]).toEqual(["one", true]);
    await act(async () => calls[2].resolve("three"));
    await act(async () => calls[1].resolve("two")); // id 2 was left behind: ignored
    expect([result.current.data, result.current.loading]).toEqual(["three", false]);
  });

  it("reload() loads again with the same deps; an error keeps the data it had", async () => {
    let n = 0;
    let fail = false;
    const { result } = renderHook(() =>
      useLoad(() => (fail ? Promise.reject(new ApiError(503, "down", "Try later.", null)) : Promise.resolve(++n)), [7]),
    );
    await act(async () => {});
    expect(result.current.data).toBe(1);
    await act(async () => result.current.reload());
    expect(result.current.data).toBe(2);
    fail = true;
    await act(async () => result.current.reload());
    expect(result.current.data).toBe(2);
    expect(result.current.error).toMatchObject({ status: 503, message: "Try later." });
    fail = false;
    await act(async () => result.current.reload());
    expect([result.current.data, result.current.error]).toEqual([3, null]);
  });
});
