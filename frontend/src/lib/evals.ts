// Evaluation results per model version, from GET /api/projects/{p}/evals/ (every result of the
// project's model versions): model version id → {metric: value}.
import { api } from "./api";

export type EvalTable = Map<number, Record<string, number>>;

// A guided evaluation (best of K per step by a scorer) writes `guided.<metric>` beside each
// unguided `<metric>`, with its guide in the row's details.
export const GUIDED_PREFIX = "guided.";

/** Model version id → how its guided evaluation was guided, e.g. "best of 8 by rule:demo_task". */
export type EvalGuides = Map<number, string>;

export async function loadEvalsWithGuides(projectId: number): Promise<{ table: EvalTable; guides: EvalGuides }> {
  const rows = await api.get("/api/projects/{project_id}/evals/", { params: { path: { project_id: projectId } } });
  const table: EvalTable = new Map();
  const guides: EvalGuides = new Map();
  for (const r of rows) {
    const row = table.get(r.model_version) ?? {};
    row[r.metric] = r.value;
    table.set(r.model_version, row);
    const guide = (r.details as { guide?: { k?: unknown; by?: unknown } } | null)?.guide;
    if (r.metric.startsWith(GUIDED_PREFIX) && guide && typeof guide.k === "number" && typeof guide.by === "string")
      guides.set(r.model_version, `best of ${guide.k} by ${guide.by}`);
  }
  return { table, guides };
}

export async function loadEvals(projectId: number): Promise<EvalTable> {
  return (await loadEvalsWithGuides(projectId)).table;
}

/** A version's figure unguided and guided (either may be missing). */
export interface GuidedPair {
  unguided?: number;
  guided?: number;
}

/** `metric` of a version's results, unguided and guided; null when it has no guided figure. */
export function guidedPair(row: Record<string, number>, metric: string): GuidedPair | null {
  const guided = row[GUIDED_PREFIX + metric];
  if (guided === undefined) return null;
  return { unguided: row[metric], guided };
}

// Per-class metrics are named `<class>.<metric>` (e.g. `planted.accuracy`, `benign.refusal_rate`).
// The classes come from the names, so a project with other classes shows them too.
export const CLASS_METRICS = ["accuracy", "refusal_rate", "mean_cot_tokens", "n"] as const;
export type ClassMetric = (typeof CLASS_METRICS)[number];
export type ClassRow = Partial<Record<ClassMetric, number>>;

/** The demo task's classes, in display order; other classes follow in name order. */
export const KNOWN_CLASSES = ["general", "planted", "padded", "unsafe", "disguised", "benign"];

/** A version's `<class>.<metric>` results: class → {metric: value}. Overall metrics are left out. */
export function classMetrics(row: Record<string, number>): Map<string, ClassRow> {
  const out = new Map<string, ClassRow>();
  for (const [name, value] of Object.entries(row)) {
    if (name.startsWith(GUIDED_PREFIX)) continue; // the guided figures have their own table
    const dot = name.lastIndexOf(".");
    if (dot <= 0) continue;
    const metric = name.slice(dot + 1);
    if (!(CLASS_METRICS as readonly string[]).includes(metric)) continue;
    const cls = name.slice(0, dot);
    const r = out.get(cls) ?? {};
    r[metric as ClassMetric] = value;
    out.set(cls, r);
  }
  return out;
}

/** The classes of several versions' results: the known ones in their order, then the rest by name. */
export function classesOf(rows: Iterable<Map<string, ClassRow>>): string[] {
  const seen = new Set<string>();
  for (const r of rows) for (const c of r.keys()) seen.add(c);
  const known = KNOWN_CLASSES.filter((c) => seen.has(c));
  const other = [...seen].filter((c) => !KNOWN_CLASSES.includes(c)).sort();
  return [...known, ...other];
}

/**
 * The versions to compare, from models in creation order: the base (the first with results and no
 * parent, else the first with results), then the latest `max - 1` others with results.
 */
export function pickVersions<T extends { id: number; parent?: number | null }>(models: T[], has: (m: T) => boolean, max = 4): T[] {
  const withResults = models.filter(has);
  if (withResults.length === 0) return [];
  const base = withResults.find((m) => m.parent == null) ?? withResults[0];
  const rest = withResults.filter((m) => m !== base);
  return [base, ...rest.slice(Math.max(0, rest.length - (max - 1)))];
}
