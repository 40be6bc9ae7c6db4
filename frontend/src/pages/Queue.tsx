// Review queue: your queue (counters, the next item), the project's traces through the team's views
// (mine, to do, done, unreviewed, disagreement, verdict) or all of them with their filters, live,
// in arrival order or a triage order (most likely wrong first, from the machine step scores);
// and the prompts to start new generations from.
import { useEffect, useEffectEvent, useRef, useState, type FormEvent } from "react";
import { ErrorState, fmtDate, Loading, messagesText, Section } from "../components/common";
import { ProjectNav } from "../components/ProjectNav";
import {
  api,
  ApiError,
  categoryEnumValues,
  countText,
  nextCursor,
  traceStatusEnumValues,
  type CategoryEnum,
  type ModelVersion,
  type Trace,
  type TraceStatusEnum,
} from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, navigate, paths } from "../lib/router";
import { openNextItem } from "../review/next";
import { useProjectEvents } from "../stream/hooks";

const STATUSES = ["", ...traceStatusEnumValues];
const CATEGORIES = ["", ...categoryEnumValues];

type Filters = Record<"view" | "order" | "status" | "prompt" | "model_version" | "category" | "started_by", string>;

export type QueueOrder = "arrival" | "lowest_score" | "disagreement" | "confident_wrong";

/** The queue's orders: value ("" is arrival), label, and what the triage column shows. */
export const ORDERS: Array<[QueueOrder | "", string, string]> = [
  ["", "arrival order", ""],
  ["lowest_score", "triage: lowest score first", "lowest score"],
  ["disagreement", "triage: scorers disagree most", "score spread"],
  ["confident_wrong", "triage: confident but wrong", "mean score (wrong answer)"],
];

/** The team's views of the queue, as the queue endpoint's query. "" is every trace (the trace list). */
const VIEWS: Array<[string, string, Record<string, string>]> = [
  ["", "all traces", {}],
  ["todo", "mine: to do", { mine: "true", reviewed: "false" }],
  ["done", "mine: done", { mine: "true", reviewed: "true" }],
  ["mine", "mine: all", { mine: "true" }],
  ["unreviewed", "unreviewed", { reviewed: "false" }],
  ["reviewed", "reviewed", { reviewed: "true" }],
  ["disagreement", "disagreement", { disagreement: "true" }],
  ["accept", "verdict: accept", { verdict: "accept" }],
  ["reject", "verdict: reject", { verdict: "reject" }],
];

type Row = Trace & { mine?: boolean; my_verdict?: string | null; triage_score?: number | null };

/** The queue endpoint's query for a view and order, or null when the plain trace list serves it
 * (every trace, arrival order: the list has the status / prompt / model / started-by filters). */
export function queueQuery(view: string, order: string, category: string) {
  const found = VIEWS.find(([v]) => v === view);
  if ((!found || !found[0]) && !order) return null;
  const q = found ? found[2] : {};
  return {
    mine: q.mine === "true" ? true : undefined,
    reviewed: q.reviewed ? q.reviewed === "true" : undefined,
    disagreement: q.disagreement === "true" ? true : undefined,
    verdict: (q.verdict || undefined) as "accept" | "reject" | undefined,
    category: (category || undefined) as CategoryEnum | undefined,
    order: (order || undefined) as QueueOrder | undefined,
  };
}

/** A row's triage score as the table shows it ("" when it has none). */
export function triageText(score: number | null | undefined): string {
  return score == null ? "" : score.toFixed(2);
}

/** The filters as the trace list's query: empty ones left out, ids as numbers. */
function traceQuery(f: Filters) {
  return {
    status: (f.status || undefined) as TraceStatusEnum | undefined,
    prompt: f.prompt ? Number(f.prompt) : undefined,
    model_version: f.model_version ? Number(f.model_version) : undefined,
    category: (f.category || undefined) as CategoryEnum | undefined,
    started_by: f.started_by || undefined,
  };
}

function qs(params: Record<string, string>): string {
  const sp = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== ""));
  const s = sp.toString();
  return s ? `?${s}` : "";
}

function useFilters() {
  const sp = new URLSearchParams(window.location.search);
  const [f, setF] = useState<Filters>({
    view: sp.get("view") ?? "",
    order: sp.get("order") ?? "",
    status: sp.get("status") ?? "",
    prompt: sp.get("prompt") ?? "",
    model_version: sp.get("model_version") ?? "",
    category: sp.get("category") ?? "",
    started_by: sp.get("started_by") ?? "",
  });
  const update = (k: keyof typeof f, v: string) => {
    const next = { ...f, [k]: v };
    setF(next);
    // Keep filters in the URL so a reload or a shared link shows the same queue.
    window.history.replaceState(null, "", window.location.pathname + qs(next));
  };
  return [f, update] as const;
}

export function Queue({ projectId }: { projectId: number }) {
  const [f, setFilter] = useFilters();
  const [extra, setExtra] = useState<Row[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const path = { project_id: projectId };
  const order = ORDERS.find(([o]) => o === f.order) ?? ORDERS[0];
  const query = queueQuery(f.view, order[0], f.category);
  // Pages follow the server's cursor (keyset): rows arriving between two pages never repeat or skip one.
  const load = async (cursor?: string) => {
    if (!query)
      return api.get("/api/projects/{project_id}/traces/", {
        params: { path, query: { ...traceQuery(f), limit: 50, cursor } },
      });
    return api.get("/api/projects/{project_id}/queue/", { params: { path, query: { ...query, limit: 50, cursor } } });
  };
  // The trace list's own filters do not apply to the queue endpoint (the team's views, triage orders).
  const listOnly = query ? "Only for all traces in arrival order" : undefined;
  const traces = useLoad(async () => {
    const page = await load();
    setExtra([]);
    setNext(nextCursor(page.next));
    return page;
  }, [projectId, f.view, f.order, f.status, f.prompt, f.model_version, f.category, f.started_by]);
  const counts = useLoad(() => api.get("/api/projects/{project_id}/queue/counts/", { params: { path } }), [projectId]);
  const models = useLoad(() => api.get("/api/projects/{project_id}/models/", { params: { path } }), [projectId]);
  const more = async () => {
    if (next === null) return;
    const page = await load(next);
    setExtra((x) => [...x, ...page.results]);
    setNext(nextCursor(page.next));
  };
  // Live: the queue changes as the team works; coalesce a burst of events into one reload.
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const [live, setLive] = useState(false);
  useProjectEvents(projectId, (e) => {
    if (e.type === "hello") setLive(true);
    if (e.type === "hello" || e.type.startsWith("queue.")) {
      if (timer.current) clearTimeout(timer.current);
      timer.current = setTimeout(() => {
        traces.reload();
        counts.reload();
      }, 250);
    }
  });
  const [msg, setMsg] = useState("");
  const openNext = () => void openNextItem(projectId, null, setMsg);
  const onKey = useEffectEvent((e: KeyboardEvent) => {
    const t = e.target as HTMLElement | null;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    if (e.key === "n" && !e.ctrlKey && !e.metaKey && !e.altKey) openNext();
  });
  useEffect(() => {
    const listener = (e: KeyboardEvent) => onKey(e);
    window.addEventListener("keydown", listener);
    return () => window.removeEventListener("keydown", listener);
  }, []);
  const all: Row[] = [...(traces.data?.results ?? []), ...extra];
  const c = counts.data;

  return (
    <div className="page">
      <ProjectNav projectId={projectId} tab="queue" />
      <div className="columns">
        <main className="main-col">
          <Section
            title="My queue"
            aside={
              <span className={`conn conn-${live ? "open" : "connecting"}`} title="live updates" data-testid="queue-live">
                {live ? "live" : "connecting"}
              </span>
            }
          >
            <div className="row" data-testid="my-queue">
              {c ? (
                <span className="counters">
                  <span data-testid="count-left">
                    {c.mine_exact === false ? "about " : ""}
                    <strong>{c.left}</strong> left
                  </span>{" "}
                  ·{" "}
                  <span data-testid="count-done">
                    <strong>{c.done}</strong> done
                  </span>{" "}
                  of <span data-testid="count-assigned">{c.assigned}</span> assigned
                  {c.prompts_without_trace > 0 && ` · ${c.prompts_without_trace} prompts still to generate`} ·{" "}
                  <span className="muted">
                    project: {c.totals_exact === false ? "about " : ""}
                    {c.traces} traces, {c.unreviewed} unreviewed, {c.disputed} in disagreement
                  </span>
                </span>
              ) : (
                <Loading />
              )}
              <button className="primary" onClick={openNext} data-testid="open-next">
                Open next item <kbd>n</kbd>
              </button>
            </div>
            {msg && (
              <div className="notice" role="status" data-testid="queue-notice">
                {msg}
              </div>
            )}
          </Section>
          <Section
            title="Traces"
            aside={
              <div className="filters">
                <select aria-label="view" data-testid="filter-view" value={f.view} onChange={(e) => setFilter("view", e.target.value)}>
                  {VIEWS.map(([v, label]) => (
                    <option key={v} value={v}>
                      {label}
                    </option>
                  ))}
                </select>
                <select
                  aria-label="order"
                  data-testid="filter-order"
                  value={order[0]}
                  onChange={(e) => setFilter("order", e.target.value)}
                  title="Triage orders put the traces most likely wrong first, from the scores of the project's scorers"
                >
                  {ORDERS.map(([o, label]) => (
                    <option key={o} value={o}>
                      {label}
                    </option>
                  ))}
                </select>
                <select
                  aria-label="status"
                  data-testid="filter-status"
                  value={f.status}
                  onChange={(e) => setFilter("status", e.target.value)}
                  disabled={!!listOnly}
                  title={listOnly}
                >
                  {STATUSES.map((s) => (
                    <option key={s} value={s}>
                      {s || "any status"}
                    </option>
                  ))}
                </select>
                <select aria-label="category" data-testid="filter-category" value={f.category} onChange={(e) => setFilter("category", e.target.value)}>
                  {CATEGORIES.map((c) => (
                    <option key={c} value={c}>
                      {c || "any category"}
                    </option>
                  ))}
                </select>
                <input
                  aria-label="started by"
                  placeholder="started by"
                  data-testid="filter-started-by"
                  value={f.started_by}
                  onChange={(e) => setFilter("started_by", e.target.value.trim())}
                  size={10}
                  disabled={!!listOnly}
                  title={listOnly}
                />
                <input
                  aria-label="prompt id"
                  placeholder="prompt #"
                  inputMode="numeric"
                  data-testid="filter-prompt"
                  value={f.prompt}
                  onChange={(e) => setFilter("prompt", e.target.value.replace(/\D/g, ""))}
                  size={7}
                  disabled={!!listOnly}
                  title={listOnly}
                />
                <select
                  aria-label="model version"
                  data-testid="filter-model"
                  value={f.model_version}
                  onChange={(e) => setFilter("model_version", e.target.value)}
                  disabled={!!listOnly}
                  title={listOnly}
                >
                  <option value="">any model</option>
                  {(models.data ?? []).map((m) => (
                    <option key={m.id} value={m.id}>
                      {m.name}
                    </option>
                  ))}
                </select>
              </div>
            }
          >
            {traces.error ? (
              <ErrorState error={traces.error} what="Traces" />
            ) : !traces.data ? (
              <Loading />
            ) : all.length === 0 ? (
              <p className="muted">No traces match.</p>
            ) : (
              <table className="table" data-testid="trace-list">
                <thead>
                  <tr>
                    <th>Trace</th>
                    <th>Status</th>
                    <th>Prompt</th>
                    <th>Steps</th>
                    <th>Reviews</th>
                    <th>Verdict</th>
                    {order[0] && <th title="What the triage order sorts by">{order[2]}</th>}
                    <th>Branch of</th>
                    <th>Updated</th>
                  </tr>
                </thead>
                <tbody>
                  {all.map((t) => (
                    <tr key={t.id} data-testid={`trace-${t.id}`}>
                      <td>
                        <Link to={paths.trace(projectId, t.id)}>#{t.id}</Link>
                      </td>
                      <td>
                        <span className={`status s-${t.status}`}>{t.status}</span>
                      </td>
                      <td>
                        <button className="link" onClick={() => setFilter("prompt", String(t.prompt))}>
                          #{t.prompt}
                        </button>
                      </td>
                      <td>{t.step_count ?? ""}</td>
                      <td data-testid={`reviews-${t.id}`}>
                        {t.review_count}
                        {t.my_verdict ? <span className="muted"> (you: {t.my_verdict})</span> : t.mine ? <span className="muted"> (yours to do)</span> : null}
                      </td>
                      <td data-testid={`verdict-${t.id}`}>
                        {t.disputed ? <span className="status s-failed">disagreement</span> : t.verdict || ""}
                      </td>
                      {order[0] && (
                        <td data-testid={`triage-${t.id}`}>
                          {triageText(t.triage_score)}
                        </td>
                      )}
                      <td>{t.parent != null ? <Link to={paths.trace(projectId, t.parent)}>#{t.parent}</Link> : ""}</td>
                      <td className="muted">{fmtDate(t.updated_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
            {traces.data && all.length > 0 && (
              <p className="muted small" data-testid="trace-total">
                {all.length} of {countText(traces.data)} shown
              </p>
            )}
            {next !== null && (
              <button onClick={() => void more()} data-testid="more-traces">
                More
              </button>
            )}
          </Section>
        </main>
        <aside className="side-col">
          <Prompts projectId={projectId} models={models.data ?? []} />
        </aside>
      </div>
    </div>
  );
}

function Prompts({ projectId, models }: { projectId: number; models: ModelVersion[] }) {
  const [modelVersion, setModelVersion] = useState("");
  const [search, setSearch] = useState("");
  const [q, setQ] = useState("");
  const prompts = useLoad(
    () =>
      api.get("/api/projects/{project_id}/prompts/", {
        params: { path: { project_id: projectId }, query: { search: q || undefined, limit: 50 } },
      }),
    [projectId, q],
  );
  const [temperature, setTemperature] = useState("");
  const [maxTokens, setMaxTokens] = useState("");
  // "" = the project's supervision default (the demo project: paced)
  const [mode, setMode] = useState<"" | "live" | "paced" | "step">("");
  const [msg, setMsg] = useState<string>("");
  const generate = async (promptId: number) => {
    const sampling: Record<string, number> = {};
    if (temperature) sampling.temperature = Number(temperature);
    if (maxTokens) sampling.max_new_tokens = Number(maxTokens);
    setMsg("Starting…");
    try {
      const t: Trace = await api.post("/api/projects/{project_id}/traces/", {
        params: { path: { project_id: projectId } },
        body: {
          prompt: promptId,
          ...(modelVersion ? { model_version: Number(modelVersion) } : {}),
          ...(Object.keys(sampling).length ? { sampling_params: sampling } : {}),
          ...(mode ? { mode } : {}),
        },
      });
      setMsg("");
      navigate(paths.trace(projectId, t.id));
    } catch (e) {
      if (e instanceof ApiError && e.isMissing) setMsg("Starting generations from here is not available yet.");
      else setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  const onSearch = (e: FormEvent) => {
    e.preventDefault();
    setQ(search);
  };
  return (
    <Section title="Prompts">
      <form onSubmit={onSearch} className="row">
        <input placeholder="search prompts" value={search} onChange={(e) => setSearch(e.target.value)} aria-label="search prompts" />
        <button type="submit">Search</button>
      </form>
      <div className="row small">
        <label>
          temperature{" "}
          <input size={4} value={temperature} onChange={(e) => setTemperature(e.target.value)} inputMode="decimal" data-testid="gen-temperature" />
        </label>
        <select
          aria-label="mode of new generations"
          value={mode}
          onChange={(e) => setMode(e.target.value as typeof mode)}
          data-testid="gen-mode"
          title="live: full speed; paced: at the project's reading pace; step: waits at the end of every step"
        >
          <option value="">project's mode</option>
          <option value="live">live</option>
          <option value="paced">paced</option>
          <option value="step">step by step</option>
        </select>
        <select aria-label="model for new generations" value={modelVersion} onChange={(e) => setModelVersion(e.target.value)} data-testid="gen-model">
          <option value="">serving model</option>
          {models.map((m) => (
            <option key={m.id} value={m.id}>
              {m.name}
            </option>
          ))}
        </select>
        <label>
          max tokens{" "}
          <input size={5} value={maxTokens} onChange={(e) => setMaxTokens(e.target.value.replace(/\D/g, ""))} inputMode="numeric" />
        </label>
      </div>
      {msg && (
        <div className="notice" role="status">
          {msg}
        </div>
      )}
      {prompts.error ? (
        <ErrorState error={prompts.error} what="Prompts" />
      ) : !prompts.data ? (
        <Loading />
      ) : prompts.data.results.length === 0 ? (
        <p className="muted">No prompts.</p>
      ) : (
        <ul className="prompt-list" data-testid="prompt-list">
          {prompts.data.results.map((p) => (
            <li key={p.id} data-testid={`prompt-${p.id}`}>
              <p className="prompt-preview">{messagesText(p.messages).slice(0, 300)}</p>
              <div className="row small">
                <span className="muted">
                  #{p.id} · {p.category}
                  {promptClass(p.metadata) ? ` · ${promptClass(p.metadata)}` : ""}
                  {p.images.length ? ` · ${p.images.length} image${p.images.length > 1 ? "s" : ""}` : ""}
                  {p.trace_count != null ? ` · ${p.trace_count} traces` : ""}
                </span>
                {isHeldOut(p.metadata) && (
                  <span className="badge" data-testid={`heldout-${p.id}`} title="Held out for evaluation: never in a snapshot, so corrections here do not train the model">
                    held out
                  </span>
                )}
                <button onClick={() => void generate(p.id)} data-testid={`generate-${p.id}`}>
                  Generate
                </button>
              </div>
            </li>
          ))}
        </ul>
      )}
    </Section>
  );
}

const HELD_OUT_SPLITS = ["heldout", "eval", "test"];

/** Whether a prompt is held out for evaluation (metadata.split), as the snapshot builder decides. */
export function isHeldOut(metadata: unknown): boolean {
  const split = metadata && typeof metadata === "object" ? (metadata as Record<string, unknown>).split : undefined;
  return typeof split === "string" && HELD_OUT_SPLITS.includes(split);
}

/** The prompt's class (metadata.klass, e.g. the demo task's "planted"), when it has one. */
export function promptClass(metadata: unknown): string | null {
  const klass = metadata && typeof metadata === "object" ? (metadata as Record<string, unknown>).klass : undefined;
  return typeof klass === "string" && klass ? klass : null;
}
