import { useState, type FormEvent } from "react";
import { ErrorState, fmtDate, Loading, Section } from "../components/common";
import { api, roleEnumValues, type RoleEnum } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, navigate, paths } from "../lib/router";

const say = (e: unknown) => (e instanceof Error ? e.message : String(e));

export function Projects() {
  const list = useLoad(() => api.get("/api/projects/", { params: { query: { limit: 200 } } }), []);
  const me = useLoad(() => api.get("/api/me/"), []);
  const [name, setName] = useState("");
  const [msg, setMsg] = useState("");
  const create = async (e: FormEvent) => {
    e.preventDefault();
    try {
      const p = await api.post("/api/projects/", { body: { name } });
      navigate(paths.settings(p.id));
    } catch (err) {
      setMsg(say(err));
    }
  };
  return (
    <div className="page">
      <h1>Projects</h1>
      {list.error ? (
        <ErrorState error={list.error} what="Projects" />
      ) : !list.data ? (
        <Loading />
      ) : list.data.results.length === 0 ? (
        <p className="muted">You are not a member of any project yet.</p>
      ) : (
        <table className="table" data-testid="project-list">
          <thead>
            <tr>
              <th>Project</th>
              <th>Your role</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {list.data.results.map((p) => (
              <tr key={p.id} data-testid={`project-${p.id}`}>
                <td>
                  <Link to={paths.queue(p.id)}>{p.name}</Link>
                </td>
                <td>
                  <span className={`role role-${p.my_role}`}>{p.my_role ?? "—"}</span>
                </td>
                <td className="links">
                  <Link to={paths.team(p.id)}>Team</Link> · <Link to={paths.runs(p.id)}>Training</Link> ·{" "}
                  <Link to={paths.datasets(p.id)}>Datasets</Link> · <Link to={paths.models(p.id)}>Models</Link>
                  {p.my_role === "owner" && (
                    <>
                      {" "}
                      · <Link to={paths.settings(p.id)}>Settings</Link>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Section title="New project">
        <form className="row" onSubmit={create}>
          <input placeholder="name" value={name} onChange={(e) => setName(e.target.value)} aria-label="new project name" data-testid="new-project-name" />
          <button type="submit" className="primary" disabled={!name.trim()} data-testid="new-project">
            Create project
          </button>
          <span className="muted small">You become its owner.</span>
        </form>
        {msg && <div className="notice">{msg}</div>}
      </Section>
      {me.data?.is_site_admin && list.data && <Accounts projects={list.data.results.map((p) => ({ id: p.id, name: p.name }))} />}
    </div>
  );
}

function Accounts({ projects }: { projects: Array<{ id: number; name: string }> }) {
  const invites = useLoad(() => api.get("/api/invites/", { params: { query: { limit: 20 } } }), []);
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [project, setProject] = useState(projects[0]?.id ?? 0);
  const [role, setRole] = useState<RoleEnum>("supervisor");
  const [link, setLink] = useState("");
  const [msg, setMsg] = useState("");
  const makeUser = async (e: FormEvent) => {
    e.preventDefault();
    setMsg("");
    try {
      const u = await api.post("/api/users/", { body: { username, password } });
      setMsg(`Created ${u.username}.`);
      setUsername("");
      setPassword("");
    } catch (err) {
      setMsg(say(err));
    }
  };
  const invite = async (e: FormEvent) => {
    e.preventDefault();
    setMsg("");
    try {
      const made = await api.post("/api/invites/", { body: { project, role } });
      setLink(made.link);
      invites.reload();
    } catch (err) {
      setMsg(say(err));
    }
  };
  return (
    <Section title="Accounts (site admin)">
      <form className="row small" onSubmit={makeUser}>
        <input placeholder="username" value={username} onChange={(e) => setUsername(e.target.value)} aria-label="new username" data-testid="new-user-name" />
        <input type="password" placeholder="password" value={password} onChange={(e) => setPassword(e.target.value)} aria-label="new user's password" />
        <button type="submit" disabled={!username || !password} data-testid="new-user">
          Create user
        </button>
      </form>
      <form className="row small" onSubmit={invite}>
        <span>Invite link to</span>
        <select aria-label="invite project" value={project} onChange={(e) => setProject(Number(e.target.value))}>
          {projects.map((p) => (
            <option key={p.id} value={p.id}>
              {p.name}
            </option>
          ))}
        </select>
        <span>as</span>
        <select aria-label="invite role" value={role} onChange={(e) => setRole(e.target.value as RoleEnum)}>
          {roleEnumValues.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
        <button type="submit" disabled={!project} data-testid="new-invite">
          Make invite link
        </button>
      </form>
      {link && (
        <div className="notice" role="status">
          One-time link (shown once; there is no mail server, so pass it on yourself): <code data-testid="invite-link">{link}</code>
        </div>
      )}
      {msg && <p role="status">{msg}</p>}
      {invites.data && invites.data.results.length > 0 && (
        <table className="table small">
          <tbody>
            {invites.data.results.map((i) => (
              <tr key={i.id}>
                <td>{i.project_name}</td>
                <td>{i.role}</td>
                <td>{i.state}</td>
                <td className="muted">{i.used_by ? `used by ${i.used_by.username}` : `expires ${fmtDate(i.expires_at)}`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}
