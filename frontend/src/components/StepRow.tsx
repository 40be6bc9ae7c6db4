// One step of a chain of thought. Model output is rendered only as React text nodes.
import { memo, useEffect, useRef, useState } from "react";
import type { UserBrief } from "../lib/api";
import type { LabelDraft } from "../review/useOptimisticLabels";
import type { LiveScore, LiveStep } from "../stream/protocol";
import { RATINGS } from "../lib/labels";
import { myLabel } from "../stream/reducer";

/** A scorer's short name: "rule" for the demo task's rule checker, else "prm:12" / "verifier:15". */
export function scorerName(scorer: string): string {
  return scorer === "rule:demo_task" ? "rule" : scorer;
}

/** Machine scores, shown apart from the supervisors' labels; a score under 0.5 is a warning. */
export function ScoreBadges({ scores }: { scores: readonly (Pick<LiveScore, "scorer" | "score" | "detail"> & Partial<LiveScore>)[] }) {
  if (scores.length === 0) return null;
  return (
    <span className="scores" data-testid="scores">
      {scores.map((s) => (
        <span
          key={s.scorer}
          className={`score${s.score < 0.5 ? " low" : ""}`}
          title={`${s.scorer === "rule:demo_task" ? "rule-based checker" : s.scorer}: ${s.detail}`}
        >
          {scorerName(s.scorer)} {s.score.toFixed(2)}
        </span>
      ))}
    </span>
  );
}

export interface StepRowProps {
  step: LiveStep;
  /** The machine scores of this step (empty: none). */
  scores?: readonly LiveScore[];
  selected: boolean;
  me: UserBrief | null;
  /** Your label as sent but not yet confirmed (optimistic): undefined none pending, null removed. */
  pending?: LabelDraft | null;
  canAct: boolean;
  safetyTags: readonly string[];
  editing: boolean;
  editText: string;
  // Handlers take the step index so the parent can pass stable functions (rows are memoised and
  // should not all re-render for every streamed token).
  onSelect: (index: number) => void;
  onRate: (index: number, rating: number | null) => void;
  onToggleTag: (index: number, tag: string) => void;
  onNote: (index: number, note: string) => void;
  onEditChange: (text: string) => void;
  onEditSubmit: () => void;
  onEditCancel: () => void;
}

function ratingCounts(step: LiveStep): Map<number | null, number> {
  const m = new Map<number | null, number>();
  for (const l of step.labels) m.set(l.rating ?? null, (m.get(l.rating ?? null) ?? 0) + 1);
  return m;
}

function StepRowImpl(p: StepRowProps) {
  const { step } = p;
  const saved = myLabel(step, p.me);
  const mine: LabelDraft | null =
    p.pending !== undefined ? p.pending : saved ? { rating: saved.rating ?? null, tags: saved.safety_tags ?? [], note: saved.note ?? "" } : null;
  const myRating = mine ? mine.rating : undefined;
  const counts = ratingCounts(step);
  const rowRef = useRef<HTMLLIElement>(null);
  const areaRef = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    if (p.selected) rowRef.current?.scrollIntoView?.({ block: "nearest" });
  }, [p.selected]);
  useEffect(() => {
    if (p.editing) areaRef.current?.focus();
  }, [p.editing]);
  const myTags: readonly string[] = mine?.tags ?? [];
  return (
    <li
      ref={rowRef}
      className={`step${p.selected ? " selected" : ""}${step.origin === "human" ? " human" : ""}`}
      data-testid={`step-${step.index}`}
      aria-current={p.selected ? "true" : undefined}
      onClick={() => p.onSelect(step.index)}
    >
      <span className="step-index" title={step.origin === "human" ? "written by a supervisor" : "model"}>
        {step.index + 1}
        {step.origin === "human" ? "✎" : ""}
      </span>
      <div className="step-body">
        {p.editing ? (
          <div className="edit">
            <textarea
              ref={areaRef}
              data-testid="edit-input"
              value={p.editText}
              rows={Math.max(2, Math.ceil(p.editText.length / 90))}
              onChange={(e) => p.onEditChange(e.target.value)}
              onKeyDown={(e) => {
                if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
                  e.preventDefault();
                  p.onEditSubmit();
                } else if (e.key === "Escape") {
                  e.preventDefault();
                  p.onEditCancel();
                }
              }}
            />
            <div className="edit-actions">
              <button className="primary" onClick={p.onEditSubmit} data-testid="edit-submit">
                Continue from here <kbd>Ctrl+Enter</kbd>
              </button>
              <button onClick={p.onEditCancel}>
                Cancel <kbd>Esc</kbd>
              </button>
            </div>
          </div>
        ) : (
          <>
            <p className="step-text">{step.text}</p>
            <ScoreBadges scores={p.scores ?? []} />
          </>
        )}
        {p.selected && p.canAct && !p.editing && (
          <div className="tags" aria-label="Safety tags">
            {p.safetyTags.map((t, n) => (
              <button
                title={n < 9 ? `Shift+${n + 1}` : undefined}
                key={t}
                className={`tag${myTags.includes(t) ? " on" : ""}`}
                aria-pressed={myTags.includes(t)}
                data-testid={`tag-${step.index}-${t}`}
                onClick={(e) => {
                  e.stopPropagation();
                  p.onToggleTag(step.index, t);
                }}
              >
                {t.replace(/_/g, " ")}
              </button>
            ))}
          </div>
        )}
        {p.selected && p.canAct && !p.editing && (
          <StepComment index={step.index} note={mine?.note ?? ""} onNote={p.onNote} />
        )}
        {!p.selected && mine?.note && <p className="muted small" data-testid={`note-${step.index}`}>{mine.note}</p>}
        {!p.selected && step.labels.some((l) => l.safety_tags?.length) && (
          <div className="tags muted">
            {[...new Set(step.labels.flatMap((l) => l.safety_tags ?? []))].map((t) => (
              <span key={t} className="tag on small">
                {t.replace(/_/g, " ")}
              </span>
            ))}
          </div>
        )}
      </div>
      <div className="rate" role="group" aria-label={`Rate step ${step.index + 1}`}>
        {RATINGS.map((r) => {
          const pressed = myRating !== undefined && myRating === r.value;
          const n = counts.get(r.value) ?? 0;
          return (
            <button
              key={r.key}
              className={`rate-btn r${r.key}${pressed ? " on" : ""}`}
              data-testid={`rate-${step.index}-${r.key}`}
              aria-pressed={pressed}
              title={r.title}
              disabled={!p.canAct}
              onClick={(e) => {
                e.stopPropagation();
                p.onRate(step.index, r.value);
              }}
            >
              {r.label}
              {n > 0 && <span className="count">{n}</span>}
            </button>
          );
        })}
      </div>
    </li>
  );
}

export const StepRow = memo(StepRowImpl);

/** Your comment on the selected step: saved on Enter or when the field loses focus. */
function StepComment({ index, note, onNote }: { index: number; note: string; onNote: (index: number, note: string) => void }) {
  const [text, setText] = useState(note);
  const [shown, setShown] = useState(note);
  if (note !== shown) {
    // Your saved comment changed elsewhere (an undo, another tab): show it.
    setShown(note);
    setText(note);
  }
  return (
    <input
      className="step-note"
      placeholder="Comment on this step (Enter saves)"
      aria-label={`Comment on step ${index + 1}`}
      data-testid={`note-input-${index}`}
      value={text}
      onClick={(e) => e.stopPropagation()}
      onChange={(e) => setText(e.target.value)}
      onBlur={() => onNote(index, text.trim())}
      onKeyDown={(e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          onNote(index, text.trim());
          (e.target as HTMLInputElement).blur();
        } else if (e.key === "Escape") {
          setText(note);
          (e.target as HTMLInputElement).blur();
        }
      }}
    />
  );
}

export function PartialStep({ text, index }: { text: string; index: number }) {
  return (
    <li className="step partial" data-testid="step-partial" aria-live="polite">
      <span className="step-index">{index + 1}</span>
      <div className="step-body">
        <p className="step-text">
          {text}
          <span className="caret" aria-hidden="true">
            ▍
          </span>
        </p>
      </div>
    </li>
  );
}
