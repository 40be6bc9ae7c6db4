import { cleanup, render, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import type { EvalResult } from "../lib/api";
import { classMetrics, classesOf, pickVersions } from "../lib/evals";
import { ClassTable, fmtPts, type ClassTableVersion } from "./ClassTable";

afterEach(cleanup);

// Eval rows as GET /api/projects/{p}/evals/ returns them, for a base (1) and a trained version (2).
let nextId = 1;
function row(model_version: number, metric: string, value: number): EvalResult {
  return { id: nextId++, model_version, run: null, metric, value, details: {}, created_at: "2025-01-01T00:00:00Z" };
}
const rows: EvalResult[] = [
  row(1, "accuracy", 0.6),
  row(1, "safety_score", 0.5),
  row(1, "general.accuracy", 0.9),
  row(1, "general.n", 40),
  row(1, "planted.accuracy", 0.1),
  row(1, "planted.n", 20),
  row(1, "padded.accuracy", 0.8),
  row(1, "padded.mean_cot_tokens", 310),
  row(1, "unsafe.accuracy", 0.5),
  row(1, "unsafe.refusal_rate", 0.5),
  row(1, "benign.accuracy", 0.7),
  row(1, "benign.refusal_rate", 0.3),
  row(1, "disguised.accuracy", 0.2),
  row(1, "<b>odd</b>.accuracy", 0.25),
  row(2, "accuracy", 0.8),
  row(2, "general.accuracy", 0.87),
  row(2, "general.n", 40),
  row(2, "planted.accuracy", 0.52),
  row(2, "padded.accuracy", 0.8),
  row(2, "padded.mean_cot_tokens", 190),
  row(2, "unsafe.accuracy", 0.95),
  row(2, "unsafe.refusal_rate", 0.95),
  row(2, "benign.accuracy", 0.9),
  row(2, "benign.refusal_rate", 0.1),
  row(2, "disguised.accuracy", 0.85),
  row(2, "<b>odd</b>.accuracy", 0.5),
];

function versions(): ClassTableVersion[] {
  const metrics = new Map<number, Record<string, number>>();
  for (const r of rows) metrics.set(r.model_version, { ...metrics.get(r.model_version), [r.metric]: r.value });
  return [
    { id: 1, name: "base", metrics: metrics.get(1)! },
    { id: 2, name: "round-1", metrics: metrics.get(2)! },
  ];
}

describe("ClassTable", () => {
  it("has a row per class, known ones in order and unknown ones after", () => {
    render(<ClassTable versions={versions()} />);
    const table = screen.getByTestId("class-table");
    const names = within(table)
      .getAllByRole("row")
      .slice(1)
      .map((r) => r.getAttribute("data-testid"));
    expect(names).toEqual([
      "class-row-general",
      "class-row-planted",
      "class-row-padded",
      "class-row-unsafe",
      "class-row-disguised",
      "class-row-benign",
      "class-row-<b>odd</b>",
    ]);
    expect(screen.getByTestId("class-col-1").textContent).toBe("base");
    expect(screen.getByTestId("class-col-2").textContent).toBe("round-1");
  });

  it("shows accuracy as a percentage and the change against the first column", () => {
    render(<ClassTable versions={versions()} />);
    expect(screen.getByTestId("class-planted-1-value").textContent).toBe("10%");
    expect(screen.getByTestId("class-planted-2-value").textContent).toBe("52%");
    expect(screen.getByTestId("class-planted-2-delta").textContent).toBe("+42 pts");
    expect(screen.getByTestId("class-planted-2-delta").className).toContain("good");
    expect(screen.getByTestId("class-general-2-delta").textContent).toBe("−3 pts");
    expect(screen.getByTestId("class-general-2-delta").className).toContain("bad");
    expect(screen.getByTestId("class-padded-2-delta").textContent).toBe("±0 pts");
    expect(screen.queryByTestId("class-planted-1-delta")).toBeNull(); // the first column has no change
  });

  it("shows benign as a refusal rate (lower is better), padded with CoT tokens, and n", () => {
    render(<ClassTable versions={versions()} />);
    expect(screen.getByTestId("class-benign-1-value").textContent).toBe("refused 30%");
    expect(screen.getByTestId("class-benign-2-value").textContent).toBe("refused 10%");
    const d = screen.getByTestId("class-benign-2-delta");
    expect(d.textContent).toBe("−20 pts");
    expect(d.className).toContain("good");
    expect(screen.getByTestId("class-row-benign").textContent).toContain("lower is better");
    expect(screen.getByTestId("class-padded-1-tokens").textContent).toContain("310 CoT tokens");
    expect(screen.getByTestId("class-padded-2-tokens").textContent).toContain("−120 tok");
    expect(screen.getByTestId("class-general-1-n").textContent).toBe("n=40");
    expect(screen.queryByTestId("class-padded-1-n")).toBeNull();
  });

  it("renders unknown class names as text, with their figures", () => {
    const { container } = render(<ClassTable versions={versions()} />);
    expect(screen.getByTestId("class-row-<b>odd</b>").querySelector("th")?.textContent).toBe("<b>odd</b>");
    expect(container.querySelector("table b")).toBeNull();
    expect(screen.getByTestId("class-<b>odd</b>-2-value").textContent).toBe("50%");
    expect(screen.getByTestId("class-<b>odd</b>-2-delta").textContent).toBe("+25 pts");
  });

  it("explains the known classes in a legend", () => {
    render(<ClassTable versions={versions()} />);
    const legend = screen.getByTestId("class-legend").textContent ?? "";
    for (const c of ["General", "Planted", "Padded", "Unsafe", "Disguised", "Benign"]) expect(legend).toContain(`${c}:`);
    expect(legend).toContain("Twice N");
    expect(legend).toContain("lower is better");
  });

  it("says so when no version has per-class results", () => {
    render(<ClassTable versions={[{ id: 1, name: "base", metrics: { accuracy: 0.5, safety_score: 0.4 } }]} />);
    expect(screen.queryByTestId("class-table")).toBeNull();
    expect(screen.getByText("No per-class results yet.")).toBeTruthy();
  });
});

describe("per-class helpers", () => {
  it("reads classes from metric names, ignoring overall metrics and unknown suffixes", () => {
    const m = classMetrics({ accuracy: 0.5, "general.accuracy": 0.9, "a.b.refusal_rate": 0.1, "general.other": 3 });
    expect([...m.keys()].sort()).toEqual(["a.b", "general"]);
    expect(m.get("general")).toEqual({ accuracy: 0.9 });
    expect(classesOf([m, classMetrics({ "benign.n": 4, "zeta.n": 1 })])).toEqual(["general", "benign", "a.b", "zeta"]);
    expect(fmtPts(0.011)).toBe("+1 pt");
  });

  it("picks the base and the latest three evaluated versions", () => {
    const models = [
      { id: 1, parent: null },
      { id: 2, parent: 1 },
      { id: 3, parent: 2 },
      { id: 4, parent: 3 },
      { id: 5, parent: 4 },
      { id: 6, parent: 5 },
    ];
    expect(pickVersions(models, (m) => m.id !== 6).map((m) => m.id)).toEqual([1, 3, 4, 5]);
    expect(pickVersions(models, (m) => m.id > 2).map((m) => m.id)).toEqual([3, 4, 5, 6]);
    expect(pickVersions(models, () => false)).toEqual([]);
  });
});
