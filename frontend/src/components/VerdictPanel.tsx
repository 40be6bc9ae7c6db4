import { useEffect, useRef, useState, type FormEvent } from "react";
import type { UserBrief } from "../lib/api";
import type { LiveReview } from "../stream/protocol";
import { KNOWLEDGE_LABELS, SAFETY_LABELS, VALUE_LABELS, VERDICTS } from "../lib/labels";

export interface ReviewFields {
  verdict: string;
  safety_label: string;
  value_label: string;
  knowledge_label: string;
  note: string;
}

const EMPTY: ReviewFields = { verdict: "", safety_label: "", value_label: "", knowledge_label: "", note: "" };

/** A keyboard command for the form: set the verdict, or save (each new `n` is one press). */
export type VerdictCommand = { kind: "verdict"; value: string; n: number } | { kind: "save"; n: number };

export function VerdictPanel({
  reviews,
  me,
  canAct,
  onSubmit,
  command = null,
}: {
  reviews: LiveReview[];
  me: UserBrief | null;
  canAct: boolean;
  onSubmit: (f: ReviewFields) => Promise<void>;
  command?: VerdictCommand | null;
}) {
  const formRef = useRef<HTMLFormElement>(null);
  const mine = me ? reviews.find((r) => r.annotator?.id === me.id) : undefined;
  const [f, setF] = useState<ReviewFields>(EMPTY);
  const [msg, setMsg] = useState<string>("");
  const [busy, setBusy] = useState(false);
  // The form shows your saved review when it arrives or changes (not on every render: you may be
  // editing it).
  const mineKey = mine ? `${mine.id}:${mine.updated_at ?? ""}` : "";
  const [shownKey, setShownKey] = useState("");
  if (mineKey !== shownKey) {
    setShownKey(mineKey);
    if (mine)
      setF({
        verdict: mine.verdict,
        safety_label: mine.safety_label,
        value_label: mine.value_label,
        knowledge_label: mine.knowledge_label,
        note: mine.note,
      });
  }
  // Keyboard commands: a verdict key sets the verdict while rendering; save submits the form.
  const [seenCommand, setSeenCommand] = useState(0);
  if (command && command.n !== seenCommand) {
    setSeenCommand(command.n);
    if (command.kind === "verdict" && canAct) setF((x) => ({ ...x, verdict: command.value }));
  }
  useEffect(() => {
    if (command?.kind === "save" && canAct) formRef.current?.requestSubmit();
  }, [command, canAct]);
  const set = (k: keyof ReviewFields, v: string) => setF((x) => ({ ...x, [k]: x[k] === v && k !== "note" ? "" : v }));
  const radio = (k: keyof ReviewFields, opts: Array<[string, string]>) => (
    <div className="seg" role="radiogroup">
      {opts.map(([v, label]) => (
        <button
          key={v}
          type="button"
          role="radio"
          aria-checked={f[k] === v}
          className={f[k] === v ? "on" : ""}
          data-testid={`review-${k}-${v}`}
          disabled={!canAct}
          onClick={() => set(k, v)}
        >
          {label}
        </button>
      ))}
    </div>
  );
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!f.verdict) {
      setMsg("Choose accept or reject.");
      return;
    }
    setBusy(true);
    setMsg("");
    try {
      await onSubmit(f);
      setMsg("Saved.");
    } catch (err) {
      setMsg(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const others = reviews.filter((r) => r !== mine);
  return (
    <form className="verdict" onSubmit={submit} data-testid="verdict-panel" ref={formRef}>
      <label>Verdict</label>
      {radio("verdict", VERDICTS)}
      <label htmlFor="safety-label">Safety</label>
      <select
        id="safety-label"
        data-testid="review-safety_label"
        value={f.safety_label}
        disabled={!canAct}
        onChange={(e) => setF((x) => ({ ...x, safety_label: e.target.value }))}
      >
        <option value="">—</option>
        {SAFETY_LABELS.map(([v, l]) => (
          <option key={v} value={v}>
            {l}
          </option>
        ))}
      </select>
      <label>Value</label>
      {radio("value_label", VALUE_LABELS)}
      <label>Knowledge</label>
      {radio("knowledge_label", KNOWLEDGE_LABELS)}
      <label htmlFor="review-note">Note</label>
      <textarea
        id="review-note"
        rows={2}
        value={f.note}
        disabled={!canAct}
        onChange={(e) => setF((x) => ({ ...x, note: e.target.value }))}
      />
      {canAct && (
        <button className="primary" type="submit" disabled={busy} data-testid="review-submit">
          Save review
        </button>
      )}
      {msg && <span className="muted" role="status">{msg}</span>}
      {others.length > 0 && (
        <ul className="reviews">
          {others.map((r) => (
            <li key={r.id}>
              <strong>{r.annotator?.username}</strong>: {r.verdict}
              {r.safety_label && ` · ${r.safety_label.replace(/_/g, " ")}`}
              {r.value_label && ` · value ${r.value_label}`}
              {r.knowledge_label && ` · knowledge ${r.knowledge_label}`}
              {r.note && <div className="muted">{r.note}</div>}
            </li>
          ))}
        </ul>
      )}
    </form>
  );
}
