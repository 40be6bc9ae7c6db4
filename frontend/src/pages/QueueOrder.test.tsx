import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { routes, settle, stubApiForEachTest } from "../stubApi";
import { ORDERS, Queue, queueQuery, triageText } from "./Queue";

stubApiForEachTest();

const row = (id: number, triage_score: number | null) => ({
  id, prompt: 1, status: "finished", review_count: 0, verdict: "", disputed: false, parent: null,
  updated_at: "2026-12-02T10:00:00Z", step_count: 2, mine: false, my_verdict: null, triage_score,
});

function requested(): URL[] {
  return (fetch as unknown as ReturnType<typeof vi.fn>).mock.calls.map(([r]) => new URL((r as Request).url));
}

describe("the queue's order", () => {
  it("offers arrival and the three triage orders", () => {
    expect(ORDERS.map(([o]) => o)).toEqual(["", "lowest_score", "disagreement", "confident_wrong"]);
  });

  it("asks the queue endpoint for a triage order, on every view, and keeps the view's filter", () => {
    expect(queueQuery("", "", "")).toBeNull(); // all traces, arrival: the plain trace list
    expect(queueQuery("", "confident_wrong", "")).toMatchObject({ order: "confident_wrong", reviewed: undefined });
    expect(queueQuery("unreviewed", "lowest_score", "safety")).toMatchObject({
      order: "lowest_score", reviewed: false, category: "safety",
    });
    expect(queueQuery("todo", "", "")).toMatchObject({ mine: true, reviewed: false, order: undefined });
  });

  it("shows a score with two decimals and nothing for a trace without one", () => {
    expect(triageText(0.1234)).toBe("0.12");
    expect(triageText(0)).toBe("0.00");
    expect(triageText(null)).toBe("");
    expect(triageText(undefined)).toBe("");
  });

  it("reloads in the chosen order and shows what it sorted by", async () => {
    routes["/api/projects/1/traces/"] = [200, { count: 2, count_exact: true, next: null, previous: null, results: [row(4, null), row(9, null)] }];
    routes["/api/projects/1/queue/"] = [200, { count: 2, count_exact: true, next: null, previous: null, results: [row(9, 0.05), row(4, 0.9)] }];
    render(<Queue projectId={1} />);
    await settle();
    const order = () => [...screen.getByTestId("trace-list").querySelectorAll("tbody tr")].map((r) => r.getAttribute("data-testid"));
    expect(order()).toEqual(["trace-4", "trace-9"]);
    expect(screen.queryByTestId("triage-4")).toBeNull(); // arrival order: no triage column

    fireEvent.change(screen.getByTestId("filter-order"), { target: { value: "lowest_score" } });
    await settle();
    const last = requested().filter((u) => u.pathname === "/api/projects/1/queue/").at(-1)!;
    expect(last.searchParams.get("order")).toBe("lowest_score");
    expect(order()).toEqual(["trace-9", "trace-4"]);
    expect(screen.getByTestId("triage-9").textContent).toBe("0.05");
    expect(screen.getByText("lowest score")).toBeTruthy();
    expect(window.location.search).toContain("order=lowest_score"); // a reload shows the same queue
    expect((screen.getByTestId("filter-status") as HTMLSelectElement).disabled).toBe(true);
  });

  it("pages on with the server's cursor and says when the total is an estimate", async () => {
    window.history.replaceState(null, "", "/app/projects/1/"); // all traces, arrival order
    const first = "http://testserver/api/projects/1/traces/?cursor=CUR1&limit=50";
    routes["/api/projects/1/traces/"] = [200, { count: 1200000, count_exact: false, next: first, previous: null, results: [row(4, null)] }];
    render(<Queue projectId={1} />);
    await settle();
    expect(screen.getByTestId("trace-total").textContent).toBe("1 of about 1,200,000 shown");
    routes["/api/projects/1/traces/"] = [200, { count: 1200000, count_exact: false, next: null, previous: first, results: [row(9, null)] }];
    fireEvent.click(screen.getByTestId("more-traces"));
    await settle();
    const last = requested().filter((u) => u.pathname === "/api/projects/1/traces/").at(-1)!;
    expect(last.searchParams.get("cursor")).toBe("CUR1");
    expect(last.searchParams.get("offset")).toBeNull();
    expect([...screen.getByTestId("trace-list").querySelectorAll("tbody tr")].map((r) => r.getAttribute("data-testid"))).toEqual(["trace-4", "trace-9"]);
    expect(screen.queryByTestId("more-traces")).toBeNull(); // the last page
  });
});
