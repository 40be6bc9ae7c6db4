// The websocket protocols (docs/websocket.md, annotator/run_consumer.py). They are not part of the
// OpenAPI schema, so the frames are written out here; what they carry (traces, steps, labels,
// reviews, runs) are the REST types generated from the schema.
import type {
  AlternativeSet,
  Correction,
  MetricPoint,
  RoleEnum,
  Step,
  StepLabel,
  StepScore,
  TraceDetail,
  TraceReview,
  TraceStatusEnum,
  TrainingRun,
  UserBrief,
} from "../lib/api";

/** Close codes of a refused handshake (retrying cannot help). */
export const DENIED_CODES = new Set([4401, 4403, 4404]);

// What the socket sends is lighter than REST's copy of the same rows (no timestamps, no
// back-references): these types say what a live view can count on.
export type LiveLabel = Omit<StepLabel, "updated_at"> & { updated_at?: string };
export type LiveReview = Omit<TraceReview, "updated_at"> & { updated_at?: string };
export type LiveStep = Omit<Step, "created_at" | "labels"> & { created_at?: string; labels: LiveLabel[] };
/** A machine score of a step (step_index -1: the final answer); never a human label. */
export type LiveScore = Omit<StepScore, "created_at"> & { created_at?: string };
export type LiveCorrection = Pick<Correction, "id" | "step_index" | "old_text" | "new_text" | "author">;

/** A trace as the live view holds it: the snapshot's REST detail, updated by events. */
export type LiveTrace = Omit<TraceDetail, "steps" | "reviews" | "step_count" | "scores" | "alternatives"> & {
  steps: LiveStep[];
  scores: LiveScore[];
  reviews: LiveReview[];
  /** Sets of K candidate steps asked for on this trace (oldest first), updated by `trace.alternatives`. */
  alternatives?: AlternativeSet[];
  step_count?: number;
  /** Why generation failed, from `trace.status`. */
  error?: string;
};

export interface BranchInfo {
  id: number;
  branch_step_index: number;
  status: TraceStatusEnum | string;
}

// ---- /ws/traces/<id>/ ----

/** Who controls the live trace (annotator/services/claims.py) and until when, if idle. */
export interface Controller {
  user: UserBrief;
  expires_at: string;
}

export interface SnapshotMsg {
  type: "snapshot";
  seq: number;
  trace: LiveTrace;
  partial: string;
  answer: string;
  watchers: UserBrief[];
  role: RoleEnum | null;
  me?: UserBrief;
  controller?: Controller | null;
}
export interface TokenMsg {
  type: "trace.token";
  seq: number;
  text: string;
  phase: "think" | "answer";
  /** The server's own view of the open step / answer so far, when it sends them. */
  partial?: string;
  answer?: string;
}
export interface StepMsg {
  type: "trace.step";
  seq: number;
  step: LiveStep;
}
export interface StatusMsg {
  type: "trace.status";
  seq: number;
  status: TraceStatusEnum;
  finish_reason?: string;
  final_answer?: string | null;
  version?: number;
  error?: string;
  mode?: LiveTrace["mode"];
  /** Why the trace paused itself (step mode, or a score under the project's threshold). */
  pause_reason?: string;
}
export interface ScoreMsg {
  type: "trace.score";
  seq: number;
  scores: LiveScore[];
}
/** A set of alternatives was asked for, is being sampled, is ready (scored candidates), failed or was picked. */
export interface AlternativesMsg {
  type: "trace.alternatives";
  seq: number;
  set: AlternativeSet;
}
export interface LabelMsg {
  type: "label.updated";
  seq: number;
  step_index: number;
  label: LiveLabel;
}
export interface ReviewMsg {
  type: "review.updated";
  seq: number;
  review: LiveReview;
}
export interface BranchMsg {
  type: "branch.created";
  seq: number;
  branch: BranchInfo;
  correction: LiveCorrection;
  version: number;
}
export interface ClaimedMsg {
  type: "trace.claimed";
  seq: number;
  controller: UserBrief;
  expires_at: string;
  idle_s: number;
}
export interface ReleasedMsg {
  type: "trace.released";
  seq: number;
  by: UserBrief;
}
export interface ControlRequestedMsg {
  type: "control.requested";
  seq: number;
  by: UserBrief;
  controller: UserBrief;
}
export interface LabelRemovedMsg {
  type: "label.removed";
  seq: number;
  step_index: number;
  annotator: UserBrief;
}
export interface ReviewRemovedMsg {
  type: "review.removed";
  seq: number;
  annotator: UserBrief;
}
export interface AdjudicationMsg {
  type: "adjudication.updated";
  seq: number;
  adjudication: LiveTrace["adjudication"];
}
export interface PresenceMsg {
  type: "presence";
  watchers: UserBrief[];
}
export interface AckMsg {
  type: "ack";
  request_id?: string | number;
  action: string;
  branch?: { id: number };
  label?: LiveLabel;
  review?: LiveReview;
  [k: string]: unknown;
}
export interface ErrorMsg {
  type: "error";
  code: string;
  detail: string;
  request_id?: string | number;
}

export type SeqMsg =
  | TokenMsg
  | StepMsg
  | StatusMsg
  | ScoreMsg
  | AlternativesMsg
  | LabelMsg
  | ReviewMsg
  | BranchMsg
  | ClaimedMsg
  | ReleasedMsg
  | ControlRequestedMsg
  | LabelRemovedMsg
  | ReviewRemovedMsg
  | AdjudicationMsg;
export type ServerMsg = SnapshotMsg | SeqMsg | PresenceMsg | AckMsg | ErrorMsg;

// ---- /ws/runs/<id>/ (read-only; not sequenced: every connect starts with a snapshot) ----

export interface RunSnapshotMsg {
  type: "snapshot";
  run: TrainingRun;
  metrics: MetricPoint[];
  role?: RoleEnum | null;
}
export interface RunProgressMsg {
  type: "run.progress";
  progress: number;
  status: TrainingRun["status"];
  error?: string;
}
export interface RunMetricsMsg {
  type: "run.metrics";
  step: number;
  metrics: Record<string, number>;
}
export interface RunLogMsg {
  type: "run.log";
  line: string;
}
export type RunServerMsg = RunSnapshotMsg | RunProgressMsg | RunMetricsMsg | RunLogMsg | ErrorMsg;

// ---- /ws/projects/<id>/ (read-only, not sequenced: a page re-reads REST on "hello") ----

export interface ProjectEvent {
  type: "hello" | "queue.reviewed" | "queue.assigned" | "queue.adjudicated" | "queue.trace" | "run.finished" | string;
  [k: string]: unknown;
}
