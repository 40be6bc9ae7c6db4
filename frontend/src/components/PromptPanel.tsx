import { api } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { messagesText } from "./common";

export function PromptPanel({ projectId, promptId }: { projectId: number; promptId: number }) {
  const p = useLoad(
    () => api.get("/api/projects/{project_id}/prompts/{prompt_id}/", { params: { path: { project_id: projectId, prompt_id: promptId } } }),
    [projectId, promptId],
  );
  if (p.error) return <div className="muted">Prompt #{promptId} could not be loaded: {p.error.message}</div>;
  if (!p.data) return null;
  const prompt = p.data;
  return (
    <div className="prompt" data-testid="prompt">
      {prompt.messages.map((m, i) => (
        <div key={i} className={`msg msg-${m.role}`}>
          <span className="role">{m.role}</span>
          <p className="msg-text">{messagesText([m])}</p>
        </div>
      ))}
      {prompt.images.length > 0 && (
        <div className="images">
          {prompt.images.map((im) => (
            <a key={im.id} href={im.url} target="_blank" rel="noreferrer">
              <img src={im.url} alt={im.original_name || `image ${im.position + 1}`} width={im.width} height={im.height} loading="lazy" />
            </a>
          ))}
        </div>
      )}
      {prompt.reference_answer && (
        <details>
          <summary>Reference answer</summary>
          <p className="msg-text">{prompt.reference_answer}</p>
        </details>
      )}
      <span className="muted small">category: {prompt.category}</span>
    </div>
  );
}
