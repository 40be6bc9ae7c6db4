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
});
