// K candidate steps side by side, each with its machine scores: pick one (1…K, or its button), or
// write your own. Candidates are model output: rendered as React text nodes only.
import { useEffect, useRef, useState } from "react";
import type { AlternativeSet } from "../lib/api";
import { ScoreBadges } from "./StepRow";

export interface AlternativesPanelProps {
  set: AlternativeSet;
  canAct: boolean;
  onPick: (candidate: number) => void;
  onOwn: (text: string) => void;
  onClose: () => void;
  /** The branch the pick opened (a link is shown; the page also opens it). */
  branchHref?: string;
}

const NOT_PICKABLE: Record<string, string> = {
  end: "ends the reasoning here",
  incomplete: "cut off before the step ended",
};

/** Whether a candidate can be picked (the server refuses the others with `not_a_step`). */
export function pickable(c: AlternativeSet["candidates"][number]): boolean {
  return c.kind === "step" && c.text !== "";
}

export function AlternativesPanel({ set, canAct, onPick, onOwn, onClose, branchHref }: AlternativesPanelProps) {
  const [own, setOwn] = useState("");
  const picked = set.picked_text !== "";
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    // A block body: newer browsers return a promise from scrollIntoView, which is no effect cleanup.
    box.current?.scrollIntoView?.({ block: "nearest" });
  }, [set.id, set.status]);
  return (
    <div ref={box} className="alternatives" data-testid="alternatives" aria-label={`Alternatives for step ${set.step_index + 1}`}>
      <div className="alternatives-head">
        <strong>
          {set.k} alternatives for step {set.step_index + 1}
        </strong>{" "}
        <span className="muted small">seed {set.seed}</span>{" "}
        <button className="link" onClick={onClose} data-testid="alternatives-close">
          close
        </button>
      </div>
      {(set.status === "queued" || set.status === "running") && (
        <div className="muted" data-testid="alternatives-status">
          Sampling {set.k} candidates and scoring them…
        </div>
      )}
      {set.status === "failed" && (
        <div className="notice" role="alert" data-testid="alternatives-status">
          Could not sample alternatives: {set.error}
        </div>
      )}
      {set.status === "ready" && (
        <ol className="candidates">
          {set.candidates.map((c) => {
            const ok = pickable(c);
            const chosen = picked && set.picked === c.index;
            return (
              <li key={c.index} className={`candidate${ok ? "" : " not-pickable"}${chosen ? " chosen" : ""}`} data-testid="candidate">
                <div className="candidate-text">{ok ? c.text : <span className="muted">({NOT_PICKABLE[c.kind] ?? c.kind}) {c.text}</span>}</div>
                <ScoreBadges scores={c.scores} />
                {canAct && !picked && ok && (
                  <button onClick={() => onPick(c.index)} data-testid={`pick-${c.index + 1}`} title={`Pick this step (${c.index + 1})`}>
                    Pick <kbd>{c.index + 1}</kbd>
                  </button>
                )}
                {chosen && <span className="badge">picked</span>}
              </li>
            );
          })}
        </ol>
      )}
      {set.status === "ready" && canAct && !picked && (
        <form
          className="own-step"
          onSubmit={(e) => {
            e.preventDefault();
            if (own.trim()) onOwn(own.trim());
          }}
        >
          <input value={own} onChange={(e) => setOwn(e.target.value)} placeholder="…or write your own step" data-testid="own-step" />
          <button type="submit" disabled={!own.trim()}>
            Use mine
          </button>
        </form>
      )}
      {picked && (
        <div className="muted small" data-testid="alternatives-picked">
          {set.branch != null ? (
            <>
              Picked {set.picked != null ? `candidate ${set.picked + 1}` : "your own step"}: branch{" "}
              {branchHref ? <a href={branchHref}>#{set.branch}</a> : `#${set.branch}`} continues from it.
            </>
          ) : (
            "Picked the trace's own step: it is kept."
          )}
        </div>
      )}
    </div>
  );
}
