import { useState } from "react";
import { api } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, paths } from "../lib/router";
import { useProjectEvents } from "../stream/hooks";

export type Tab = "queue" | "team" | "runs" | "datasets" | "models" | "settings";

interface RunEnded {
  run: number;
  status: string;
  stage: string;
  error?: string;
}

/** Project header with tabs; returns the project to the page through `children`. */
export function ProjectNav({ projectId, tab }: { projectId: number; tab: Tab }) {
  const project = useLoad(() => api.get("/api/projects/{project_id}/", { params: { path: { project_id: projectId } } }), [projectId]);
  // A run that ends while any project page is open says so (the project socket's run.finished).
  const [ended, setEnded] = useState<RunEnded[]>([]);
  useProjectEvents(projectId, (e) => {
    if (e.type === "run.finished") setEnded((x) => [...x, e as unknown as RunEnded]);
  });
  const tabs: Array<[Tab, string, string]> = [
    ["queue", "Review queue", paths.queue(projectId)],
    ["team", "Team", paths.team(projectId)],
    ["runs", "Training", paths.runs(projectId)],
    ["datasets", "Datasets", paths.datasets(projectId)],
    ["models", "Models", paths.models(projectId)],
  ];
  if (project.data?.my_role === "owner") tabs.push(["settings", "Settings", paths.settings(projectId)]);
  return (
    <header className="page-head">
      <nav className="crumbs">
        <Link to={paths.projects()}>Projects</Link> / <strong>{project.data?.name ?? `Project ${projectId}`}</strong>
        {project.data?.my_role && <span className={`role role-${project.data.my_role}`}>{project.data.my_role}</span>}
      </nav>
      <nav className="tabs">
        {tabs.map(([t, label, href]) => (
          <Link key={t} to={href} className={t === tab ? "on" : ""} aria-current={t === tab ? "page" : undefined}>
            {label}
          </Link>
        ))}
      </nav>
      {ended.map((r) => (
        <div key={r.run} className={`notice toast ${r.status === "succeeded" ? "calm" : ""}`} role="status" data-testid={`run-ended-${r.run}`}>
          Training run <Link to={paths.runs(projectId, r.run)}>#{r.run}</Link> ({r.stage}) {r.status}
          {r.error ? `: ${r.error}` : "."}{" "}
          <button className="link" onClick={() => setEnded((x) => x.filter((y) => y.run !== r.run))}>
            dismiss
          </button>
        </div>
      ))}
    </header>
  );
}
