import { ErrorState, Loading } from "../components/common";
import { api } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, paths } from "../lib/router";

export function Projects() {
  const list = useLoad(() => api.get("/api/projects/", { params: { query: { limit: 200 } } }), []);
  return (
    <div className="page">
      <h1>Projects</h1>
      {list.error ? (
        <ErrorState error={list.error} what="Projects" />
      ) : !list.data ? (
        <Loading />
      ) : list.data.results.length === 0 ? (
        <p className="muted">You are not a member of any project yet.</p>
      ) : (
        <table className="table" data-testid="project-list">
          <thead>
            <tr>
              <th>Project</th>
              <th>Your role</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {list.data.results.map((p) => (
              <tr key={p.id} data-testid={`project-${p.id}`}>
                <td>
                  <Link to={paths.queue(p.id)}>{p.name}</Link>
                </td>
                <td>
                  <span className={`role role-${p.my_role}`}>{p.my_role ?? "—"}</span>
                </td>
                <td className="links">
                  <Link to={paths.runs(p.id)}>Training</Link> · <Link to={paths.datasets(p.id)}>Datasets</Link> ·{" "}
                  <Link to={paths.models(p.id)}>Models</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
