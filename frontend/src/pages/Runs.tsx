// Training runs dashboard: run list, the selected run's progress, live charts and log, cancel,
// and the safety-vs-capability scatter of evaluated model versions.
import { useEffect, useMemo, useState } from "react";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { LineChart, type SeriesMap } from "../components/LineChart";
import { ProjectNav } from "../components/ProjectNav";
import { Scatter, type ScatterPoint } from "../components/Scatter";
import { api, wsUrl } from "../lib/api";
import { loadEvals } from "../lib/evals";
import { useLoad } from "../lib/hooks";
import { Link, paths } from "../lib/router";
import type { MetricPoint, ModelVersion, Project, TrainingRun } from "../lib/types";
import { backoffDelay } from "../stream/connection";

const ACTIVE = new Set(["queued", "running", "cancelling"]);

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
  const runs = useLoad(() => api.list<TrainingRun>(`/api/projects/${projectId}/runs/?limit=100`), [projectId]);
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
  const [run, setRun] = useState<TrainingRun | null>(summary ?? null);
  const [series, setSeries] = useState<SeriesMap>({});
  const [log, setLog] = useState<string[]>([]);
  const [live, setLive] = useState(false);
  const [msg, setMsg] = useState("");
  const metrics = useLoad(
    () => api.get<MetricPoint[] | { results: MetricPoint[] }>(`/api/projects/${projectId}/runs/${runId}/metrics/`),
    [projectId, runId],
  );

  useEffect(() => {
    api.get<TrainingRun>(`/api/projects/${projectId}/runs/${runId}/`).then(setRun, () => {});
  }, [projectId, runId]);

  useEffect(() => {
    if (!metrics.data) return;
    const pts = Array.isArray(metrics.data) ? metrics.data : (metrics.data.results ?? []);
    setSeries((prev) => {
      const next: SeriesMap = { ...prev };
      for (const p of pts) (next[p.name] = new Map(next[p.name] ?? [])).set(p.step, p.value);
      return next;
    });
  }, [metrics.data]);

  // Live events: run.progress, run.metrics, run.log. No seq here, so after a reconnect the
  // metrics are refetched over REST to fill what was missed.
  useEffect(() => {
    let ws: WebSocket | null = null;
    let attempt = 0;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let disposed = false;
    const open = () => {
      ws = new WebSocket(wsUrl(`/ws/runs/${runId}/`));
      ws.onopen = () => {
        if (attempt > 0) metrics.reload();
        attempt = 0;
        setLive(true);
      };
      ws.onmessage = (ev) => {
        let m: { type?: string; [k: string]: unknown };
        try {
          m = JSON.parse(String(ev.data));
        } catch {
          return;
        }
        if (m.type === "run.progress") {
          setRun((r) => (r ? { ...r, progress: Number(m.progress ?? r.progress), status: String(m.status ?? r.status) } : r));
          // A run that just ended has new fields (its model version, error): fetch them once.
          if (!ACTIVE.has(String(m.status))) {
            api.get<TrainingRun>(`/api/projects/${projectId}/runs/${runId}/`).then(setRun, () => {});
            onChange();
          }
        } else if (m.type === "run.metrics") {
          const step = Number(m.step);
          const values = (m.metrics ?? {}) as Record<string, number>;
          setSeries((prev) => {
            const next: SeriesMap = { ...prev };
            for (const [name, v] of Object.entries(values)) (next[name] = new Map(next[name] ?? [])).set(step, Number(v));
            return next;
          });
        } else if (m.type === "run.log") {
          setLog((l) => [...l.slice(-499), String(m.line ?? "")]);
        }
      };
      ws.onclose = (ev) => {
        setLive(false);
        if (disposed || ev.code === 4401 || ev.code === 4403 || ev.code === 4404) return;
        timer = setTimeout(open, backoffDelay(attempt++));
      };
    };
    open();
    return () => {
      disposed = true;
      if (timer) clearTimeout(timer);
      ws?.close();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [runId]);

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
      const r = await api.post<TrainingRun>(`/api/projects/${projectId}/runs/${runId}/cancel/`);
      if (r && typeof r === "object" && "status" in r) setRun((old) => ({ ...(old ?? r), ...r }));
      onChange();
    } catch (e) {
      setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  const promote = async (modelId: number) => {
    setMsg("");
    try {
      await api.post(`/api/projects/${projectId}/models/${modelId}/promote/`);
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
          {ACTIVE.has(run.status) && (
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
        {metrics.error && !metrics.error.isMissing ? (
          <ErrorState error={metrics.error} what="Metrics" />
        ) : Object.keys(groups).length === 0 ? (
          <p className="muted">{metrics.error ? "Metrics: not available yet." : "No metrics yet."}</p>
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
    const [models, project] = await Promise.all([
      api.list<ModelVersion>(`/api/projects/${projectId}/models/`),
      api.get<Project>(`/api/projects/${projectId}/`),
    ]);
    const evals = await loadEvals(projectId, models.results);
    const points: ScatterPoint[] = [];
    for (const m of models.results) {
      const e = evals.get(m.id);
      if (e && typeof e.accuracy === "number" && typeof e.safety_score === "number")
        points.push({ id: m.id, name: m.name, x: e.accuracy, y: e.safety_score, serving: project.serving_model === m.id });
    }
    return points;
  }, [projectId]);
  if (data.error) return <ErrorState error={data.error} what="Evaluations" />;
  if (!data.data) return <Loading />;
  if (data.data.length === 0) return <p className="muted">No evaluated model versions yet.</p>;
  return <Scatter points={data.data} />;
}
