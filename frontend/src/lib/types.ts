// Shapes of the REST API (annotator/api/serializers.py) and of the live trace protocol
// (docs/websocket.md). Fields the server may not send yet are optional.

export type Role = "viewer" | "supervisor" | "owner";
export type TraceStatus = "queued" | "running" | "stopped" | "finished" | "failed";

export interface UserBrief {
  id: number;
  username: string;
}

export interface Project {
  id: number;
  name: string;
  guidelines: string;
  label_schema: Record<string, unknown>;
  generation_defaults: Record<string, unknown>;
  step_rule: string;
  serving_model: number | null;
  autotrain_policy: Record<string, unknown>;
  created_at: string;
  my_role: Role | null;
}

export interface PromptImage {
  id: number;
  position: number;
  content_type: string;
  width: number;
  height: number;
  original_name: string;
  url: string;
}

export interface ChatMessage {
  role: string;
  content: string | Array<{ type?: string; text?: string; [k: string]: unknown }>;
}

export interface Prompt {
  id: number;
  messages: ChatMessage[];
  category: string;
  reference_answer: string;
  metadata: Record<string, unknown>;
  images: PromptImage[];
  trace_count?: number;
  created_at: string;
}

export interface StepLabel {
  id: number;
  annotator: UserBrief;
  rating: number | null;
  safety_tags: string[];
  note: string;
  updated_at?: string;
}

export interface Step {
  id: number;
  index: number;
  text: string;
  origin: "model" | "human" | string;
  labels: StepLabel[];
  created_at?: string;
}

export interface TraceReview {
  id: number;
  annotator: UserBrief;
  verdict: "accept" | "reject" | string;
  safety_label: string;
  value_label: string;
  knowledge_label: string;
  note: string;
  updated_at?: string;
}

export interface Trace {
  id: number;
  prompt: number;
  model_version: number | null;
  parent: number | null;
  branch_step_index: number | null;
  sampling_params: Record<string, unknown>;
  seed: number | null;
  status: TraceStatus;
  finish_reason: string;
  final_answer: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  version: number;
  step_count?: number;
  error?: string;
  created_at: string;
  updated_at: string;
}

export interface TraceDetail extends Trace {
  steps: Step[];
  reviews: TraceReview[];
  branches: number[];
}

export interface Correction {
  id: number;
  original_trace?: number;
  corrected_trace?: number;
  step_index: number;
  old_text: string;
  new_text: string;
  reason?: string;
  author: UserBrief | null;
  created_at?: string;
}

export interface BranchInfo {
  id: number;
  branch_step_index: number;
  status: TraceStatus | string;
}

export interface ModelVersion {
  id: number;
  name: string;
  base_model: string;
  backend: string;
  parent: number | null;
  produced_by: number | null;
  notes: string;
  created_at: string;
  // Evaluation results, when the models endpoint embeds them (see lib/evals.ts).
  eval_results?: Array<{ metric: string; value: number }>;
  evals?: Record<string, number>;
}

export interface Dataset {
  id: number;
  name?: string;
  kind: string;
  filters: Record<string, unknown>;
  status: string;
  record_count: number;
  counts: Record<string, unknown>;
  sha256: string;
  error?: string;
  created_at?: string;
}

export interface TrainingRun {
  id: number;
  stage: string;
  status: string;
  progress: number;
  error: string;
  created_at: string;
  base_model?: number;
  output_model?: number | null;
}

export interface MetricPoint {
  step: number;
  name: string;
  value: number;
}

// ---- live trace protocol ----

export interface SnapshotMsg {
  type: "snapshot";
  seq: number;
  trace: TraceDetail;
  partial: string;
  answer: string;
  watchers: UserBrief[];
  role: Role | null;
  me?: UserBrief; // not in the protocol yet; used when present
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
  step: Step;
}
export interface StatusMsg {
  type: "trace.status";
  seq: number;
  status: TraceStatus;
  finish_reason?: string;
  final_answer?: string | null;
  version?: number;
  error?: string;
}
export interface LabelMsg {
  type: "label.updated";
  seq: number;
  step_index: number;
  label: StepLabel;
}
export interface ReviewMsg {
  type: "review.updated";
  seq: number;
  review: TraceReview;
}
export interface BranchMsg {
  type: "branch.created";
  seq: number;
  branch: BranchInfo;
  correction: Correction;
  version: number;
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
  [k: string]: unknown;
}
export interface ErrorMsg {
  type: "error";
  code: string;
  detail: string;
  request_id?: string | number;
}

export type SeqMsg = TokenMsg | StepMsg | StatusMsg | LabelMsg | ReviewMsg | BranchMsg;
export type ServerMsg = SnapshotMsg | SeqMsg | PresenceMsg | AckMsg | ErrorMsg;

export const RATINGS = [
  { key: "+1", value: 1 as number | null, label: "+1", title: "Good step" },
  { key: "0", value: 0 as number | null, label: "0", title: "Neutral step" },
  { key: "-1", value: -1 as number | null, label: "−1", title: "Wrong step" },
  { key: "unsure", value: null as number | null, label: "?", title: "Unsure" },
] as const;

export const SAFETY_LABELS = [
  ["safe_with_warning", "Safe with warning"],
  ["safe_without_risk", "Safe without risk"],
  ["safe_with_refusal", "Safe with refusal"],
  ["unsafe", "Unsafe"],
  ["unnecessary_refusal", "Unnecessary refusal"],
  ["illogical_completion", "Illogical completion"],
] as const;

export const DEFAULT_SAFETY_TAGS = [
  "harmful_content",
  "privacy",
  "deception",
  "bias",
  "self_harm",
  "illegal_activity",
  "other",
];
