// The team: how far annotators agree (per label family), who has done what, and — for owners —
// handing prompts out with an overlap. Updates live as reviews come in.
import { useRef, useState } from "react";
import { ErrorState, Loading, Section } from "../components/common";
import { ProjectNav } from "../components/ProjectNav";
import { api, categoryEnumValues, type FamilyAgreement, type Membership } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { useProjectEvents } from "../stream/hooks";

const FAMILIES: Array<[string, string]> = [
  ["verdict", "Verdict"],
  ["safety_label", "Safety label"],
  ["value_label", "Value label"],
  ["knowledge_label", "Knowledge label"],
  ["step_rating", "Step ratings"],
];

const num = (x: number | null | undefined, digits = 2) => (x === null || x === undefined ? "—" : x.toFixed(digits));

export function Team({ projectId }: { projectId: number }) {
  const path = { project_id: projectId };
  const [bucket, setBucket] = useState<"week" | "day">("week");
  const agreement = useLoad(() => api.get("/api/projects/{project_id}/agreement/", { params: { path, query: { bucket } } }), [projectId, bucket]);
  const progress = useLoad(() => api.get("/api/projects/{project_id}/assignments/progress/", { params: { path } }), [projectId]);
  const project = useLoad(() => api.get("/api/projects/{project_id}/", { params: { path } }), [projectId]);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useProjectEvents(projectId, (e) => {
    if (e.type !== "hello" && !e.type.startsWith("queue.")) return;
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(() => {
      agreement.reload();
      progress.reload();
    }, 300);
  });
  const owner = project.data?.my_role === "owner";
  return (
    <div className="page">
      <ProjectNav projectId={projectId} tab="team" />
      <div className="columns">
        <main className="main-col">
          <Section
            title="Agreement"
            aside={
              <select aria-label="period" value={bucket} onChange={(e) => setBucket(e.target.value as "week" | "day")}>
                <option value="week">by week</option>
                <option value="day">by day</option>
              </select>
            }
          >
            {agreement.error ? (
              <ErrorState error={agreement.error} what="Agreement" />
            ) : !agreement.data ? (
              <Loading />
            ) : (
              <div data-testid="agreement">
                <p className="muted small">
                  Krippendorff's α over all annotators (ordinal for step ratings), Cohen's κ per pair and of each annotator
                  against the others' majority; gold accuracy on gold items.
                </p>
                {FAMILIES.map(([key, title]) => (
                  <FamilyTable key={key} id={key} title={title} report={agreement.data!.families[key as keyof typeof agreement.data.families]} />
                ))}
              </div>
            )}
          </Section>
        </main>
        <aside className="side-col">
          <Section title="Annotators">
            {agreement.data && (
              <table className="table" data-testid="annotator-stats">
                <thead>
                  <tr>
                    <th>Annotator</th>
                    <th>Items</th>
                    <th>Median s</th>
                    <th>Agreement</th>
                  </tr>
                </thead>
                <tbody>
                  {agreement.data.annotators.map((a) => (
                    <tr key={a.annotator} data-testid={`annotator-${a.annotator}`}>
                      <td>{a.annotator}</td>
                      <td>{a.items}</td>
                      <td>{num(a.median_seconds, 1)}</td>
                      <td>{num(a.agreement)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
          <Section title="Progress">
            {progress.error ? (
              <ErrorState error={progress.error} what="Progress" />
            ) : !progress.data ? (
              <Loading />
            ) : progress.data.length === 0 ? (
              <p className="muted">Nothing assigned yet.</p>
            ) : (
              <table className="table" data-testid="progress">
                <thead>
                  <tr>
                    <th>Annotator</th>
                    <th>Prompts</th>
                    <th>Done</th>
                    <th>Left</th>
                  </tr>
                </thead>
                <tbody>
                  {progress.data.map((p) => (
                    <tr key={p.annotator.id}>
                      <td>{p.annotator.username}</td>
                      <td>{p.prompts}</td>
                      <td>{p.done}</td>
                      <td>{p.left}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </Section>
          {owner && (
            <Section title="Assign prompts">
              <AssignForm projectId={projectId} onDone={() => progress.reload()} />
            </Section>
          )}
        </aside>
      </div>
    </div>
  );
}

function FamilyTable({ id, title, report }: { id: string; title: string; report: FamilyAgreement }) {
  return (
    <div className="family" data-testid={`family-${id}`}>
      <h3>
        {title}: α = <span data-testid={`alpha-${id}`}>{num(report.alpha, 3)}</span>{" "}
        <span className="muted small">
          ({report.items} items with two or more labels, {report.annotators.length} annotators)
        </span>
      </h3>
      {report.pairs.length > 0 && (
        <table className="table small">
          <thead>
            <tr>
              <th>Pair</th>
              <th>Items</th>
              <th>κ</th>
              <th>Agree</th>
            </tr>
          </thead>
          <tbody>
            {report.pairs.map((p) => (
              <tr key={`${p.a}-${p.b}`} data-testid={`pair-${id}-${p.a}-${p.b}`}>
                <td>
                  {p.a} · {p.b}
                </td>
                <td>{p.items}</td>
                <td>{num(p.kappa)}</td>
                <td>{num(p.agreement)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {report.per_annotator.some((a) => a.consensus_items > 0 || a.gold_items > 0) && (
        <table className="table small">
          <thead>
            <tr>
              <th>Annotator</th>
              <th>κ vs consensus</th>
              <th>Agree</th>
              <th>Gold</th>
            </tr>
          </thead>
          <tbody>
            {report.per_annotator.map((a) => (
              <tr key={a.annotator}>
                <td>{a.annotator}</td>
                <td>{num(a.kappa_vs_consensus)}</td>
                <td>{num(a.agreement_vs_consensus)}</td>
                <td>{a.gold_items ? `${num(a.gold_accuracy)} (${a.gold_items})` : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {report.over_time.length > 1 && (
        <p className="muted small">
          Over time: {report.over_time.map((p) => `${p.period} α ${num(p.alpha)}`).join(" · ")}
        </p>
      )}
    </div>
  );
}

function AssignForm({ projectId, onDone }: { projectId: number; onDone: () => void }) {
  const members = useLoad(() => api.get("/api/projects/{project_id}/members/", { params: { path: { project_id: projectId } } }), [projectId]);
  const [chosen, setChosen] = useState<Record<string, boolean>>({});
  const [overlap, setOverlap] = useState("2");
  const [strategy, setStrategy] = useState<"round_robin" | "weighted" | "category">("round_robin");
  const [category, setCategory] = useState("");
  const [weights, setWeights] = useState<Record<string, string>>({});
  const [cats, setCats] = useState<Record<string, string>>({});
  const [msg, setMsg] = useState("");
  const people = (members.data ?? []).filter((m: Membership) => m.role !== "viewer");
  const names = people.map((m) => m.user.username).filter((n) => chosen[n]);
  const submit = async () => {
    setMsg("");
    try {
      const body = await api.post("/api/projects/{project_id}/assignments/", {
        params: { path: { project_id: projectId } },
        body: {
          annotators: names,
          overlap: Number(overlap),
          strategy,
          ...(category ? { category: category as (typeof categoryEnumValues)[number] } : {}),
          ...(strategy === "weighted" ? { weights: Object.fromEntries(names.map((n) => [n, Number(weights[n] || 1)])) } : {}),
          ...(strategy === "category"
            ? { categories: Object.fromEntries(names.map((n) => [n, (cats[n] ?? "").split(",").map((c) => c.trim()).filter(Boolean)])) }
            : {}),
        },
      });
      setMsg(`Assigned: ${body.created} new assignments.`);
      onDone();
    } catch (e) {
      setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  return (
    <div className="assign" data-testid="assign-form">
      {people.map((m) => (
        <div key={m.id} className="row small">
          <label>
            <input
              type="checkbox"
              checked={!!chosen[m.user.username]}
              onChange={(e) => setChosen((c) => ({ ...c, [m.user.username]: e.target.checked }))}
              data-testid={`assign-${m.user.username}`}
            />{" "}
            {m.user.username} <span className="muted">({m.role})</span>
          </label>
          {strategy === "weighted" && (
            <input size={3} placeholder="weight" aria-label={`weight of ${m.user.username}`} value={weights[m.user.username] ?? ""} onChange={(e) => setWeights((w) => ({ ...w, [m.user.username]: e.target.value }))} />
          )}
          {strategy === "category" && (
            <input size={14} placeholder="safety, knowledge" aria-label={`categories of ${m.user.username}`} value={cats[m.user.username] ?? ""} onChange={(e) => setCats((c) => ({ ...c, [m.user.username]: e.target.value }))} />
          )}
        </div>
      ))}
      <div className="row small">
        <label>
          overlap <input size={2} value={overlap} onChange={(e) => setOverlap(e.target.value.replace(/\D/g, ""))} data-testid="assign-overlap" />
        </label>
        <select aria-label="strategy" value={strategy} onChange={(e) => setStrategy(e.target.value as typeof strategy)}>
          <option value="round_robin">round robin</option>
          <option value="weighted">by weight</option>
          <option value="category">by category</option>
        </select>
        <select aria-label="prompts" value={category} onChange={(e) => setCategory(e.target.value)}>
          <option value="">all prompts</option>
          {categoryEnumValues.map((c) => (
            <option key={c} value={c}>
              {c} prompts
            </option>
          ))}
        </select>
        <button className="primary" disabled={names.length === 0} onClick={() => void submit()} data-testid="assign-submit">
          Assign
        </button>
      </div>
      {msg && (
        <p className="muted" role="status" data-testid="assign-result">
          {msg}
        </p>
      )}
    </div>
  );
}
