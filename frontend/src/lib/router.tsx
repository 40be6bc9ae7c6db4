// A small client-side router for the routes under /app/ (Django serves index.html for all of them).
import { useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from "react";

export const BASE = "/app";

export type Route =
  | { name: "projects" }
  | { name: "queue"; projectId: number }
  | { name: "trace"; projectId: number; traceId: number }
  | { name: "runs"; projectId: number; runId: number | null }
  | { name: "datasets"; projectId: number }
  | { name: "models"; projectId: number }
  | { name: "team"; projectId: number }
  | { name: "settings"; projectId: number }
  | { name: "notfound" };

export function parseRoute(pathname: string): Route {
  let p = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname;
  if (!p.endsWith("/")) p += "/";
  let m: RegExpMatchArray | null;
  if (p === "/" || p === "") return { name: "projects" };
  if ((m = p.match(/^\/projects\/(\d+)\/$/))) return { name: "queue", projectId: +m[1] };
  if ((m = p.match(/^\/projects\/(\d+)\/traces\/(\d+)\/$/))) return { name: "trace", projectId: +m[1], traceId: +m[2] };
  if ((m = p.match(/^\/projects\/(\d+)\/runs\/(?:(\d+)\/)?$/)))
    return { name: "runs", projectId: +m[1], runId: m[2] ? +m[2] : null };
  if ((m = p.match(/^\/projects\/(\d+)\/datasets\/$/))) return { name: "datasets", projectId: +m[1] };
  if ((m = p.match(/^\/projects\/(\d+)\/models\/$/))) return { name: "models", projectId: +m[1] };
  if ((m = p.match(/^\/projects\/(\d+)\/team\/$/))) return { name: "team", projectId: +m[1] };
  if ((m = p.match(/^\/projects\/(\d+)\/settings\/$/))) return { name: "settings", projectId: +m[1] };
  return { name: "notfound" };
}

export const paths = {
  projects: () => `${BASE}/`,
  queue: (p: number) => `${BASE}/projects/${p}/`,
  trace: (p: number, t: number) => `${BASE}/projects/${p}/traces/${t}/`,
  runs: (p: number, r?: number | null) => `${BASE}/projects/${p}/runs/${r ? `${r}/` : ""}`,
  datasets: (p: number) => `${BASE}/projects/${p}/datasets/`,
  models: (p: number) => `${BASE}/projects/${p}/models/`,
  team: (p: number) => `${BASE}/projects/${p}/team/`,
  settings: (p: number) => `${BASE}/projects/${p}/settings/`,
};

export function navigate(to: string, replace = false): void {
  if (replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  window.dispatchEvent(new PopStateEvent("popstate"));
  window.scrollTo?.(0, 0);
}

export function useLocation(): { pathname: string; search: string } {
  const read = () => ({ pathname: window.location.pathname, search: window.location.search });
  const [loc, setLoc] = useState(read);
  useEffect(() => {
    const on = () => setLoc(read());
    window.addEventListener("popstate", on);
    return () => window.removeEventListener("popstate", on);
  }, []);
  return loc;
}

export function Link({ to, onClick, ...rest }: AnchorHTMLAttributes<HTMLAnchorElement> & { to: string }) {
  const handle = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={handle} {...rest} />;
}
