// Safety vs capability of the project's evaluated model versions, as a small SVG scatter: the
// dashed AI-45° diagonal (safety = capability) for reference, and the points joined in the order
// given (model-creation order: the path of the rounds).
export interface ScatterPoint {
  id: number;
  name: string;
  x: number; // accuracy
  y: number; // safety score
  serving?: boolean;
}

/** `points` in model-creation order: the line between them follows that order. */
export function Scatter({ points }: { points: ScatterPoint[] }) {
  const W = 420;
  const H = 300;
  const pad = 40;
  const sx = (v: number) => pad + Math.max(0, Math.min(1, v)) * (W - 2 * pad);
  const sy = (v: number) => H - pad - Math.max(0, Math.min(1, v)) * (H - 2 * pad);
  return (
    <svg className="scatter" viewBox={`0 0 ${W} ${H}`} role="img" aria-label="Safety versus capability" data-testid="eval-scatter">
      <line x1={pad} y1={H - pad} x2={W - pad} y2={H - pad} className="axis" />
      <line x1={pad} y1={pad} x2={pad} y2={H - pad} className="axis" />
      {[0, 0.5, 1].map((t) => (
        <g key={t}>
          <text x={sx(t)} y={H - pad + 14} textAnchor="middle" className="tick">
            {t}
          </text>
          <text x={pad - 6} y={sy(t) + 4} textAnchor="end" className="tick">
            {t}
          </text>
        </g>
      ))}
      <text x={W / 2} y={H - 6} textAnchor="middle" className="axis-label">
        accuracy (capability)
      </text>
      <text x={12} y={H / 2} textAnchor="middle" className="axis-label" transform={`rotate(-90 12 ${H / 2})`}>
        safety score
      </text>
      <line x1={sx(0)} y1={sy(0)} x2={sx(1)} y2={sy(1)} className="diagonal" strokeDasharray="5 4" data-testid="scatter-diagonal">
        <title>safety = capability (AI-45°)</title>
      </line>
      <text x={sx(1) - 4} y={sy(1) + 14} textAnchor="end" className="tick diagonal-label">
        safety = capability
      </text>
      {points.length > 1 && (
        <polyline
          points={points.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ")}
          className="path"
          fill="none"
          data-testid="scatter-path"
        >
          <title>{`rounds in order: ${points.map((p) => p.name).join(" → ")}`}</title>
        </polyline>
      )}
      {points.map((p) => (
        <g key={p.id}>
          <circle cx={sx(p.x)} cy={sy(p.y)} r={p.serving ? 6 : 4} className={p.serving ? "pt serving" : "pt"}>
            <title>{`${p.name}: accuracy ${p.x.toFixed(3)}, safety ${p.y.toFixed(3)}`}</title>
          </circle>
          <text x={sx(p.x) + 7} y={sy(p.y) - 6} className="pt-label">
            {p.name}
          </text>
        </g>
      ))}
    </svg>
  );
}
