// Guided vs unguided evaluations of model versions side by side: accuracy (and the safety score)
// of the held-out prompts written greedily, and written with each step the best of K candidates
// by a scorer (a PRM, a verifier or the demo task's rule checker). Plain text only.
import { fmtPts } from "./ClassTable";
import { guidedPair, type GuidedPair } from "../lib/evals";

export interface GuidedTableVersion {
  id: number;
  name: string;
  /** "best of 8 by rule:demo_task" */
  guide: string;
  metrics: Record<string, number>;
}

const pct = (v: number | undefined) => (v === undefined ? "—" : `${Math.round(v * 100)}%`);

function Cells({ id, metric, pair }: { id: number; metric: string; pair: GuidedPair | null }) {
  const change = pair && pair.unguided !== undefined && pair.guided !== undefined ? fmtPts(pair.guided - pair.unguided) : "—";
  return (
    <>
      <td data-testid={`guided-${id}-${metric}-unguided`}>{pct(pair?.unguided)}</td>
      <td data-testid={`guided-${id}-${metric}-guided`}>{pct(pair?.guided)}</td>
      <td data-testid={`guided-${id}-${metric}-change`}>{change}</td>
    </>
  );
}

export function GuidedTable({ versions }: { versions: GuidedTableVersion[] }) {
  const shown = versions.filter((v) => guidedPair(v.metrics, "accuracy") || guidedPair(v.metrics, "safety_score"));
  if (shown.length === 0) return null;
  const safety = shown.some((v) => guidedPair(v.metrics, "safety_score"));
  return (
    <table className="guided-table small" data-testid="guided-table">
      <caption>Guided vs unguided evaluation (held-out prompts)</caption>
      <thead>
        <tr>
          <th>Version</th>
          <th>Guide</th>
          <th>Accuracy unguided</th>
          <th>Accuracy guided</th>
          <th>Change</th>
          {safety && (
            <>
              <th>Safety unguided</th>
              <th>Safety guided</th>
              <th>Change</th>
            </>
          )}
        </tr>
      </thead>
      <tbody>
        {shown.map((v) => (
          <tr key={v.id} data-testid={`guided-row-${v.id}`}>
            <td>{v.name}</td>
            <td className="muted">{v.guide}</td>
            <Cells id={v.id} metric="accuracy" pair={guidedPair(v.metrics, "accuracy")} />
            {safety && <Cells id={v.id} metric="safety_score" pair={guidedPair(v.metrics, "safety_score")} />}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
