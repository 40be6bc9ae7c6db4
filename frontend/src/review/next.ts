// The next-item flow: after a review is saved (or on `n`), open the next trace of your queue; with
// none left, start a generation for an assigned prompt that has no trace yet.
import { api } from "../lib/api";
import { navigate, paths } from "../lib/router";

export async function openNextItem(projectId: number, after: number | null, say: (m: string) => void): Promise<void> {
  const path = { project_id: projectId };
  try {
    const next = await api.get("/api/projects/{project_id}/queue/next/", {
      params: { path, query: { after: after ?? undefined } },
    });
    if (next.trace) {
      navigate(paths.trace(projectId, next.trace.id));
    } else if (next.prompt) {
      say(`Nothing left to review; generating prompt #${next.prompt.id} of your queue…`);
      const t = await api.post("/api/projects/{project_id}/traces/", { params: { path }, body: { prompt: next.prompt.id } });
      navigate(paths.trace(projectId, t.id));
    } else {
      say("Your queue is done: nothing left to review.");
    }
  } catch (e) {
    say(e instanceof Error ? e.message : String(e));
  }
}
