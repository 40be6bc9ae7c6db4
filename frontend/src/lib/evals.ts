// Evaluation results per model version. The REST shape is still being built, so accept the likely
// ones: GET /api/projects/{p}/evals/ → [{model_version, metric, value}], or the models list
// embedding `eval_results` ([{metric, value}]) or `evals` ({metric: value}).
import { api, ApiError } from "./api";
import type { ModelVersion } from "./types";

export type EvalTable = Map<number, Record<string, number>>;

export function evalsFromModels(models: ModelVersion[]): EvalTable {
  const t: EvalTable = new Map();
  for (const m of models) {
    const row: Record<string, number> = { ...(m.evals ?? {}) };
    for (const r of m.eval_results ?? []) row[r.metric] = r.value;
    if (Object.keys(row).length) t.set(m.id, row);
  }
  return t;
}

export async function loadEvals(projectId: number, models: ModelVersion[]): Promise<EvalTable> {
  const t = evalsFromModels(models);
  if (t.size) return t;
  try {
    const data = await api.list<{ model_version: number; metric: string; value: number }>(`/api/projects/${projectId}/evals/`);
    for (const r of data.results) {
      const row = t.get(r.model_version) ?? {};
      row[r.metric] = r.value;
      t.set(r.model_version, row);
    }
  } catch (e) {
    if (!(e instanceof ApiError && e.isMissing)) throw e;
  }
  return t;
}
