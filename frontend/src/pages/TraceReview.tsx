// The review screen: the live chain of thought, ratings, stop / edit / continue, the verdict, the
// branch tree with diffs, the prompt, the guidelines and who else is watching. The work is in hooks:
// the connection (stream/hooks.ts), your labels (review/useOptimisticLabels.ts), the step editor
// (review/useStepEdit.ts) and the keyboard (review/useReviewKeyboard.ts).
import { useCallback, useState } from "react";
import { BranchDiff, BranchTree } from "../components/BranchPanel";
import { ErrorState, Section } from "../components/common";
import { HelpOverlay } from "../components/HelpOverlay";
import { PromptPanel } from "../components/PromptPanel";
import { PartialStep, StepRow } from "../components/StepRow";
import { VerdictPanel, type ReviewFields } from "../components/VerdictPanel";
import { api, LOGIN_URL, safetyTagsEnumValues, type Project } from "../lib/api";
import { useLoad } from "../lib/hooks";
import { Link, navigate, paths } from "../lib/router";
import { useOptimisticLabels } from "../review/useOptimisticLabels";
import { useReviewKeyboard } from "../review/useReviewKeyboard";
import { useStepEdit } from "../review/useStepEdit";
import { useTraceConnection } from "../stream/hooks";
import { canAct as roleCanAct, displayPartial } from "../stream/reducer";

/** The project's safety tags (its label schema may narrow the studio's list); the same array on
 * every render, so the memoised step rows do not all re-render for each streamed token. */
function safetyTagsOf(project: Project | null): readonly string[] {
  const own = (project?.label_schema as { safety_tags?: unknown } | null)?.safety_tags;
  return Array.isArray(own) && own.every((t) => typeof t === "string") ? own : safetyTagsEnumValues;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

export function TraceReview({ projectId, traceId }: { projectId: number; traceId: number }) {
  // Everything on the screen belongs to one trace: another trace (a branch) starts afresh.
  return <TraceReviewPage key={traceId} projectId={projectId} traceId={traceId} />;
}

function TraceReviewPage({ projectId, traceId }: { projectId: number; traceId: number }) {
  const { conn, state, status: connStatus, lastError } = useTraceConnection(traceId);
  const project = useLoad(() => api.get("/api/projects/{project_id}/", { params: { path: { project_id: projectId } } }), [projectId]);
  const trace = state.trace;
  const me = state.me;
  const canAct = roleCanAct(state.role);
  const safetyTags = safetyTagsOf(project.data);

  const [selected, setSelected] = useState<number | null>(null);
  const [help, setHelp] = useState(false);
  const [notice, setNotice] = useState<string>("");
  const [compareId, setCompareId] = useState<number | null>(null);

  const fail = useCallback((e: unknown) => setNotice(message(e)), []);
  const act = useCallback((action: string, fields: Record<string, unknown> = {}) => conn.send(action, fields), [conn]);

  const labels = useOptimisticLabels({ state, canAct, send: act, onError: fail });
  const edit = useStepEdit({
    trace,
    canAct,
    send: act,
    onNotice: setNotice,
    onBranch: (id) => navigate(paths.trace(projectId, id)),
  });

  const { rate: rateLabel } = labels;
  const rate = useCallback(
    (index: number, rating: number | null) => {
      setSelected(index);
      rateLabel(index, rating);
    },
    [rateLabel],
  );
  const startEdit = (index: number) => {
    if (edit.start(index)) setSelected(index);
  };

  const stop = () => void act("stop").catch(fail);
  const cont = () => void act("continue").catch(fail);
  const start = () => void act("start", {}).catch(fail);

  const submitReview = async (f: ReviewFields) => {
    await act("review", {
      verdict: f.verdict,
      safety_label: f.safety_label,
      value_label: f.value_label,
      knowledge_label: f.knowledge_label,
      note: f.note,
    });
  };

  useReviewKeyboard({
    helpOpen: help,
    setHelp,
    steps: trace?.steps.map((s) => s.index) ?? [],
    selected,
    select: setSelected,
    rate,
    editing: edit.editing !== null,
    startEdit,
    cancelEdit: edit.cancel,
    submitEdit: () => void edit.submit(),
    status: trace?.status,
    stop,
    resume: cont,
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
          {lastError.detail} <button className="link" onClick={() => conn.clearError()}>dismiss</button>
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
                    pendingRating={labels.pending[s.index] ? labels.pending[s.index].rating : undefined}
                    canAct={canAct}
                    safetyTags={safetyTags}
                    editing={edit.editing?.index === s.index}
                    editText={edit.editing?.index === s.index ? edit.editing.text : ""}
                    onSelect={setSelected}
                    onRate={rate}
                    onToggleTag={labels.toggleTag}
                    onEditChange={edit.change}
                    onEditSubmit={edit.submit}
                    onEditCancel={edit.cancel}
                  />
                ))}
                {partial && <PartialStep text={partial} index={nextIndex} />}
                {trace.steps.length === 0 && !partial && <li className="muted">No steps yet.</li>}
              </ol>
            )}
            {edit.editing && (
              <input
                className="reason"
                placeholder="Why this correction? (optional)"
                value={edit.editing.reason}
                onChange={(e) => edit.setReason(e.target.value)}
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
