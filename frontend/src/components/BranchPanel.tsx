// The branch tree of a prompt's traces and the word-level diff between an original trace and its
// corrected branch (the corrected step, then the rest of the two chains and their answers).
import { useMemo } from "react";
import { api, type Trace } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, paths } from "../lib/router";
import type { BranchInfo, LiveTrace } from "../stream/protocol";
import { DiffView } from "./DiffView";

interface Node {
  t: Pick<Trace, "id" | "status" | "parent" | "branch_step_index">;
  children: Node[];
}

export function buildForest(traces: Array<Node["t"]>): Node[] {
  const byId = new Map<number, Node>();
  for (const t of traces) byId.set(t.id, { t, children: [] });
  const roots: Node[] = [];
  for (const n of [...byId.values()].sort((a, b) => a.t.id - b.t.id)) {
    const parent = n.t.parent != null ? byId.get(n.t.parent) : undefined;
    if (parent) parent.children.push(n);
    else roots.push(n);
  }
  return roots;
}

export function BranchTree({
  projectId,
  trace,
  branchInfo,
  compareId,
  onCompare,
}: {
  projectId: number;
  trace: LiveTrace;
  branchInfo: Record<number, BranchInfo>;
  compareId: number | null;
  onCompare: (id: number | null) => void;
}) {
  const branchKey = trace.branches.join(",");
  const related = useLoad(async () => {
    const list = (query: { prompt?: number; parent?: number }) =>
      api.get("/api/projects/{project_id}/traces/", {
        params: { path: { project_id: projectId }, query: { ...query, limit: 200 } },
      });
    const [samePrompt, children, siblings] = await Promise.all([
      list({ prompt: trace.prompt }),
      list({ parent: trace.id }),
      trace.parent != null ? list({ parent: trace.parent }) : Promise.resolve({ results: [] as Trace[] }),
    ]);
    return [...samePrompt.results, ...children.results, ...siblings.results];
  }, [projectId, trace.id, trace.prompt, trace.parent, branchKey]);

  const forest = useMemo(() => {
    const all = new Map<number, Node["t"]>();
    for (const t of related.data ?? []) all.set(t.id, t);
    all.set(trace.id, trace);
    // Branches announced live before the list reloads.
    for (const b of Object.values(branchInfo))
      if (!all.has(b.id))
        all.set(b.id, { id: b.id, status: b.status as Trace["status"], parent: trace.id, branch_step_index: b.branch_step_index });
    return buildForest([...all.values()]);
  }, [related.data, trace, branchInfo]);

  const render = (n: Node) => (
    <li key={n.t.id}>
      <div className={`branch${n.t.id === trace.id ? " current" : ""}`}>
        {n.t.id === trace.id ? (
          <strong>#{n.t.id}</strong>
        ) : (
          <Link to={paths.trace(projectId, n.t.id)}>#{n.t.id}</Link>
        )}
        <span className={`status s-${n.t.status}`}>{n.t.status}</span>
        {n.t.branch_step_index != null && <span className="muted">edited step {n.t.branch_step_index + 1}</span>}
        {n.t.id !== trace.id && n.t.parent === trace.id && (
          <button
            className="link"
            aria-pressed={compareId === n.t.id}
            onClick={() => onCompare(compareId === n.t.id ? null : n.t.id)}
          >
            {compareId === n.t.id ? "hide diff" : "diff"}
          </button>
        )}
      </div>
      {n.children.length > 0 && <ul>{n.children.map(render)}</ul>}
    </li>
  );
  return (
    <ul className="tree" data-testid="branches">
      {forest.map(render)}
    </ul>
  );
}

function stepsFrom(t: LiveTrace, k: number): string {
  return t.steps
    .filter((s) => s.index > k)
    .map((s) => s.text)
    .join("\n");
}

/** Compare `original` with `corrected` (a branch of it): the corrected step, then the rest. */
export function BranchDiff({
  projectId,
  originalId,
  correctedId,
  live,
}: {
  projectId: number;
  originalId: number;
  correctedId: number;
  /** The trace on screen, fresher than its REST copy while it streams. */
  live: LiveTrace;
}) {
  const load = useLoad(async () => {
    const get = (id: number): Promise<LiveTrace> =>
      id === live.id
        ? Promise.resolve(live)
        : api.get("/api/projects/{project_id}/traces/{trace_id}/", { params: { path: { project_id: projectId, trace_id: id } } });
    const [original, corrected, corrections] = await Promise.all([
      get(originalId),
      get(correctedId),
      api
        .get("/api/projects/{project_id}/traces/{trace_id}/corrections/", {
          params: { path: { project_id: projectId, trace_id: originalId } },
        })
        .catch(() => []),
    ]);
    return { original, corrected, correction: corrections.find((c) => c.corrected_trace === correctedId) ?? null };
    // the live trace changes with every token; refetching on status/steps is enough
  }, [projectId, originalId, correctedId, live.status, live.steps.length]);
  if (!load.data) return load.error ? <div className="muted">Diff unavailable: {load.error.message}</div> : null;
  const o = load.data.original.id === live.id ? live : load.data.original;
  const c = load.data.corrected.id === live.id ? live : load.data.corrected;
  const k = load.data.correction?.step_index ?? c.branch_step_index ?? 0;
  const oldText = load.data.correction?.old_text ?? o.steps.find((s) => s.index === k)?.text ?? "";
  const newText = load.data.correction?.new_text ?? c.steps.find((s) => s.index === k)?.text ?? "";
  return (
    <div className="branch-diff" data-testid="branch-diff">
      <h3>
        #{o.id} → #{c.id}: step {k + 1}
        {load.data.correction?.author && <span className="muted"> by {load.data.correction.author.username}</span>}
      </h3>
      {load.data.correction?.reason && <p className="muted">Reason: {load.data.correction.reason}</p>}
      <DiffView a={oldText} b={newText} testId="diff-step" />
      <h3>Rest of the chain</h3>
      <DiffView a={stepsFrom(o, k)} b={stepsFrom(c, k)} testId="diff-rest" />
      <h3>Answer</h3>
      <DiffView a={o.final_answer ?? ""} b={c.final_answer ?? ""} testId="diff-answer" />
    </div>
  );
}
