import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { routes, settle, stubApiForEachTest } from "../stubApi";
import { Datasets } from "./Datasets";
import { Projects } from "./Projects";
import { Runs } from "./Runs";

stubApiForEachTest();

describe("pages against missing or refused endpoints", () => {
  it("shows a calm 'not available yet' when the datasets API does not exist", async () => {
    routes["/api/projects/1/"] = [200, { id: 1, name: "Demo", my_role: "owner" }];
    render(<Datasets projectId={1} />);
    await settle();
    expect(screen.getByTestId("not-available").textContent).toMatch(/Datasets: not available yet/);
    expect(screen.getByTestId("dataset-create")).toBeTruthy(); // the form still renders (kind typed by hand)
  });

  it("shows 'not available yet' for training runs", async () => {
    render(<Runs projectId={1} runId={null} />);
    await settle();
    const notes = screen.getAllByTestId("not-available").map((n) => n.textContent);
    expect(notes).toEqual(["Training runs: not available yet.", "Evaluations: not available yet."]);
  });

  it("links to the login page on 403", async () => {
    routes["/api/projects/"] = [403, { detail: "Authentication credentials were not provided." }];
    render(<Projects />);
    await settle();
    const box = screen.getByTestId("auth-required");
    expect(box.textContent).toContain("Authentication credentials were not provided.");
    expect(box.querySelector("a")!.getAttribute("href")).toBe("/accounts/login/?next=/app/");
  });

  it("lists projects with the user's role, names as text", async () => {
    routes["/api/projects/"] = [200, { count: 1, next: null, results: [{ id: 3, name: "<i>P</i>", my_role: "supervisor" }] }];
    render(<Projects />);
    await settle();
    const row = screen.getByTestId("project-3");
    expect(row.textContent).toContain("<i>P</i>");
    expect(row.textContent).toContain("supervisor");
    expect(row.querySelector("i")).toBeNull();
  });
});
