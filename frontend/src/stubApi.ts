// Test helper: pages render against a fetch that answers from a table of routes (404 otherwise)
// and a WebSocket that never opens. Call stubApiForEachTest() at the top of a test file.
import { act, cleanup } from "@testing-library/react";
import { afterEach, beforeEach, vi } from "vitest";

export const routes: Record<string, [number, unknown]> = {};

export function stubApiForEachTest(): void {
  beforeEach(() => {
    for (const key of Object.keys(routes)) delete routes[key];
    vi.stubGlobal(
      "fetch",
      vi.fn(async (request: Request) => {
        const path = new URL(request.url).pathname;
        const [status, body] = routes[path] ?? [404, { code: "not_found", detail: "Not found." }];
        return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
      }),
    );
    // No live socket in these tests: a socket that never opens.
    vi.stubGlobal(
      "WebSocket",
      class {
        close() {}
      },
    );
  });
  afterEach(() => {
    cleanup();
    vi.unstubAllGlobals();
  });
}

/** Let pending fetches and renders finish. */
export const settle = () =>
  act(async () => {
    await new Promise((r) => setTimeout(r, 20));
  });
