// Dataset snapshots: list, create (kind + filters), download in each export format.
import { useEffect, useState, type FormEvent } from "react";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { ProjectNav } from "../components/ProjectNav";
import { api, ApiError, categoryEnumValues, type DatasetSnapshotInputRequest, type KindEnum } from "../lib/api";
import { useLoad } from "../lib/hooks";

export const FORMATS = ["jsonl", "parquet", "hf"] as const;


export function Datasets({ projectId }: { projectId: number }) {
  const path = { project_id: projectId };
  const project = useLoad(() => api.get("/api/projects/{project_id}/", { params: { path } }), [projectId]);
  const isOwner = project.data?.my_role === "owner";
  const list = useLoad(
    () => api.get("/api/projects/{project_id}/datasets/", { params: { path, query: { limit: 100 } } }),
    [projectId],
  );
  const building = (list.data?.results ?? []).some((d) => d.status === "pending" || d.status === "building");
  useEffect(() => {
    if (!building) return;
    const t = setInterval(list.reload, 3000);
    return () => clearInterval(t);
  }, [building, list.reload]);
  const kinds = useLoad(() => api.get("/api/projects/{project_id}/datasets/kinds/", { params: { path } }), [projectId]);
  const [kind, setKind] = useState("");
  const [name, setName] = useState("");
  const [cats, setCats] = useState<Array<(typeof categoryEnumValues)[number]>>([]);
  const [reviewStatus, setReviewStatus] = useState("any");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [annotators, setAnnotators] = useState("");
  const [evalFraction, setEvalFraction] = useState("0.1");
  const [msg, setMsg] = useState("");
  const create = async (e: FormEvent) => {
    e.preventDefault();
    const chosen = kind || kinds.data?.[0]?.kind || "";
    if (!chosen) {
      setMsg("Choose a kind.");
      return;
    }
    const filters: NonNullable<DatasetSnapshotInputRequest["filters"]> = {};
    if (cats.length) filters.categories = cats;
    if (reviewStatus !== "any") filters.review_status = reviewStatus as "accepted" | "rejected";
    if (from) filters.created_from = from;
    if (to) filters.created_to = to;
    const names = annotators.split(/[\s,]+/).filter(Boolean);
    if (names.length) filters.annotators = names;
    setMsg("Creating…");
    try {
      await api.post("/api/projects/{project_id}/datasets/", {
        params: { path },
        // `kind` is one the server listed (or, without the list, typed by hand: the server checks it).
        body: { kind: chosen as KindEnum, filters, eval_fraction: Number(evalFraction || 0), ...(name ? { name } : {}) },
      });
      setMsg("Created; it is being built.");
      list.reload();
    } catch (err) {
      setMsg(err instanceof ApiError && err.isMissing ? "Creating datasets is not available yet." : err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <div className="page">
      <ProjectNav projectId={projectId} tab="datasets" />
      <div className="columns">
        <main className="main-col">
          <Section title="Dataset snapshots" aside={<button onClick={list.reload}>Refresh</button>}>
            {list.error ? (
              <ErrorState error={list.error} what="Datasets" />
            ) : !list.data ? (
              <Loading />
            ) : list.data.results.length === 0 ? (
              <p className="muted">No datasets yet.</p>
            ) : (
              <table className="table" data-testid="dataset-list">
                <thead>
                  <tr>
                    <th>#</th>
                    <th>Kind</th>
                    <th>Status</th>
                    <th>Records</th>
                    <th>Counts</th>
                    <th>sha256</th>
                    <th>Download</th>
                  </tr>
                </thead>
                <tbody>
                  {list.data.results.map((d) => (
                    <tr key={d.id} data-testid={`dataset-${d.id}`}>
                      <td title={fmtDate(d.created_at)}>
                        {d.id}
                        {d.name ? ` ${d.name}` : ""}
                      </td>
                      <td>{d.kind}</td>
                      <td>
                        <span className={`status s-${d.status}`}>{d.status}</span>
                        {d.error && <div className="error-text small">{d.error}</div>}
                      </td>
                      <td>{d.record_count}</td>
                      <td className="small mono">
                        {d.counts && Object.keys(d.counts).length ? JSON.stringify(d.counts) : ""}
                      </td>
                      <td className="small mono" title={d.sha256}>
                        {d.sha256 ? d.sha256.slice(0, 12) : ""}
                      </td>
                      <td className="links">
                        {d.status === "ready" && !isOwner ? (
                          <span className="muted small">owners</span>
                        ) : d.status === "ready"
                          ? FORMATS.map((f) => (
                              <a key={f} href={`/api/projects/${projectId}/datasets/${d.id}/download/?format=${f}`} data-testid={`download-${f}`} download>
                                {f}
                              </a>
                            ))
                          : "—"}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
        </main>
        <aside className="side-col">
          <Section title="New snapshot">
            <form className="form" onSubmit={create} data-testid="dataset-create">
              <label htmlFor="ds-kind">Kind</label>
              {kinds.error ? (
                <input id="ds-kind" value={kind} onChange={(e) => setKind(e.target.value)} placeholder="e.g. sft" data-testid="dataset-kind" />
              ) : (
                <select id="ds-kind" value={kind} onChange={(e) => setKind(e.target.value)} data-testid="dataset-kind">
                  {(kinds.data ?? []).map((k) => (
                    <option key={k.kind} value={k.kind}>
                      {k.kind}
                    </option>
                  ))}
                </select>
              )}
              {(() => {
                const chosen = (kinds.data ?? []).find((k) => k.kind === (kind || kinds.data?.[0]?.kind));
                return chosen?.description ? (
                  <span className="muted small">{chosen.description}</span>
                ) : null;
              })()}
              <label htmlFor="ds-name">Name (optional)</label>
              <input id="ds-name" value={name} onChange={(e) => setName(e.target.value)} />
              <fieldset className="filters-box" data-testid="dataset-filters">
                <legend>Filters</legend>
                <div className="row small">
                  {categoryEnumValues.map((c) => (
                    <label key={c}>
                      <input
                        type="checkbox"
                        checked={cats.includes(c)}
                        onChange={() => setCats((x) => (x.includes(c) ? x.filter((y) => y !== c) : [...x, c]))}
                      />{" "}
                      {c}
                    </label>
                  ))}
                </div>
                <label htmlFor="ds-review">Review</label>
                <select id="ds-review" value={reviewStatus} onChange={(e) => setReviewStatus(e.target.value)}>
                  <option value="any">any</option>
                  <option value="accepted">accepted</option>
                  <option value="rejected">rejected</option>
                </select>
                <label htmlFor="ds-from">Created from / to</label>
                <div className="row">
                  <input id="ds-from" type="date" value={from} onChange={(e) => setFrom(e.target.value)} />
                  <input aria-label="created to" type="date" value={to} onChange={(e) => setTo(e.target.value)} />
                </div>
                <label htmlFor="ds-annotators">Annotators (usernames)</label>
                <input id="ds-annotators" value={annotators} onChange={(e) => setAnnotators(e.target.value)} placeholder="everyone" />
              </fieldset>
              <label htmlFor="ds-eval">Eval fraction</label>
              <input id="ds-eval" inputMode="decimal" value={evalFraction} onChange={(e) => setEvalFraction(e.target.value)} />
              <button className="primary" type="submit">
                Create
              </button>
              {msg && <span className="muted" role="status">{msg}</span>}
            </form>
          </Section>
        </aside>
      </div>
    </div>
  );
}
