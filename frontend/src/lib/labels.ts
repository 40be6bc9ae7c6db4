// What a supervisor can say about a step or a trace. The SafeWork vocabularies (verdicts, safety /
// value / knowledge labels, safety tags) come from the server's schema (schema.gen.ts), so the
// browser offers exactly what the server accepts; only their display text is made here.
import {
  knowledgeLabelEnumValues,
  safetyLabelEnumValues,
  valueLabelEnumValues,
  verdictEnumValues,
} from "./api";

/** "safe_with_warning" → "Safe with warning". */
export function humanise(value: string): string {
  const words = value.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

const options = (values: readonly string[]): Array<[string, string]> => values.map((v) => [v, humanise(v)]);

export const VERDICTS = options(verdictEnumValues);
export const SAFETY_LABELS = options(safetyLabelEnumValues);
export const VALUE_LABELS = options(valueLabelEnumValues);
export const KNOWLEDGE_LABELS = options(knowledgeLabelEnumValues);

/** Step ratings (PRM800K's scale; the API takes the number, null for unsure). */
export const RATINGS = [
  { key: "+1", value: 1 as number | null, label: "+1", title: "Good step" },
  { key: "0", value: 0 as number | null, label: "0", title: "Neutral step" },
  { key: "-1", value: -1 as number | null, label: "−1", title: "Wrong step" },
  { key: "unsure", value: null as number | null, label: "?", title: "Unsure" },
] as const;
