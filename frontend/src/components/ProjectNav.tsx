import { api } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, paths } from "../lib/router";

export type Tab = "queue" | "runs" | "datasets" | "models";

/** Project header with tabs; returns the project to the page through `children`. */
export function ProjectNav({ projectId, tab }: { projectId: number; tab: Tab }) {
  const project = useLoad(() => api.get("/api/projects/{project_id}/", { params: { path: { project_id: projectId } } }), [projectId]);
  const tabs: Array<[Tab, string, string]> = [
    ["queue", "Review queue", paths.queue(projectId)],
    ["runs", "Training", paths.runs(projectId)],
    ["datasets", "Datasets", paths.datasets(projectId)],
    ["models", "Models", paths.models(projectId)],
  ];
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
    </header>
  );
}
