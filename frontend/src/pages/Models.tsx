import { useState } from "react";
import { ClassTable } from "../components/ClassTable";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { ProjectNav } from "../components/ProjectNav";
import { api, ApiError, type ModelVersion } from "../lib/api";
import { classMetrics, loadEvals, pickVersions } from "../lib/evals";
import { useLoad } from "../lib/hooks";
import { Link, paths } from "../lib/router";

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
  const [lineageOf, setLineageOf] = useState<number | null>(null);
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
                      <button className="link" onClick={() => setLineageOf(lineageOf === m.id ? null : m.id)} data-testid={`lineage-${m.id}`}>
                        lineage
                      </button>{" "}
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
      {data.data && data.data.models.length > 0 && <ClassResults projectId={projectId} models={data.data.models} />}
      {lineageOf !== null && <Lineage key={lineageOf} projectId={projectId} versionId={lineageOf} />}
    </div>
  );
}

/** The base and the latest evaluated versions (models in creation order), class by class. */
function ClassResults({ projectId, models }: { projectId: number; models: ModelVersion[] }) {
  const evals = useLoad(() => loadEvals(projectId), [projectId]);
  if (evals.error) return evals.error.isMissing ? null : <ErrorState error={evals.error} what="Evaluations" />;
  if (!evals.data) return null;
  const table = evals.data;
  const compared = pickVersions(models, (m) => classMetrics(table.get(m.id) ?? {}).size > 0);
  if (compared.length === 0) return null;
  return (
    <Section title="Results by class">
      <ClassTable versions={compared.map((m) => ({ id: m.id, name: m.name, metrics: table.get(m.id) ?? {} }))} />
    </Section>
  );
}

function Lineage({ projectId, versionId }: { projectId: number; versionId: number }) {
  const l = useLoad(
    () => api.get("/api/projects/{project_id}/models/{version_id}/lineage/", { params: { path: { project_id: projectId, version_id: versionId } } }),
    [projectId, versionId],
  );
  if (l.error) return <ErrorState error={l.error} what="Lineage" />;
  if (!l.data) return <Loading />;
  const { model, parent, run, snapshots, evals, promotions } = l.data;
  return (
    <Section title={`Lineage of ${model.name}`}>
      <dl className="lineage" data-testid="lineage">
        <dt>Parent</dt>
        <dd>{parent ? parent.name : "— (a base model)"}</dd>
        <dt>Trained by</dt>
        <dd>
          {run ? (
            <Link to={paths.runs(projectId, run.id)}>
              run #{run.id} ({run.stage}, {run.status}
              {run.finished_at ? `, ${fmtDate(run.finished_at)}` : ""})
            </Link>
          ) : (
            "— (registered by hand)"
          )}
        </dd>
        <dt>On snapshots</dt>
        <dd>
          {snapshots.length
            ? snapshots.map((s) => `#${s.id} ${s.kind} (${s.record_count} records, ${s.sha256.slice(0, 12)})`).join(" · ")
            : "—"}
        </dd>
        <dt>Evaluations</dt>
        <dd>{evals.length ? evals.map((e) => `${e.metric} ${e.value.toFixed(3)}`).join(" · ") : "—"}</dd>
        <dt>Promoted</dt>
        <dd data-testid="promotions">
          {promotions.length ? promotions.map((p) => `by ${p.by ?? "the system"} ${fmtDate(p.at)}`).join(" · ") : "never"}
        </dd>
      </dl>
    </Section>
  );
}
