// The review screen: the live chain of thought, ratings, stop / edit / continue, the verdict, the
// branch tree with diffs, the prompt, the guidelines and who else is watching.
import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { BranchDiff, BranchTree } from "../components/BranchPanel";
import { ErrorState, Section } from "../components/common";
import { HelpOverlay } from "../components/HelpOverlay";
import { PromptPanel } from "../components/PromptPanel";
import { PartialStep, StepRow } from "../components/StepRow";
import { VerdictPanel, type ReviewFields } from "../components/VerdictPanel";
import { api, LOGIN_URL } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, navigate, paths } from "../lib/router";
import { DEFAULT_SAFETY_TAGS, type Project, type StepLabel } from "../lib/types";
import { ActionError, TraceConnection, type ConnStatus } from "../stream/connection";
import { canAct as roleCanAct, displayPartial, initialState, myLabel } from "../stream/reducer";

const idle = {
  subscribe: () => () => {},
  view: { state: initialState(null), status: "connecting" as ConnStatus, lastError: null },
};

function useTraceConnection(traceId: number) {
  const [conn, setConn] = useState<TraceConnection | null>(null);
  useEffect(() => {
    const c = new TraceConnection(traceId);
    setConn(c);
    c.connect();
    return () => c.close();
  }, [traceId]);
  const view = useSyncExternalStore(conn ? conn.subscribe : idle.subscribe, conn ? conn.getSnapshot : () => idle.view);
  return { conn: conn && conn.traceId === traceId ? conn : null, ...view };
}

function isTyping(el: EventTarget | null): boolean {
  const t = el as HTMLElement | null;
  if (!t || !t.tagName) return false;
  return t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable;
}

export function TraceReview({ projectId, traceId }: { projectId: number; traceId: number }) {
  const { conn, state, status: connStatus, lastError } = useTraceConnection(traceId);
  const project = useLoad(() => api.get<Project>(`/api/projects/${projectId}/`), [projectId]);
  const trace = state.trace;
  const me = state.me;
  const canAct = roleCanAct(state.role);

  const [selected, setSelected] = useState<number | null>(null);
  const [editing, setEditing] = useState<{ index: number; text: string; reason: string } | null>(null);
  const [help, setHelp] = useState(false);
  const [notice, setNotice] = useState<string>("");
  const [pending, setPending] = useState<Record<number, { rating: number | null; tags?: string[] }>>({});
  const [compareId, setCompareId] = useState<number | null>(null);

  useEffect(() => {
    // A new trace (e.g. after navigating to a branch): drop per-trace UI state.
    setSelected(null);
    setEditing(null);
    setPending({});
    setCompareId(null);
    setNotice("");
  }, [traceId]);

  const safetyTags =
    (Array.isArray(project.data?.label_schema?.safety_tags) && (project.data?.label_schema.safety_tags as string[])) ||
    DEFAULT_SAFETY_TAGS;

  // Latest values for the stable handlers below.
  const latest = useRef({ conn, state, pending, selected, editing, canAct });
  latest.current = { conn, state, pending, selected, editing, canAct };

  const fail = (e: unknown) => setNotice(e instanceof Error ? e.message : String(e));

  const act = useCallback(async (action: string, fields: Record<string, unknown> = {}) => {
    const c = latest.current.conn;
    if (!c) throw new ActionError("disconnected", "Not connected.");
    return c.send(action, fields);
  }, []);

  const currentLabel = (index: number): { rating: number | null; tags: string[] } => {
    const { state: s, pending: p } = latest.current;
    const step = s.trace?.steps.find((x) => x.index === index);
    const mine: StepLabel | undefined = step ? myLabel(step, s.me) : undefined;
    return {
      rating: p[index] ? p[index].rating : (mine?.rating ?? null),
      tags: p[index]?.tags ?? mine?.safety_tags ?? [],
    };
  };

  const rate = useCallback((index: number, rating: number | null) => {
    if (!latest.current.canAct) return;
    const { tags } = currentLabel(index);
    setSelected(index);
    setPending((p) => ({ ...p, [index]: { rating, tags } }));
    act("label", { step_index: index, rating, safety_tags: tags, note: "" }).catch((e) => {
      setPending((p) => {
        const copy = { ...p };
        delete copy[index];
        return copy;
      });
      fail(e);
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const toggleTag = useCallback((index: number, tag: string) => {
    if (!latest.current.canAct) return;
    const cur = currentLabel(index);
    const tags = cur.tags.includes(tag) ? cur.tags.filter((t) => t !== tag) : [...cur.tags, tag];
    setPending((p) => ({ ...p, [index]: { rating: cur.rating, tags } }));
    act("label", { step_index: index, rating: cur.rating, safety_tags: tags, note: "" }).catch(fail);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const select = useCallback((index: number) => setSelected(index), []);

  const startEdit = (index: number) => {
    const step = trace?.steps.find((s) => s.index === index);
    if (!step || !canAct) return;
    setSelected(index);
    setEditing({ index, text: step.text, reason: "" });
  };

  const submitEdit = useCallback(async () => {
    const { editing: ed, state: s } = latest.current;
    if (!ed || !s.trace) return;
    if (!ed.text.trim()) {
      setNotice("The corrected step is empty.");
      return;
    }
    setNotice("Creating the branch…");
    try {
      const ack = await act("edit", {
        step_index: ed.index,
        text: ed.text,
        expected_version: s.trace.version,
        reason: ed.reason,
      });
      setNotice("");
      if (ack.branch?.id) navigate(paths.trace(projectId, ack.branch.id));
    } catch (e) {
      if (e instanceof ActionError && e.code === "stale_version")
        setNotice("Someone changed this trace while you were editing. Your text is kept; check the steps and submit again.");
      else fail(e);
    }
  }, [act, projectId]);

  const cancelEdit = useCallback(() => setEditing(null), []);
  const editChange = useCallback((text: string) => setEditing((e) => (e ? { ...e, text } : e)), []);

  const stop = () => act("stop").catch(fail);
  const cont = () => act("continue").catch(fail);
  const start = () => act("start", {}).catch(fail);

  const submitReview = async (f: ReviewFields) => {
    await act("review", {
      verdict: f.verdict,
      safety_label: f.safety_label,
      value_label: f.value_label,
      knowledge_label: f.knowledge_label,
      note: f.note,
    });
  };

  // Keyboard: one listener on the window; typing in a field is left alone.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const { state: s, selected: sel, editing: ed } = latest.current;
      if (help) {
        if (e.key === "Escape" || e.key === "?") {
          e.preventDefault();
          setHelp(false);
        }
        return;
      }
      if (isTyping(e.target)) return; // the edit textarea handles its own Ctrl+Enter / Esc
      const steps = s.trace?.steps ?? [];
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        if (ed) void submitEdit();
        else if (s.trace?.status === "stopped") void cont();
        return;
      }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const pos = sel === null ? -1 : steps.findIndex((x) => x.index === sel);
      switch (e.key) {
        case "j":
          if (steps.length) setSelected(steps[Math.min(steps.length - 1, pos + 1)].index);
          break;
        case "k":
          if (steps.length) setSelected(steps[Math.max(0, pos < 0 ? 0 : pos - 1)].index);
          break;
        case "1":
        case "2":
        case "3":
        case "4":
          if (sel !== null) rate(sel, ({ "1": 1, "2": 0, "3": -1, "4": null } as const)[e.key]);
          break;
        case "e":
          if (sel !== null) {
            e.preventDefault(); // keep the "e" out of the textarea that opens
            startEdit(sel);
          }
          break;
        case "Escape":
          if (ed) setEditing(null);
          else if (s.trace?.status === "running") void stop();
          break;
        case "?":
          setHelp(true);
          break;
        default:
          return;
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  });

  if (connStatus === "denied") {
    return (
      <div className="page">
        <div className="notice" role="alert">
          <p>{lastError?.detail}</p>
          {lastError?.code === "unauthenticated" ? <a href={LOGIN_URL}>Log in</a> : <Link to={paths.queue(projectId)}>Back to the queue</Link>}
        </div>
      </div>
    );
  }

  const running = trace?.status === "running";
  const partial = displayPartial(state.partial);
  const nextIndex = trace ? (trace.steps.length ? trace.steps[trace.steps.length - 1].index + 1 : 0) : 0;

  return (
    <div className="page trace-page">
      <header className="page-head">
        <nav className="crumbs">
          <Link to={paths.projects()}>Projects</Link> / <Link to={paths.queue(projectId)}>{project.data?.name ?? `Project ${projectId}`}</Link> / Trace #{traceId}
          {trace?.parent != null && (
            <>
              {" "}
              (branch of <Link to={paths.trace(projectId, trace.parent)}>#{trace.parent}</Link>)
            </>
          )}
        </nav>
        <div className="toolbar">
          <span className={`status s-${trace?.status ?? "loading"}`} data-testid="trace-status">
            {trace?.status ?? "loading"}
          </span>
          <span className={`conn conn-${connStatus}`} title="live connection" data-testid="conn-status">
            {connStatus === "open" ? "live" : connStatus}
          </span>
          {trace?.status === "queued" && canAct && (
            <button onClick={start} data-testid="start">
              Start
            </button>
          )}
          <button className="danger" data-testid="stop" onClick={stop} disabled={!running || !canAct} title="Stop generation (Esc)">
            Stop <kbd>Esc</kbd>
          </button>
          {trace?.status === "stopped" && canAct && (
            <button className="primary" onClick={cont} data-testid="continue" title="Continue (Ctrl+Enter)">
              Continue <kbd>Ctrl+Enter</kbd>
            </button>
          )}
          <span className="watchers" data-testid="watchers" title="Watching now">
            {state.watchers.length === 0 ? "no one watching" : `watching: ${state.watchers.map((w) => w.username).join(", ")}`}
          </span>
          <button className="link" onClick={() => setHelp(true)} aria-label="Keyboard shortcuts">
            ?
          </button>
        </div>
      </header>

      {notice && (
        <div className="notice" role="status" data-testid="notice">
          {notice} <button className="link" onClick={() => setNotice("")}>dismiss</button>
        </div>
      )}
      {lastError && !notice && (
        <div className="notice" role="alert" data-testid="action-error">
          {lastError.detail} <button className="link" onClick={() => conn?.clearError()}>dismiss</button>
        </div>
      )}

      <div className="columns">
        <main className="main-col">
          {trace && (
            <Section title="Prompt">
              <PromptPanel projectId={projectId} promptId={trace.prompt} />
            </Section>
          )}
          <Section
            title="Chain of thought"
            aside={
              trace && (
                <span className="muted small">
                  v{trace.version} · {trace.steps.length} steps{trace.finish_reason ? ` · ${trace.finish_reason}` : ""}
                </span>
              )
            }
          >
            {!trace ? (
              <div className="muted">Connecting…</div>
            ) : (
              <ol className="steps">
                {trace.steps.map((s) => (
                  <StepRow
                    key={s.index}
                    step={s}
                    selected={selected === s.index}
                    me={me}
                    pendingRating={pending[s.index] ? pending[s.index].rating : undefined}
                    canAct={canAct}
                    safetyTags={safetyTags}
                    editing={editing?.index === s.index}
                    editText={editing?.index === s.index ? editing.text : ""}
                    onSelect={select}
                    onRate={rate}
                    onToggleTag={toggleTag}
                    onEditChange={editChange}
                    onEditSubmit={submitEdit}
                    onEditCancel={cancelEdit}
                  />
                ))}
                {partial && <PartialStep text={partial} index={nextIndex} />}
                {trace.steps.length === 0 && !partial && <li className="muted">No steps yet.</li>}
              </ol>
            )}
            {editing && (
              <input
                className="reason"
                placeholder="Why this correction? (optional)"
                value={editing.reason}
                onChange={(e) => setEditing({ ...editing, reason: e.target.value })}
                data-testid="edit-reason"
              />
            )}
            {trace && (state.answer || trace.final_answer) && (
              <div className="answer" data-testid="final-answer">
                <h3>Answer</h3>
                <p className="step-text">{state.answer || trace.final_answer}</p>
              </div>
            )}
            {trace?.error && <div className="notice">Generation failed: {trace.error}</div>}
          </Section>
        </main>
        <aside className="side-col">
          <Section title="Verdict">
            {trace && <VerdictPanel reviews={trace.reviews} me={me} canAct={canAct} onSubmit={submitReview} />}
          </Section>
          <Section title="Branches and other generations">
            {trace && (
              <>
                <BranchTree
                  projectId={projectId}
                  trace={trace}
                  branchInfo={state.branchInfo}
                  compareId={compareId}
                  onCompare={setCompareId}
                />
                {compareId != null ? (
                  <BranchDiff projectId={projectId} originalId={trace.id} correctedId={compareId} live={trace} />
                ) : trace.parent != null ? (
                  <BranchDiff projectId={projectId} originalId={trace.parent} correctedId={trace.id} live={trace} />
                ) : null}
              </>
            )}
          </Section>
          <Section title="Guidelines">
            {project.error ? (
              <ErrorState error={project.error} what="Guidelines" />
            ) : (
              <div className="guidelines">{project.data?.guidelines || <span className="muted">No guidelines.</span>}</div>
            )}
          </Section>
        </aside>
      </div>
      {help && <HelpOverlay onClose={() => setHelp(false)} />}
    </div>
  );
}
