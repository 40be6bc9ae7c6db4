import { useMemo } from "react";
import { wordDiff } from "../lib/diff";

/** Word-level diff rendered as text spans: deletions struck through, additions highlighted. */
export function DiffView({ a, b, testId }: { a: string; b: string; testId?: string }) {
  const ops = useMemo(() => wordDiff(a, b), [a, b]);
  return (
    <p className="diff" data-testid={testId}>
      {ops.map((o, i) =>
        o.op === "same" ? (
          <span key={i}>{o.text}</span>
        ) : o.op === "del" ? (
          <del key={i}>{o.text}</del>
        ) : (
          <ins key={i}>{o.text}</ins>
        ),
      )}
    </p>
  );
}
