import { useState } from "react";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { ProjectNav } from "../components/ProjectNav";
import { api, ApiError } from "../lib/api";
import { useLoad } from "../lib/hooks";

export function Models({ projectId }: { projectId: number }) {
  const data = useLoad(async () => {
    const path = { project_id: projectId };
    const [models, project] = await Promise.all([
      api.get("/api/projects/{project_id}/models/", { params: { path } }),
      api.get("/api/projects/{project_id}/", { params: { path } }),
    ]);
    return { models, project };
  }, [projectId]);
  const [msg, setMsg] = useState("");
  const promote = async (id: number) => {
    setMsg("");
    try {
      await api.post("/api/projects/{project_id}/models/{version_id}/promote/", {
        params: { path: { project_id: projectId, version_id: id } },
      });
      setMsg("Promoted to serving.");
      data.reload();
    } catch (e) {
      setMsg(e instanceof ApiError && e.isMissing ? "Promotion is not available yet." : e instanceof Error ? e.message : String(e));
    }
  };
  const names = new Map((data.data?.models ?? []).map((m) => [m.id, m.name]));
  const isOwner = data.data?.project.my_role === "owner";
  return (
    <div className="page">
      <ProjectNav projectId={projectId} tab="models" />
      <Section title="Model versions">
        {msg && <div className="notice" role="status">{msg}</div>}
        {data.error ? (
          <ErrorState error={data.error} what="Models" />
        ) : !data.data ? (
          <Loading />
        ) : data.data.models.length === 0 ? (
          <p className="muted">No model versions yet.</p>
        ) : (
          <table className="table" data-testid="model-list">
            <thead>
              <tr>
                <th>Name</th>
                <th>Parent</th>
                <th>Backend</th>
                <th>Base</th>
                <th>Created</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              {data.data.models.map((m) => {
                const serving = data.data?.project.serving_model === m.id;
                return (
                  <tr key={m.id} data-testid={`model-${m.id}`} className={serving ? "serving" : ""}>
                    <td>
                      {m.name} {serving && <span className="badge" data-testid="serving">serving</span>}
                    </td>
                    <td>{m.parent != null ? (names.get(m.parent) ?? `#${m.parent}`) : ""}</td>
                    <td>{m.backend}</td>
                    <td className="small mono">{m.base_model}</td>
                    <td className="muted small">{fmtDate(m.created_at)}</td>
                    <td>
                      {!serving && isOwner && (
                        <button onClick={() => void promote(m.id)} data-testid={`promote-${m.id}`}>
                          Promote
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </Section>
    </div>
  );
}
