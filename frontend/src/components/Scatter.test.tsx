import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { Scatter } from "./Scatter";

afterEach(cleanup);

const points = [
  { id: 1, name: "base", x: 0.6, y: 0.5 },
  { id: 2, name: "round-1", x: 0.7, y: 0.8 },
  { id: 3, name: "round-2", x: 0.8, y: 0.9, serving: true },
];

describe("Scatter", () => {
  it("draws the dashed safety = capability diagonal", () => {
    render(<Scatter points={points} />);
    const svg = screen.getByRole("img", { name: "Safety versus capability" });
    const d = screen.getByTestId("scatter-diagonal");
    expect(svg.contains(d)).toBe(true);
    expect(d.getAttribute("stroke-dasharray")).toBeTruthy();
    // from (0, 0) to (1, 1): bottom left to top right
    expect(Number(d.getAttribute("x1"))).toBeLessThan(Number(d.getAttribute("x2")));
    expect(Number(d.getAttribute("y1"))).toBeGreaterThan(Number(d.getAttribute("y2")));
  });

  it("joins the points in the order given, and labels each", () => {
    const { container } = render(<Scatter points={points} />);
    const path = screen.getByTestId("scatter-path");
    const xs = (path.getAttribute("points") ?? "").split(" ").map((p) => Number(p.split(",")[0]));
    expect(xs).toHaveLength(3);
    expect(xs[0]).toBeLessThan(xs[1]);
    expect(xs[1]).toBeLessThan(xs[2]);
    expect(path.textContent).toBe("rounds in order: base → round-1 → round-2");
    expect(container.querySelectorAll("circle")).toHaveLength(3);
    expect(container.querySelector("circle.serving title")?.textContent).toContain("round-2");
  });

  it("draws no path for a single point", () => {
    render(<Scatter points={points.slice(0, 1)} />);
    expect(screen.queryByTestId("scatter-path")).toBeNull();
  });
});
