import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { api, ApiError, countText, nextCursor } from "./api";

let seen: Request[] = [];
let answer: () => Response | Promise<Response>;

beforeEach(() => {
  seen = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (request: Request) => {
      seen.push(request);
      return answer();
    }),
  );
  document.cookie = "csrftoken=tok%3D1";
});
afterEach(() => {
  vi.unstubAllGlobals();
  document.cookie = "csrftoken=; expires=Thu, 01 Jan 1970 00:00:00 GMT";
});

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

describe("the REST client", () => {
  it("fills path and query parameters, sends the session cookie, and returns the body", async () => {
    answer = () => json(200, { count: 0, next: null, previous: null, results: [] });
    const page = await api.get("/api/projects/{project_id}/traces/", {
      params: { path: { project_id: 4 }, query: { status: "stopped", prompt: 7, limit: 50 } },
    });
    expect(page.results).toEqual([]);
    const url = new URL(seen[0].url);
    expect(url.pathname).toBe("/api/projects/4/traces/");
    expect(Object.fromEntries(url.searchParams)).toEqual({ status: "stopped", prompt: "7", limit: "50" });
    expect(seen[0].credentials).toBe("same-origin");
    expect(seen[0].headers.get("X-CSRFToken")).toBeNull(); // reads carry no token
  });

  it("writes send JSON with the CSRF token from the cookie", async () => {
    answer = () => json(201, { id: 9 });
    await api.post("/api/projects/{project_id}/traces/", { params: { path: { project_id: 4 } }, body: { prompt: 3 } });
    expect(seen[0].method).toBe("POST");
    expect(seen[0].headers.get("X-CSRFToken")).toBe("tok=1");
    expect(seen[0].headers.get("Content-Type")).toBe("application/json");
    expect(await seen[0].json()).toEqual({ prompt: 3 });
  });

  it("an error answer becomes an ApiError with the server's code, detail and field errors", async () => {
    answer = () => json(400, { code: "invalid", detail: "Invalid input.", errors: { kind: ["Not a valid choice."] } });
    const err = await api
      .post("/api/projects/{project_id}/datasets/", { params: { path: { project_id: 1 } }, body: { kind: "sft" } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 400, code: "invalid", message: "Invalid input. (kind: Not a valid choice.)" });
  });

  it("tells log-in (401/403) from not-available (404) and an unreachable server", async () => {
    answer = () => json(403, { detail: "You do not have permission." });
    const denied = (await api.get("/api/projects/").catch((e: unknown) => e)) as ApiError;
    expect([denied.isAuth, denied.isMissing, denied.message]).toEqual([true, false, "You do not have permission."]);
    answer = () => new Response("<h1>Not Found</h1>", { status: 404 });
    const missing = (await api.get("/api/projects/").catch((e: unknown) => e)) as ApiError;
    expect([missing.isMissing, missing.message]).toEqual([true, "Not found."]);
    answer = () => Promise.reject(new TypeError("Failed to fetch"));
    const offline = (await api.get("/api/projects/").catch((e: unknown) => e)) as ApiError;
    expect([offline.status, offline.code]).toEqual([0, "network"]);
  });

  it("reads the next page's cursor from a paginated answer's link", () => {
    expect(nextCursor("http://testserver/api/projects/1/traces/?cursor=eyJvIjoiaWQifQ&limit=50")).toBe("eyJvIjoiaWQifQ");
    expect(nextCursor(null)).toBeNull();
  });

  it("says a count is an estimate when the server did not count it exactly", () => {
    expect(countText({ count: 1234, count_exact: true })).toBe("1,234");
    expect(countText({ count: 1000000, count_exact: false })).toBe("about 1,000,000");
  });
});
