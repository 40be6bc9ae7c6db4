// Evaluation results per model version, from GET /api/projects/{p}/evals/ (every result of the
// project's model versions): model version id → {metric: value}.
import { api } from "./api";

export type EvalTable = Map<number, Record<string, number>>;

export async function loadEvals(projectId: number): Promise<EvalTable> {
  const rows = await api.get("/api/projects/{project_id}/evals/", { params: { path: { project_id: projectId } } });
  const t: EvalTable = new Map();
  for (const r of rows) {
    const row = t.get(r.model_version) ?? {};
    row[r.metric] = r.value;
    t.set(r.model_version, row);
  }
  return t;
}
