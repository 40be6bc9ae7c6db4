// The one REST client. Paths, parameters, bodies and answers are typed by schema.gen.ts, which is
// generated from the server's OpenAPI schema (`make api-types`; a test fails when it is stale), so
// a page never guesses a response's shape. Session cookie auth, the CSRF header on writes, and
// errors as ApiError with the HTTP status, so pages can tell "log in" (401/403) from "not
// available yet" (404).
import createClient, { type ClientPathsWithMethod, type MaybeOptionalInit, type MethodResponse } from "openapi-fetch";
import type { paths } from "./schema.gen";

// Pages take the REST types (Project, TraceDetail, …) and the enums' values from here too.
export * from "./schema.gen";

export class ApiError extends Error {
  status: number;
  code: string;
  body: unknown;
  constructor(status: number, code: string, detail: string, body: unknown) {
    super(detail);
    this.status = status;
    this.code = code;
    this.body = body;
  }
  get isAuth(): boolean {
    return this.status === 401 || this.status === 403;
  }
  get isMissing(): boolean {
    return this.status === 404 || this.status === 405 || this.status === 501;
  }
}

export const LOGIN_URL = "/accounts/login/?next=/app/";

export function getCookie(name: string): string | null {
  for (const part of document.cookie.split(";")) {
    const [k, ...rest] = part.trim().split("=");
    if (k === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

const client = createClient<paths>({
  // Absolute, because a Request needs one; fetch is looked up per call (tests replace it).
  baseUrl: globalThis.location?.origin ?? "",
  credentials: "same-origin",
  headers: { Accept: "application/json" },
  fetch: (request: Request) => globalThis.fetch(request),
});

client.use({
  onRequest({ request }) {
    if (request.method !== "GET" && request.method !== "HEAD") {
      const token = getCookie("csrftoken");
      if (token) request.headers.set("X-CSRFToken", token);
    }
    return request;
  },
});

/** Turns a failed answer into an ApiError: {code, detail, errors?} is the server's error shape. */
export function apiError(status: number, statusText: string, body: unknown): ApiError {
  const obj = (body && typeof body === "object" ? body : {}) as Record<string, unknown>;
  const detail =
    typeof obj.detail === "string" ? obj.detail : status === 404 ? "Not found." : `${status} ${statusText}`;
  // Validation errors come as {code, detail, errors: {field: [messages]}}: show the fields too.
  const fieldErrors =
    obj.errors && typeof obj.errors === "object"
      ? Object.entries(obj.errors as Record<string, unknown>)
          .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" ") : JSON.stringify(v)}`)
          .join("; ")
      : "";
  return new ApiError(
    status,
    typeof obj.code === "string" ? obj.code : String(status),
    fieldErrors ? `${detail} (${fieldErrors})` : detail,
    body,
  );
}

type Method = "get" | "post" | "put" | "patch" | "delete";
type Client = typeof client;
// The init argument may be left out exactly when none of its keys is required (as in openapi-fetch).
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
type InitArgs<I> = [RequiredKeys<I>] extends [never] ? [init?: I] : [init: I];
type Raw = { data?: unknown; error?: unknown; response: Response };

function caller<M extends Method>(method: M) {
  const send = client.request as unknown as (method: M, url: string, init?: object) => Promise<Raw>;
  return async <P extends ClientPathsWithMethod<Client, M>, I extends MaybeOptionalInit<paths[P], M>>(
    url: P,
    ...init: InitArgs<I>
  ): Promise<MethodResponse<Client, M, P, I>> => {
    let res: Raw;
    try {
      res = await send(method, url as string, init[0] as object | undefined);
    } catch {
      throw new ApiError(0, "network", "The server could not be reached.", null);
    }
    if (!res.response.ok) throw apiError(res.response.status, res.response.statusText, res.error);
    return res.data as MethodResponse<Client, M, P, I>;
  };
}

/**
 * `api.get("/api/projects/{project_id}/", { params: { path: { project_id } } })` resolves to the
 * answer's body, typed from the schema, or rejects with an ApiError.
 */
export const api = {
  get: caller("get"),
  post: caller("post"),
  put: caller("put"),
  patch: caller("patch"),
  delete: caller("delete"),
};

/** The `cursor` of a paginated answer's `next` link, to ask for the following page (null: last page). */
export function nextCursor(next: string | null | undefined): string | null {
  if (!next) return null;
  return new URL(next, "http://x").searchParams.get("cursor");
}

/** A list's size as the server counted it: exact, or "about N" above its counting cap. */
export function countText(page: { count: number; count_exact?: boolean }): string {
  return page.count_exact === false ? `about ${page.count.toLocaleString("en")}` : page.count.toLocaleString("en");
}

export function wsUrl(path: string): string {
  const proto = window.location.protocol === "https:" ? "wss" : "ws";
  return `${proto}://${window.location.host}${path}`;
}
