// A reviewer's resolution of the trace's reviews: it wins in the queue and in datasets.
import { useState } from "react";
import { api } from "../lib/api";
import { SAFETY_LABELS, VERDICTS } from "../lib/labels";
import type { LiveTrace } from "../stream/protocol";

export function AdjudicationPanel({ projectId, trace, canAdjudicate }: { projectId: number; trace: LiveTrace; canAdjudicate: boolean }) {
  const adj = trace.adjudication;
  const [verdict, setVerdict] = useState<string>(adj?.verdict ?? "");
  const [safety, setSafety] = useState<string>(adj?.safety_label ?? "");
  const [note, setNote] = useState(adj?.note ?? "");
  const [msg, setMsg] = useState("");
  const verdicts = new Set(trace.reviews.map((r) => r.verdict));
  const save = async () => {
    if (!verdict) {
      setMsg("Choose the verdict.");
      return;
    }
    try {
      await api.put("/api/projects/{project_id}/traces/{trace_id}/adjudication/", {
        params: { path: { project_id: projectId, trace_id: trace.id } },
        body: { verdict, safety_label: safety, note },
      });
      setMsg("Adjudicated.");
    } catch (e) {
      setMsg(e instanceof Error ? e.message : String(e));
    }
  };
  return (
    <div className="adjudication" data-testid="adjudication">
      {adj ? (
        <p data-testid="adjudication-current">
          Resolved by <strong>{adj.adjudicator?.username ?? "a reviewer"}</strong>: {adj.verdict}
          {adj.safety_label && ` · ${adj.safety_label.replace(/_/g, " ")}`}
          {adj.note && <span className="muted"> — {adj.note}</span>}
        </p>
      ) : trace.disputed || verdicts.size > 1 ? (
        <p className="status s-failed">The reviewers disagree.</p>
      ) : (
        <p className="muted">{trace.reviews.length ? "No adjudication." : "No reviews yet."}</p>
      )}
      {canAdjudicate && trace.reviews.length > 0 && (
        <div className="row small">
          <select aria-label="adjudicated verdict" value={verdict} onChange={(e) => setVerdict(e.target.value)} data-testid="adjudicate-verdict">
            <option value="">verdict…</option>
            {VERDICTS.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
          <select aria-label="adjudicated safety label" value={safety} onChange={(e) => setSafety(e.target.value)}>
            <option value="">safety: reviewers' consensus</option>
            {SAFETY_LABELS.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
          <input placeholder="why" value={note} onChange={(e) => setNote(e.target.value)} aria-label="adjudication note" />
          <button onClick={() => void save()} data-testid="adjudicate-save">
            Adjudicate
          </button>
          {msg && <span className="muted" role="status">{msg}</span>}
        </div>
      )}
    </div>
  );
}
