import { lazy, Suspense, type MouseEvent } from "react";
import { Datasets } from "./pages/Datasets";
import { Models } from "./pages/Models";
import { Projects } from "./pages/Projects";
import { Queue } from "./pages/Queue";
import { Settings } from "./pages/Settings";
import { Team } from "./pages/Team";
import { TraceReview } from "./pages/TraceReview";
import { Link, parseRoute, paths, useLocation } from "./lib/router";

// The dashboard carries the chart library; the review screens should not wait for it.
const Runs = lazy(() => import("./pages/Runs").then((m) => ({ default: m.Runs })));

export function App() {
  const { pathname } = useLocation();
  const r = parseRoute(pathname);
  let page;
  switch (r.name) {
    case "projects":
      page = <Projects />;
      break;
    case "queue":
      page = <Queue key={r.projectId} projectId={r.projectId} />;
      break;
    case "trace":
      page = <TraceReview key={r.traceId} projectId={r.projectId} traceId={r.traceId} />;
      break;
    case "runs":
      page = <Runs key={r.projectId} projectId={r.projectId} runId={r.runId} />;
      break;
    case "datasets":
      page = <Datasets key={r.projectId} projectId={r.projectId} />;
      break;
    case "models":
      page = <Models key={r.projectId} projectId={r.projectId} />;
      break;
    case "team":
      page = <Team key={r.projectId} projectId={r.projectId} />;
      break;
    case "settings":
      page = <Settings key={r.projectId} projectId={r.projectId} />;
      break;
    default:
      page = (
        <div className="page">
          <p>Nothing here.</p>
          <Link to={paths.projects()}>Projects</Link>
        </div>
      );
  }
  return (
    <>
      <div className="topbar">
        <Link to={paths.projects()} className="brand">
          SafeLadder Studio
        </Link>
        <span className="spacer" />
        <a href="/api/docs/">API</a>
        <a href="/accounts/logout/" onClick={(e) => logout(e)}>
          Log out
        </a>
      </div>
      <Suspense fallback={<div className="page muted">Loading…</div>}>{page}</Suspense>
    </>
  );
}

// Django's LogoutView only accepts POST (with the CSRF token).
function logout(e: MouseEvent) {
  e.preventDefault();
  const form = document.createElement("form");
  form.method = "post";
  form.action = "/accounts/logout/";
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  const input = document.createElement("input");
  input.type = "hidden";
  input.name = "csrfmiddlewaretoken";
  input.value = m ? decodeURIComponent(m[1]) : "";
  form.appendChild(input);
  document.body.appendChild(form);
  form.submit();
}
