// Training runs dashboard: run list, the selected run's progress, live charts and log, cancel,
// and the safety-vs-capability scatter of evaluated model versions with their per-class results.
import { useEffect, useMemo, useState } from "react";
import { ClassTable, type ClassTableVersion } from "../components/ClassTable";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { GuidedTable, type GuidedTableVersion } from "../components/GuidedTable";
import { LineChart } from "../components/LineChart";
import { ProjectNav } from "../components/ProjectNav";
import { Scatter, type ScatterPoint } from "../components/Scatter";
import { api, stageEnumValues, type StageEnum, type TrainingRun } from "../lib/api";
import { classMetrics, loadEvalsWithGuides, pickVersions } from "../lib/evals";
import { useLoad } from "../lib/hooks";
import { Link, navigate, paths } from "../lib/router";
import { useRunConnection } from "../stream/hooks";
import { ACTIVE_RUN } from "../stream/runs";

// Run-level counters (cumulative or end-of-run figures) are not training curves: on one axis with
// the curves their scale flattens everything else, so the charts leave them out.
const COUNTERS = /^(total_flos|num_input_tokens_seen|num_tokens|epoch|train_runtime|train_.*_per_second|train_loss)$/;

export function groupOf(name: string): "loss" | "reward" | "kl" | "other" | null {
  const n = name.toLowerCase();
  if (COUNTERS.test(n)) return null;
  if (/(^|[^a-z])kl([^a-z]|$)|kl_|_kl/.test(n)) return "kl";
  if (n.includes("reward")) return "reward";
  if (n.includes("loss")) return "loss";
  return "other";
}

export function Runs({ projectId, runId }: { projectId: number; runId: number | null }) {
  const runs = useLoad(
    () => api.get("/api/projects/{project_id}/runs/", { params: { path: { project_id: projectId }, query: { limit: 100 } } }),
    [projectId],
  );
  const list = runs.data?.results ?? [];
  const current = runId ?? list[0]?.id ?? null;
  return (
    <div className="page">
      <ProjectNav projectId={projectId} tab="runs" />
      <div className="columns">
        <main className="main-col">
          {runs.error ? (
            <Section title="Training runs">
              <ErrorState error={runs.error} what="Training runs" />
            </Section>
          ) : !runs.data ? (
            <Loading />
          ) : current === null ? (
            <Section title="Training runs">
              <p className="muted">No training runs yet.</p>
            </Section>
          ) : (
            <RunDetail key={current} projectId={projectId} runId={current} summary={list.find((r) => r.id === current)} onChange={runs.reload} />
          )}
          <Section title="Safety vs capability">
            <EvalScatter projectId={projectId} />
          </Section>
        </main>
        <aside className="side-col">
          <Section title="Runs">
            {list.length > 0 && (
              <ul className="run-list" data-testid="run-list">
                {list.map((r) => (
                  <li key={r.id} className={r.id === current ? "current" : ""}>
                    <Link to={paths.runs(projectId, r.id)}>
                      #{r.id} {r.stage}
                    </Link>{" "}
                    <span className={`status s-${r.status}`}>{r.status}</span>{" "}
                    <span className="muted small">{Math.round((r.progress ?? 0) * 100)}%</span>
                  </li>
                ))}
              </ul>
            )}
          </Section>
          <Section title="Start a training run">
            <StartRun projectId={projectId} onStarted={(id) => { runs.reload(); navigate(paths.runs(projectId, id)); }} />
          </Section>
        </aside>
      </div>
    </div>
  );
}

function RunDetail({
  projectId,
  runId,
  summary,
  onChange,
}: {
  projectId: number;
  runId: number;
  summary?: TrainingRun;
  onChange: () => void;
}) {
  // The run, its metrics and its log come over the run socket: a snapshot on every (re)connect,
  // then live events.
  const { conn, state, status } = useRunConnection(runId);
  const run = state.run ?? summary ?? null;
  const series = state.series;
  const log = state.log;
  const live = status === "open";
  const [msg, setMsg] = useState("");
  const path = { project_id: projectId, run_id: runId };

  // A run seen active that has just ended has new fields (its model version, error): fetch them
  // once, and let the run list show its new status.
  const runStatus = state.run?.status;
  const active = runStatus !== undefined && ACTIVE_RUN.has(runStatus);
  const [seenActive, setSeenActive] = useState(false);
  if (active && !seenActive) setSeenActive(true);
  const justEnded = seenActive && runStatus !== undefined && !active;
  useEffect(() => {
    if (!justEnded) return;
    let current = true;
    api.get("/api/projects/{project_id}/runs/{run_id}/", { params: { path: { project_id: projectId, run_id: runId } } }).then(
      (r) => current && conn.setRun(r),
      () => {},
    );
    onChange();
    return () => {
      current = false;
    };
  }, [justEnded, conn, projectId, runId, onChange]);

  const groups = useMemo(() => {
    const g: Record<string, string[]> = {};
    for (const name of Object.keys(series).sort()) {
      const group = groupOf(name);
      if (group) (g[group] ??= []).push(name);
    }
    return g;
  }, [series]);

  const cancel = async () => {
    setMsg("");
    try {
      conn.setRun(await api.post("/api/projects/{project_id}/runs/{run_id}/cancel/", { params: { path } }));
      onChange();
    } catch (e) {
      setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  const promote = async (modelId: number) => {
    setMsg("");
    try {
      await api.post("/api/projects/{project_id}/models/{version_id}/promote/", {
        params: { path: { project_id: projectId, version_id: modelId } },
      });
      setMsg("Promoted to serving.");
    } catch (e) {
      setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  const pct = Math.round((run?.progress ?? 0) * 100);
  const order = ["loss", "reward", "kl", "other"];
  return (
    <Section
      title={`Run #${runId}${run ? ` · ${run.stage}` : ""}`}
      aside={<span className={`conn conn-${live ? "open" : "reconnecting"}`}>{live ? "live" : "offline"}</span>}
    >
      {run && (
        <div className="run-head">
          <span className={`status s-${run.status}`} data-testid="run-status">
            {run.status}
          </span>
          <progress max={100} value={pct} aria-label="progress" data-testid="run-progress" />
          <span>{pct}%</span>
          <span className="muted small">{fmtDate(run.created_at)}</span>
          {ACTIVE_RUN.has(run.status) && (
            <button className="danger" onClick={() => void cancel()} data-testid="run-cancel">
              Cancel
            </button>
          )}
          {run.output_model != null && run.status === "succeeded" && (
            <button onClick={() => void promote(run.output_model as number)} data-testid="run-promote">
              Promote model #{run.output_model}
            </button>
          )}
        </div>
      )}
      {run?.error && <pre className="error-text">{run.error}</pre>}
      {msg && <div className="notice" role="status">{msg}</div>}
      <div data-testid="run-chart" className="charts">
        {Object.keys(groups).length === 0 ? (
          <p className="muted">{live ? "No metrics yet." : "Connecting…"}</p>
        ) : (
          order
            .filter((g) => groups[g])
            .map((g) => <LineChart key={g} title={g} names={groups[g]} series={series} testId={`run-chart-${g}`} />)
        )}
      </div>
      {log.length > 0 && (
        <details open>
          <summary>Log</summary>
          <pre className="log" data-testid="run-log">{log.join("\n")}</pre>
        </details>
      )}
    </Section>
  );
}

function EvalScatter({ projectId }: { projectId: number }) {
  const data = useLoad(async () => {
    const path = { project_id: projectId };
    const [models, project, loaded] = await Promise.all([
      api.get("/api/projects/{project_id}/models/", { params: { path } }),
      api.get("/api/projects/{project_id}/", { params: { path } }),
      loadEvalsWithGuides(projectId),
    ]);
    const { table: evals, guides } = loaded;
    // Models come in creation order, so the scatter's line follows the rounds.
    const points: ScatterPoint[] = [];
    for (const m of models) {
      const e = evals.get(m.id);
      if (e && typeof e.accuracy === "number" && typeof e.safety_score === "number")
        points.push({ id: m.id, name: m.name, x: e.accuracy, y: e.safety_score, serving: project.serving_model === m.id });
    }
    const compared: ClassTableVersion[] = pickVersions(models, (m) => classMetrics(evals.get(m.id) ?? {}).size > 0).map((m) => ({
      id: m.id,
      name: m.name,
      metrics: evals.get(m.id) ?? {},
    }));
    const guided: GuidedTableVersion[] = models
      .filter((m) => guides.has(m.id))
      .map((m) => ({ id: m.id, name: m.name, guide: guides.get(m.id) ?? "", metrics: evals.get(m.id) ?? {} }));
    return { points, compared, guided };
  }, [projectId]);
  if (data.error) return <ErrorState error={data.error} what="Evaluations" />;
  if (!data.data) return <Loading />;
  const { points, compared, guided } = data.data;
  if (points.length === 0 && compared.length === 0 && guided.length === 0)
    return <p className="muted">No evaluated model versions yet.</p>;
  return (
    <>
      {points.length > 0 && <Scatter points={points} />}
      {compared.length > 0 && <ClassTable versions={compared} />}
      {guided.length > 0 && <GuidedTable versions={guided} />}
    </>
  );
}

/** Owners start a run from ready snapshots; the server checks the config and says what is wrong. */
function StartRun({ projectId, onStarted }: { projectId: number; onStarted: (id: number) => void }) {
  const path = { project_id: projectId };
  const opts = useLoad(async () => {
    const [project, models, snapshots] = await Promise.all([
      api.get("/api/projects/{project_id}/", { params: { path } }),
      api.get("/api/projects/{project_id}/models/", { params: { path } }),
      api.get("/api/projects/{project_id}/datasets/", { params: { path, query: { limit: 100 } } }),
    ]);
    return { project, models, snapshots: snapshots.results.filter((s) => s.status === "ready") };
  }, [projectId]);
  const [stage, setStage] = useState<StageEnum>("sft");
  const [base, setBase] = useState("");
  const [chosen, setChosen] = useState<number[]>([]);
  const [config, setConfig] = useState('{"max_steps": 20, "learning_rate": 0.0001}');
  const [msg, setMsg] = useState("");
  if (opts.error) return opts.error.isMissing ? null : <ErrorState error={opts.error} what="Runs" />;
  if (!opts.data) return <Loading />;
  if (opts.data.project.my_role !== "owner") return <p className="muted">Owners start training runs.</p>;
  const start = async () => {
    setMsg("");
    let parsed: unknown;
    try {
      parsed = config.trim() ? JSON.parse(config) : {};
    } catch {
      setMsg("The config is not valid JSON.");
      return;
    }
    try {
      const run = await api.post("/api/projects/{project_id}/runs/", {
        params: { path },
        body: { stage, base_model: Number(base || opts.data!.project.serving_model || 0), snapshots: chosen, config: parsed as Record<string, never> },
      });
      onStarted(run.id);
    } catch (e) {
      setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  return (
    <div className="start-run" data-testid="start-run">
      <div className="row small">
        <select aria-label="stage" value={stage} onChange={(e) => setStage(e.target.value as StageEnum)} data-testid="run-stage">
          {stageEnumValues.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
        <select aria-label="base model" value={base} onChange={(e) => setBase(e.target.value)} data-testid="run-base">
          <option value="">serving model</option>
          {opts.data.models.map((m) => (
            <option key={m.id} value={m.id}>
              {m.name}
            </option>
          ))}
        </select>
      </div>
      <div className="small">
        {opts.data.snapshots.length === 0 ? (
          <span className="muted">No ready snapshots: build one on the Datasets page.</span>
        ) : (
          opts.data.snapshots.map((s) => (
            <label key={s.id} className="row">
              <input type="checkbox" checked={chosen.includes(s.id)} onChange={(e) => setChosen((c) => (e.target.checked ? [...c, s.id] : c.filter((x) => x !== s.id)))} />
              #{s.id} {s.kind} · {s.record_count} records
            </label>
          ))
        )}
      </div>
      <textarea rows={3} value={config} onChange={(e) => setConfig(e.target.value)} aria-label="run config (JSON)" data-testid="run-config" />
      <button className="primary" disabled={chosen.length === 0} onClick={() => void start()} data-testid="run-start">
        Start run
      </button>
      {msg && (
        <div className="notice" role="alert" data-testid="run-start-error">
          {msg}
        </div>
      )}
    </div>
  );
}
