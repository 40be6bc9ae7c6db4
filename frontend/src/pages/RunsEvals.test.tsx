import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { routes, settle, stubApiForEachTest } from "../stubApi";
import { Runs } from "./Runs";

stubApiForEachTest();

function model(id: number, parent: number | null) {
  return { id, name: `v${id}`, base_model: "demo", parent, produced_by: null, created_at: "2025-01-01T00:00:00Z" };
}

describe("Runs page evaluations", () => {
  it("shows the scatter and the per-class table of the base and the latest three versions", async () => {
    const models = [model(1, null), model(2, 1), model(3, 2), model(4, 3), model(5, 4)];
    let id = 1;
    const evals = models.flatMap((m) =>
      [
        ["accuracy", 0.5 + m.id / 20],
        ["safety_score", 0.4 + m.id / 10],
        ["planted.accuracy", m.id / 10],
        ["planted.n", 20],
      ].map(([metric, value]) => ({ id: id++, model_version: m.id, run: null, metric, value, details: {}, created_at: "2025-01-01T00:00:00Z" })),
    );
    routes["/api/projects/1/"] = [200, { id: 1, name: "Demo", my_role: "owner", serving_model: 5 }];
    routes["/api/projects/1/models/"] = [200, models];
    routes["/api/projects/1/evals/"] = [200, evals];
    render(<Runs projectId={1} runId={null} />);
    await settle();
    const scatter = screen.getByTestId("eval-scatter");
    expect(within(scatter).getByTestId("scatter-path").getAttribute("points")?.split(" ")).toHaveLength(5);
    const table = screen.getByTestId("class-table");
    expect(within(table).getAllByRole("columnheader").map((h) => h.textContent)).toEqual(["Class", "v1", "v3", "v4", "v5"]);
    expect(screen.getByTestId("class-planted-5-value").textContent).toBe("50%");
    expect(screen.getByTestId("class-planted-5-delta").textContent).toBe("+40 pts");
  });

  it("shows guided and unguided accuracy side by side, and keeps guided figures out of the class table", async () => {
    const models = [model(1, null), model(2, 1)];
    let id = 1;
    const guide = { k: 8, by: "rule:demo_task", temperature: 1 };
    const r = (mv: number, metric: string, value: number, details: object = {}) =>
      ({ id: id++, model_version: mv, run: null, metric, value, details, created_at: "2025-01-01T00:00:00Z" });
    const evals = [
      r(1, "accuracy", 0.4), r(1, "safety_score", 0.5), r(1, "planted.accuracy", 0.1),
      r(1, "guided.accuracy", 0.9, { guide }), r(1, "guided.safety_score", 0.5, { guide }),
      r(1, "guided.planted.accuracy", 0.8, { guide }),
      r(2, "accuracy", 0.6), r(2, "safety_score", 0.7), r(2, "planted.accuracy", 0.5),
    ];
    routes["/api/projects/1/"] = [200, { id: 1, name: "Demo", my_role: "owner", serving_model: 2 }];
    routes["/api/projects/1/models/"] = [200, models];
    routes["/api/projects/1/evals/"] = [200, evals];
    render(<Runs projectId={1} runId={null} />);
    await settle();
    const table = screen.getByTestId("guided-table");
    // Only the version evaluated both ways has a row, saying how it was guided.
    expect(within(table).getAllByRole("row")).toHaveLength(2);
    expect(within(screen.getByTestId("guided-row-1")).getByText("best of 8 by rule:demo_task")).toBeTruthy();
    expect(screen.getByTestId("guided-1-accuracy-unguided").textContent).toBe("40%");
    expect(screen.getByTestId("guided-1-accuracy-guided").textContent).toBe("90%");
    expect(screen.getByTestId("guided-1-accuracy-change").textContent).toBe("+50 pts");
    expect(screen.getByTestId("guided-1-safety_score-change").textContent).toBe("±0 pts");
    // The per-class table shows the classes, not "guided.planted" as a class of its own.
    const rowNames = within(screen.getByTestId("class-table")).getAllByRole("row").map((row) => row.textContent ?? "");
    expect(rowNames.some((t) => t.includes("guided"))).toBe(false);
    expect(screen.getByTestId("class-planted-1-value").textContent).toBe("10%");
  });
});
