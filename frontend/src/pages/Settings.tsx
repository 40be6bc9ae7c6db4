// The owner's page: guidelines (Markdown, previewed as the team will see it), members and roles,
// importing prompts (with the server's per-line report), and webhooks with their delivery log.
import { useState, type FormEvent } from "react";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { Guidelines } from "../components/Guidelines";
import { ProjectNav } from "../components/ProjectNav";
import { api, ApiError, roleEnumValues, type RoleEnum } from "../lib/api";
import { useLoad } from "../lib/hooks";

const say = (e: unknown) => (e instanceof Error ? e.message : String(e));

export function Settings({ projectId }: { projectId: number }) {
  const project = useLoad(() => api.get("/api/projects/{project_id}/", { params: { path: { project_id: projectId } } }), [projectId]);
  return (
    <div className="page">
      <ProjectNav projectId={projectId} tab="settings" />
      {project.error ? (
        <ErrorState error={project.error} what="Project" />
      ) : !project.data ? (
        <Loading />
      ) : project.data.my_role !== "owner" ? (
        <div className="notice calm">Only the project's owners change its settings.</div>
      ) : (
        <div className="columns">
          <main className="main-col">
            <GuidelinesEditor projectId={projectId} saved={project.data.guidelines} onSaved={project.reload} />
            <ImportPrompts projectId={projectId} />
            <Webhooks projectId={projectId} />
          </main>
          <aside className="side-col">
            <Members projectId={projectId} />
          </aside>
        </div>
      )}
    </div>
  );
}

function GuidelinesEditor({ projectId, saved, onSaved }: { projectId: number; saved: string; onSaved: () => void }) {
  const [text, setText] = useState(saved);
  const [msg, setMsg] = useState("");
  const save = async () => {
    try {
      await api.patch("/api/projects/{project_id}/", { params: { path: { project_id: projectId } }, body: { guidelines: text } });
      setMsg("Saved.");
      onSaved();
    } catch (e) {
      setMsg(say(e));
    }
  };
  return (
    <Section title="Guidelines">
      <div className="two">
        <textarea rows={10} value={text} onChange={(e) => setText(e.target.value)} aria-label="guidelines (Markdown)" data-testid="guidelines-input" />
        <div className="preview">
          <Guidelines text={text} />
        </div>
      </div>
      <div className="row">
        <button className="primary" onClick={() => void save()} disabled={text === saved} data-testid="guidelines-save">
          Save guidelines
        </button>
        {msg && <span className="muted" role="status">{msg}</span>}
      </div>
    </Section>
  );
}

function Members({ projectId }: { projectId: number }) {
  const path = { project_id: projectId };
  const members = useLoad(() => api.get("/api/projects/{project_id}/members/", { params: { path } }), [projectId]);
  const [username, setUsername] = useState("");
  const [role, setRole] = useState<RoleEnum>("supervisor");
  const [msg, setMsg] = useState("");
  const run = async (fn: () => Promise<unknown>) => {
    setMsg("");
    try {
      await fn();
      members.reload();
    } catch (e) {
      setMsg(say(e));
    }
  };
  const add = (e: FormEvent) => {
    e.preventDefault();
    void run(async () => {
      await api.post("/api/projects/{project_id}/members/", { params: { path }, body: { username, role } });
      setUsername("");
    });
  };
  return (
    <Section title="Members">
      {members.error ? (
        <ErrorState error={members.error} what="Members" />
      ) : !members.data ? (
        <Loading />
      ) : (
        <table className="table" data-testid="members">
          <tbody>
            {members.data.map((m) => (
              <tr key={m.id} data-testid={`member-${m.user.username}`}>
                <td>{m.user.username}</td>
                <td>
                  <select
                    aria-label={`role of ${m.user.username}`}
                    value={m.role}
                    onChange={(e) =>
                      void run(() =>
                        api.patch("/api/projects/{project_id}/members/{membership_id}/", {
                          params: { path: { ...path, membership_id: m.id } },
                          body: { role: e.target.value as RoleEnum },
                        }),
                      )
                    }
                  >
                    {roleEnumValues.map((r) => (
                      <option key={r} value={r}>
                        {r}
                      </option>
                    ))}
                  </select>
                </td>
                <td>
                  <button
                    className="link"
                    onClick={() => void run(() => api.delete("/api/projects/{project_id}/members/{membership_id}/", { params: { path: { ...path, membership_id: m.id } } }))}
                  >
                    remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form className="row small" onSubmit={add}>
        <input placeholder="username" value={username} onChange={(e) => setUsername(e.target.value)} aria-label="username to add" data-testid="member-username" />
        <select aria-label="role" value={role} onChange={(e) => setRole(e.target.value as RoleEnum)}>
          {roleEnumValues.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
        <button type="submit" disabled={!username} data-testid="member-add">
          Add
        </button>
      </form>
      {msg && (
        <div className="notice" role="alert">
          {msg}
        </div>
      )}
      <p className="muted small">No account yet? A site admin makes one, or an invite link (Projects page).</p>
    </Section>
  );
}

interface LineError {
  line: number;
  error: string;
}

function ImportPrompts({ projectId }: { projectId: number }) {
  const [file, setFile] = useState<File | null>(null);
  const [images, setImages] = useState<FileList | null>(null);
  const [msg, setMsg] = useState("");
  const [lineErrors, setLineErrors] = useState<LineError[]>([]);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!file) return;
    setMsg("Importing…");
    setLineErrors([]);
    const form = new FormData();
    form.append("file", file);
    for (const img of images ?? []) form.append("images", img);
    try {
      const result = await api.post("/api/projects/{project_id}/prompts/import/", {
        params: { path: { project_id: projectId } },
        // The typed client sends FormData as is (multipart); the schema describes the same fields.
        body: form as unknown as { file: string; images?: string[] },
        bodySerializer: (b: unknown) => b as FormData,
      });
      setMsg(`Imported ${result.imported} prompts.`);
    } catch (err) {
      const errors = err instanceof ApiError ? (err.body as { errors?: unknown })?.errors : null;
      if (Array.isArray(errors)) {
        setLineErrors(errors as LineError[]);
        setMsg(`Nothing was imported: ${errors.length} line(s) have problems.`);
      } else setMsg(say(err));
    }
  };
  return (
    <Section title="Import prompts">
      <form onSubmit={submit} className="row small">
        <label>
          JSONL <input type="file" accept=".jsonl,.json,.txt" onChange={(e) => setFile(e.target.files?.[0] ?? null)} data-testid="import-file" />
        </label>
        <label>
          images <input type="file" multiple accept="image/*" onChange={(e) => setImages(e.target.files)} />
        </label>
        <button type="submit" disabled={!file} data-testid="import-submit">
          Import
        </button>
      </form>
      <p className="muted small">
        One JSON object per line: {'{"prompt": "…"}'} or {'{"messages": [...]}'}, optional category, reference, images, metadata.
        A bad line imports nothing and is reported here.
      </p>
      {msg && (
        <p role="status" data-testid="import-result">
          {msg}
        </p>
      )}
      {lineErrors.length > 0 && (
        <table className="table small" data-testid="import-errors">
          <thead>
            <tr>
              <th>Line</th>
              <th>Problem</th>
            </tr>
          </thead>
          <tbody>
            {lineErrors.map((l) => (
              <tr key={l.line}>
                <td>{l.line}</td>
                <td>{l.error}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

const EVENTS = ["trace.reviewed", "correction.created", "snapshot.ready", "run.finished", "model.promoted"];

function Webhooks({ projectId }: { projectId: number }) {
  const path = { project_id: projectId };
  const hooks = useLoad(() => api.get("/api/projects/{project_id}/webhooks/", { params: { path } }), [projectId]);
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState<string[]>(EVENTS);
  const [secret, setSecret] = useState("");
  const [msg, setMsg] = useState("");
  const [open, setOpen] = useState<number | null>(null);
  const create = async (e: FormEvent) => {
    e.preventDefault();
    setMsg("");
    try {
      const made = await api.post("/api/projects/{project_id}/webhooks/", { params: { path }, body: { url, events } });
      setSecret(made.secret);
      setUrl("");
      hooks.reload();
    } catch (err) {
      setMsg(say(err));
    }
  };
  return (
    <Section title="Webhooks">
      {hooks.error ? (
        <ErrorState error={hooks.error} what="Webhooks" />
      ) : !hooks.data ? (
        <Loading />
      ) : (
        <ul className="webhooks" data-testid="webhooks">
          {hooks.data.map((h) => (
            <li key={h.id}>
              <code>{h.url}</code> <span className="muted small">{h.events.join(", ")}</span>{" "}
              {!h.active && <span className="muted">(paused)</span>}
              <button className="link" onClick={() => void api.post("/api/projects/{project_id}/webhooks/{webhook_id}/test/", { params: { path: { ...path, webhook_id: h.id } } }).then(() => setOpen(h.id), (e: unknown) => setMsg(say(e)))}>
                send test
              </button>
              <button className="link" onClick={() => setOpen(open === h.id ? null : h.id)}>
                deliveries
              </button>
              <button
                className="link"
                onClick={() => void api.patch("/api/projects/{project_id}/webhooks/{webhook_id}/", { params: { path: { ...path, webhook_id: h.id } }, body: { active: !h.active } }).then(hooks.reload, (e: unknown) => setMsg(say(e)))}
              >
                {h.active ? "pause" : "resume"}
              </button>
              <button className="link" onClick={() => void api.delete("/api/projects/{project_id}/webhooks/{webhook_id}/", { params: { path: { ...path, webhook_id: h.id } } }).then(hooks.reload, (e: unknown) => setMsg(say(e)))}>
                delete
              </button>
              {open === h.id && <Deliveries projectId={projectId} webhookId={h.id} />}
            </li>
          ))}
        </ul>
      )}
      <form onSubmit={create} className="row small">
        <input placeholder="https://…" size={36} value={url} onChange={(e) => setUrl(e.target.value)} aria-label="webhook URL" data-testid="webhook-url" />
        {EVENTS.map((ev) => (
          <label key={ev}>
            <input type="checkbox" checked={events.includes(ev)} onChange={(e) => setEvents((x) => (e.target.checked ? [...x, ev] : x.filter((y) => y !== ev)))} /> {ev}
          </label>
        ))}
        <button type="submit" disabled={!url} data-testid="webhook-add">
          Add webhook
        </button>
      </form>
      {secret && (
        <div className="notice" role="status" data-testid="webhook-secret">
          Signing secret (shown once; receivers verify the <code>webhook-signature</code> header with it): <code>{secret}</code>
        </div>
      )}
      {msg && (
        <div className="notice" role="alert">
          {msg}
        </div>
      )}
    </Section>
  );
}

function Deliveries({ projectId, webhookId }: { projectId: number; webhookId: number }) {
  const path = { project_id: projectId, webhook_id: webhookId };
  const log = useLoad(() => api.get("/api/projects/{project_id}/webhooks/{webhook_id}/deliveries/", { params: { path, query: { limit: 20 } } }), [projectId, webhookId]);
  if (log.error) return <ErrorState error={log.error} what="Deliveries" />;
  if (!log.data) return <Loading />;
  return (
    <table className="table small" data-testid={`deliveries-${webhookId}`}>
      <tbody>
        {log.data.results.map((d) => (
          <tr key={d.id}>
            <td>{d.event_type}</td>
            <td>
              <span className={`status s-${d.status === "delivered" ? "finished" : d.status === "failed" ? "failed" : "queued"}`}>{d.status}</span>
            </td>
            <td>{d.attempts} attempt(s)</td>
            <td className="muted">{d.last_error || (d.last_status_code ? `HTTP ${d.last_status_code}` : "")}</td>
            <td className="muted">{fmtDate(d.created_at)}</td>
            <td>
              {d.status === "failed" && (
                <button className="link" onClick={() => void api.post("/api/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry/", { params: { path: { ...path, delivery_id: d.id } } }).then(log.reload)}>
                  retry
                </button>
              )}
            </td>
          </tr>
        ))}
        <tr>
          <td colSpan={6}>
            <button className="link" onClick={log.reload}>
              refresh
            </button>
          </td>
        </tr>
      </tbody>
    </table>
  );
}
