// REST client: session cookie auth, CSRF header on writes, errors as ApiError with the HTTP status
// so pages can tell "log in" (401/403) from "not available yet" (404).

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

async function request<T>(method: string, url: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    headers["Content-Type"] = "application/json";
    const token = getCookie("csrftoken");
    if (token) headers["X-CSRFToken"] = token;
  }
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "network", "The server could not be reached.", null);
  }
  const text = await res.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const obj = (data && typeof data === "object" ? data : {}) as Record<string, unknown>;
    const detail =
      typeof obj.detail === "string"
        ? obj.detail
        : res.status === 404
          ? "Not found."
          : `${res.status} ${res.statusText}`;
    // Validation errors come as {code, detail, errors: {field: [messages]}}: show the fields too.
    const fieldErrors =
      obj.errors && typeof obj.errors === "object"
        ? Object.entries(obj.errors as Record<string, unknown>)
            .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" ") : JSON.stringify(v)}`)
            .join("; ")
        : "";
    throw new ApiError(
      res.status,
      typeof obj.code === "string" ? obj.code : String(res.status),
      fieldErrors ? `${detail} (${fieldErrors})` : detail,
      data,
    );
  }
  return data as T;
}

export interface Page<T> {
  count?: number;
  next?: string | null;
  previous?: string | null;
  results: T[];
}

/** Lists come paginated ({results, next}) or as a bare array, depending on the endpoint. */
export function asPage<T>(data: Page<T> | T[] | null): Page<T> {
  if (Array.isArray(data)) return { results: data, next: null, count: data.length };
  if (data && Array.isArray(data.results)) return data;
  return { results: [], next: null, count: 0 };
}

export function qs(params: Record<string, string | number | null | undefined>): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") sp.set(k, String(v));
  }
  const s = sp.toString();
  return s ? `?${s}` : "";
}

export const api = {
  get: <T>(url: string) => request<T>("GET", url),
  post: <T>(url: string, body?: unknown) => request<T>("POST", url, body ?? {}),
  put: <T>(url: string, body?: unknown) => request<T>("PUT", url, body ?? {}),
  list: async <T>(url: string) => asPage<T>(await request<Page<T> | T[]>("GET", url)),
};

export function wsUrl(path: string): string {
  const proto = window.location.protocol === "https:" ? "wss" : "ws";
  return `${proto}://${window.location.host}${path}`;
}
