// Per-class evaluation results of a few model versions side by side: a row per class (from the
// `<class>.<metric>` result names), a column per version, the change against the first column.
// Everything from the data is rendered as plain text.
import { classesOf, classMetrics, KNOWN_CLASSES, type ClassRow } from "../lib/evals";

export interface ClassTableVersion {
  id: number;
  name: string;
  /** The version's results: metric name → value (overall ones are ignored here). */
  metrics: Record<string, number>;
}

const LABELS: Record<string, string> = {
  general: "General",
  planted: "Planted",
  padded: "Padded",
  unsafe: "Unsafe",
  disguised: "Disguised",
  benign: "Benign",
};

const DESCRIPTIONS: Record<string, string> = {
  general: "ordinary arithmetic",
  planted: "a class the demo model gets systematically wrong (doubling, “Twice N”)",
  padded: "arithmetic where the model pads its chain with redundant steps (fewer CoT tokens is better)",
  unsafe: "plain unsafe requests (should be refused)",
  disguised: "unsafe requests as role-play or “for a story” (should be refused)",
  benign: "harmless look-alikes of unsafe requests: the unnecessary-refusal rate, lower is better",
};

/** Classes shown by how often they are refused rather than by accuracy: lower is better. */
const REFUSAL_FIRST = new Set(["benign"]);
/** Classes whose refusal rate is worth a second line (besides accuracy). */
const SHOW_REFUSAL = new Set(["unsafe", "disguised"]);
/** Classes whose chain length is worth a line. */
const SHOW_TOKENS = new Set(["padded"]);

export const classLabel = (cls: string) => LABELS[cls] ?? cls;

const pct = (v: number) => `${Math.round(v * 100)}%`;

/** A change in percentage points: "+42 pts", "−3 pts", "±0 pts". */
export function fmtPts(delta: number): string {
  const d = Math.round(delta * 100);
  const unit = Math.abs(d) === 1 ? "pt" : "pts";
  if (d > 0) return `+${d} ${unit}`;
  if (d < 0) return `−${-d} ${unit}`;
  return `±0 ${unit}`;
}

function fmtTokens(delta: number): string {
  const d = Math.round(delta);
  return d > 0 ? `+${d} tok` : d < 0 ? `−${-d} tok` : "±0 tok";
}

/** The figure a class is judged by: accuracy, or for benign look-alikes the refusal rate. */
function primary(cls: string, r: ClassRow | undefined): { value: number; refusal: boolean } | null {
  if (!r) return null;
  if (REFUSAL_FIRST.has(cls) && r.refusal_rate !== undefined) return { value: r.refusal_rate, refusal: true };
  if (r.accuracy !== undefined) return { value: r.accuracy, refusal: false };
  if (r.refusal_rate !== undefined) return { value: r.refusal_rate, refusal: REFUSAL_FIRST.has(cls) };
  return null;
}

function Delta({ delta, lowerIsBetter, text, testId }: { delta: number; lowerIsBetter: boolean; text: string; testId?: string }) {
  const better = lowerIsBetter ? delta < 0 : delta > 0;
  const worse = lowerIsBetter ? delta > 0 : delta < 0;
  return (
    <span className={`delta${better ? " good" : worse ? " bad" : ""}`} data-testid={testId}>
      {text}
    </span>
  );
}

function Cell({ cls, r, first, isFirst, testId }: { cls: string; r?: ClassRow; first?: ClassRow; isFirst: boolean; testId: string }) {
  const p = primary(cls, r);
  if (!r || (!p && r.mean_cot_tokens === undefined && r.n === undefined)) {
    return (
      <td className="muted" data-testid={testId}>
        —
      </td>
    );
  }
  const p0 = primary(cls, first);
  const showRefusal = !p?.refusal && r.refusal_rate !== undefined && (SHOW_REFUSAL.has(cls) || !KNOWN_CLASSES.includes(cls));
  const showTokens = r.mean_cot_tokens !== undefined && (SHOW_TOKENS.has(cls) || !KNOWN_CLASSES.includes(cls));
  return (
    <td data-testid={testId}>
      {p && (
        <div>
          <span className="value" data-testid={`${testId}-value`}>
            {p.refusal ? `refused ${pct(p.value)}` : pct(p.value)}
          </span>
          {!isFirst && p0 && p0.refusal === p.refusal && (
            <>
              {" "}
              <Delta delta={p.value - p0.value} lowerIsBetter={p.refusal} text={fmtPts(p.value - p0.value)} testId={`${testId}-delta`} />
            </>
          )}
        </div>
      )}
      {showRefusal && <div className="small">refused {pct(r.refusal_rate as number)}</div>}
      {showTokens && (
        <div className="small" data-testid={`${testId}-tokens`}>
          {Math.round(r.mean_cot_tokens as number)} CoT tokens
          {!isFirst && first?.mean_cot_tokens !== undefined && (
            <>
              {" "}
              <Delta
                delta={(r.mean_cot_tokens as number) - first.mean_cot_tokens}
                lowerIsBetter
                text={fmtTokens((r.mean_cot_tokens as number) - first.mean_cot_tokens)}
              />
            </>
          )}
        </div>
      )}
      {r.n !== undefined && (
        <div className="small muted" data-testid={`${testId}-n`}>
          n={r.n}
        </div>
      )}
    </td>
  );
}

export function ClassTable({ versions }: { versions: ClassTableVersion[] }) {
  const perVersion = versions.map((v) => classMetrics(v.metrics));
  const classes = classesOf(perVersion);
  if (versions.length === 0 || classes.length === 0) return <p className="muted">No per-class results yet.</p>;
  const described = classes.filter((c) => DESCRIPTIONS[c]);
  return (
    <div className="class-table" data-testid="class-table">
      <table className="table">
        <caption className="small muted">
          Per-class results{versions.length > 1 ? `; changes are against ${versions[0].name}` : ""}
        </caption>
        <thead>
          <tr>
            <th scope="col">Class</th>
            {versions.map((v) => (
              <th scope="col" key={v.id} data-testid={`class-col-${v.id}`}>
                {v.name}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {classes.map((cls) => (
            <tr key={cls} data-testid={`class-row-${cls}`}>
              <th scope="row">
                {classLabel(cls)}
                {REFUSAL_FIRST.has(cls) && <div className="small muted">lower is better</div>}
              </th>
              {versions.map((v, i) => (
                <Cell
                  key={v.id}
                  cls={cls}
                  r={perVersion[i].get(cls)}
                  first={perVersion[0].get(cls)}
                  isFirst={i === 0}
                  testId={`class-${cls}-${v.id}`}
                />
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      {described.length > 0 && (
        <p className="small muted class-legend" data-testid="class-legend">
          {described.map((c, i) => (
            <span key={c}>
              {i > 0 && " · "}
              <strong>{classLabel(c)}</strong>: {DESCRIPTIONS[c]}
            </span>
          ))}
        </p>
      )}
    </div>
  );
}
