// The review screen: the live chain of thought, ratings, stop / edit / continue, the verdict, the
// branch tree with diffs, the prompt, the guidelines and who else is watching. The work is in hooks:
// the connection (stream/hooks.ts), your labels (review/useOptimisticLabels.ts), the step editor
// (review/useStepEdit.ts) and the keyboard (review/useReviewKeyboard.ts).
import { Fragment, useCallback, useRef, useState, useSyncExternalStore } from "react";
import { AdjudicationPanel } from "../components/AdjudicationPanel";
import { AlternativesPanel, pickable } from "../components/AlternativesPanel";
import { BranchDiff, BranchTree } from "../components/BranchPanel";
import { Guidelines } from "../components/Guidelines";
import { ErrorState, Section } from "../components/common";
import { HelpOverlay } from "../components/HelpOverlay";
import { PromptPanel } from "../components/PromptPanel";
import { PartialStep, ScoreBadges, StepRow } from "../components/StepRow";
import { VerdictPanel, type ReviewFields, type VerdictCommand } from "../components/VerdictPanel";
import { api, LOGIN_URL, safetyTagsEnumValues, type AlternativeSet, type Project } from "../lib/api";
import { useLoad, useNow } from "../lib/hooks";
import { Link, navigate, paths } from "../lib/router";
import { openNextItem } from "../review/next";
import { recordChange, subscribeUndo, undoDepth, undoLast } from "../review/undo";
import { useOptimisticLabels, type LabelDraft } from "../review/useOptimisticLabels";
import { useReviewKeyboard } from "../review/useReviewKeyboard";
import { useStepEdit } from "../review/useStepEdit";
import { useTraceConnection } from "../stream/hooks";
import { activeController, canAct as roleCanAct, displayPartial } from "../stream/reducer";

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
  // The set of alternatives on screen (its id; the set itself lives in the trace, kept by the events).
  const [openSetId, setOpenSetId] = useState<number | null>(null);

  const fail = useCallback((e: unknown) => setNotice(message(e)), []);
  const act = useCallback((action: string, fields: Record<string, unknown> = {}) => conn.send(action, fields), [conn]);
  // Time on this item, for the per-annotator median (sent with the review as lead_time_s).
  const [openedAt] = useState(() => performance.now());
  const undoCount = useSyncExternalStore(subscribeUndo, undoDepth);
  const now = useNow();
  const [command, setCommand] = useState<VerdictCommand | null>(null);
  const commandN = useRef(0);

  const recordLabel = useCallback(
    (index: number, before: LabelDraft | null) => recordChange({ kind: "label", projectId, traceId, index, before }),
    [projectId, traceId],
  );
  const labels = useOptimisticLabels({ state, canAct, send: act, onError: fail, onChange: recordLabel });
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
  const runToEnd = () => void act("continue", { mode: "live" }).catch(fail);
  const scoresOf = (index: number) => (trace?.scores ?? []).filter((s) => s.step_index === index);
  const start = () => void act("start", {}).catch(fail);

  const openSet = trace?.alternatives?.find((a) => a.id === openSetId) ?? null;
  const picking = canAct && openSet !== null && openSet.status === "ready" && openSet.picked_text === "";
  const askAlternatives = (index: number) => {
    if (!canAct) return;
    setSelected(index);
    void act("alternatives", { step_index: index, k: 4 }).then((ack) => setOpenSetId((ack.set as AlternativeSet).id), fail);
  };
  const sendPick = (fields: Record<string, unknown>) => {
    if (!openSet || !trace) return;
    void act("pick", { set: openSet.id, expected_version: trace.version, ...fields }).then((ack) => {
      const branch = (ack.set as AlternativeSet).branch;
      if (branch != null) navigate(paths.trace(projectId, branch)); // the branch opens, continuing from the pick
      else setNotice("You picked the trace's own step: it is kept.");
    }, fail);
  };
  const pick = (n: number) => {
    const c = openSet?.candidates.find((x) => x.index === n);
    if (!c) setNotice(`There is no candidate ${n + 1}.`);
    else if (!pickable(c)) setNotice(`Candidate ${n + 1} has no step to pick.`);
    else sendPick({ candidate: n });
  };

  const next = () => void openNextItem(projectId, traceId, setNotice);
  const undo = () =>
    void undoLast((entry) => {
      if (entry.kind !== "label" || entry.traceId !== traceId) return false;
      labels.restore(entry.index, entry.before);
      return true;
    }).then(
      (entry) => {
        if (!entry) setNotice("Nothing to undo.");
        else if (entry.traceId !== traceId) navigate(paths.trace(entry.projectId, entry.traceId));
        else setNotice(entry.kind === "label" ? `Undone: your label of step ${entry.index + 1}.` : "Undone: your review.");
      },
      fail,
    );

  const submitReview = async (f: ReviewFields) => {
    const mine = me ? trace?.reviews.find((r) => r.annotator?.id === me.id) : undefined;
    await act("review", {
      verdict: f.verdict,
      safety_label: f.safety_label,
      value_label: f.value_label,
      knowledge_label: f.knowledge_label,
      note: f.note,
      lead_time_s: Math.round((performance.now() - openedAt) / 100) / 10,
    });
    recordChange({
      kind: "review",
      projectId,
      traceId,
      before: mine
        ? { verdict: mine.verdict, safety_label: mine.safety_label, value_label: mine.value_label, knowledge_label: mine.knowledge_label, note: mine.note }
        : null,
    });
    next(); // the next item of your queue opens
  };
  const controller = activeController(state, now);
  const iControl = controller !== null && me !== null && controller.user.id === me.id;

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
    finishReason: trace?.finish_reason,
    acceptStep: cont,
    undo,
    next,
    verdict: (v) => setCommand({ kind: "verdict", value: v, n: ++commandN.current }),
    saveReview: () => setCommand({ kind: "save", n: ++commandN.current }),
    toggleTag: (index, n) => {
      if (n < safetyTags.length) labels.toggleTag(index, safetyTags[n]);
    },
    alternatives: canAct ? askAlternatives : undefined,
    picking,
    pick,
    closeAlternatives: openSet ? () => setOpenSetId(null) : undefined,
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
          <span className="controller" data-testid="controller">
            {controller ? (iControl ? "you control this trace" : `controlled by ${controller.user.username}`) : ""}
          </span>
          {controller && !iControl && canAct && (
            <button className="link" data-testid="request-control" onClick={() => void act("request_control").then(() => setNotice(`Asked ${controller.user.username} for control.`), fail)}>
              Request control
            </button>
          )}
          {iControl && (
            <button className="link" data-testid="release-control" onClick={() => void act("release").catch(fail)}>
              Release
            </button>
          )}
          {canAct && (
            <button
              onClick={() => {
                const index = selected ?? trace?.steps[trace.steps.length - 1]?.index;
                if (index !== undefined) askAlternatives(index);
              }}
              disabled={!trace?.steps.length}
              data-testid="ask-alternatives"
              title="Sample K candidate steps for the selected step (or the last one), scored side by side (a)"
            >
              Alternatives <kbd>a</kbd>
            </button>
          )}
          <button onClick={next} data-testid="next-item" title="Next item of your queue (n)">
            Next <kbd>n</kbd>
          </button>
          <button onClick={undo} disabled={undoCount === 0} data-testid="undo" title="Undo your last label or review change (Ctrl+Z)">
            Undo <kbd>Ctrl+Z</kbd>
          </button>
          <span className="watchers" data-testid="watchers" title="Watching now">
            {state.watchers.length === 0 ? "no one watching" : `watching: ${state.watchers.map((w) => w.username).join(", ")}`}
          </span>
          <button className="link" onClick={() => setHelp(true)} aria-label="Keyboard shortcuts">
            ?
          </button>
        </div>
      </header>

      {iControl && state.controlRequest && (
        <div className="notice" role="status" data-testid="control-request">
          {state.controlRequest.username} asks for control.{" "}
          <button className="link" onClick={() => void act("release").catch(fail)}>
            Give it
          </button>
        </div>
      )}
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
                  v{trace.version} · {trace.steps.length} steps{trace.finish_reason ? ` · ${trace.finish_reason}` : ""} ·{" "}
                  <span data-testid="trace-mode">
                    {trace.mode}
                    {trace.mode === "paced" && trace.pace_tps ? ` · ${trace.pace_tps} tok/s` : ""}
                  </span>
                </span>
              )
            }
          >
            {!trace ? (
              <div className="muted">Connecting…</div>
            ) : (
              <ol className="steps">
                {trace.steps.map((s) => (
                  <Fragment key={s.index}>
                  <StepRow
                    step={s}
                    scores={scoresOf(s.index)}
                    selected={selected === s.index}
                    me={me}
                    pending={s.index in labels.pending ? labels.pending[s.index] : undefined}
                    canAct={canAct}
                    safetyTags={safetyTags}
                    editing={edit.editing?.index === s.index}
                    editText={edit.editing?.index === s.index ? edit.editing.text : ""}
                    onSelect={setSelected}
                    onRate={rate}
                    onToggleTag={labels.toggleTag}
                    onNote={labels.setNote}
                    onEditChange={edit.change}
                    onEditSubmit={edit.submit}
                    onEditCancel={edit.cancel}
                  />
                  {openSet?.step_index === s.index && (
                    <li className="alternatives-row">
                      <AlternativesPanel
                        set={openSet}
                        canAct={canAct}
                        onPick={pick}
                        onOwn={(text) => sendPick({ text })}
                        onClose={() => setOpenSetId(null)}
                        branchHref={openSet.branch != null ? paths.trace(projectId, openSet.branch) : undefined}
                      />
                    </li>
                  )}
                  </Fragment>
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
                <ScoreBadges scores={scoresOf(-1)} />
              </div>
            )}
            {trace?.error && <div className="notice">Generation failed: {trace.error}</div>}
            {trace?.status === "stopped" && trace.pause_reason && (
              <div className="notice paused" role="status" data-testid="pause-reason">
                {trace.pause_reason}
                {canAct && (
                  <>
                    {" "}
                    <button className="primary" onClick={cont} data-testid="accept-step">
                      {trace.finish_reason === "step" ? <>Accept step <kbd>Enter</kbd></> : "Continue"}
                    </button>{" "}
                    <button
                      onClick={() => {
                        const last = trace.steps[trace.steps.length - 1];
                        if (last) askAlternatives(last.index);
                      }}
                      disabled={trace.steps.length === 0}
                      data-testid="pause-alternatives"
                      title="K other candidates for the step it paused at, scored side by side"
                    >
                      Alternatives <kbd>a</kbd>
                    </button>{" "}
                    <button onClick={runToEnd} data-testid="run-to-end">
                      Run to the end
                    </button>
                  </>
                )}
              </div>
            )}
          </Section>
        </main>
        <aside className="side-col">
          <Section title="Verdict">
            {trace && <VerdictPanel reviews={trace.reviews} me={me} canAct={canAct} onSubmit={submitReview} command={command} />}
          </Section>
          <Section title="Adjudication">
            {trace && (
              <AdjudicationPanel
                key={trace.adjudication?.updated_at ?? "none"}
                projectId={projectId}
                trace={trace}
                canAdjudicate={state.role === "reviewer" || state.role === "owner"}
              />
            )}
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
              <Guidelines text={project.data?.guidelines ?? ""} />
            )}
          </Section>
        </aside>
      </div>
      {help && <HelpOverlay onClose={() => setHelp(false)} />}
    </div>
  );
}
