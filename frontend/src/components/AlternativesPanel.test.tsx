import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, within } from "@testing-library/react";
import type { AlternativeSet } from "../lib/api";
import { initialState, traceReducer } from "../stream/reducer";
import { snapshot, trace } from "../stream/fixtures";
import { AlternativesPanel } from "./AlternativesPanel";

const rule = (score: number, detail: string) => [{ scorer: "rule:demo_task", score, detail, model_version: null }];

function set(extra: Partial<AlternativeSet> = {}): AlternativeSet {
  return {
    id: 5, trace: 1, step_index: 2, k: 3, seed: 11, params: {}, status: "ready", error: "",
    candidates: [
      { index: 0, kind: "step", text: "3. 37 + 8 = 45", scores: rule(1, "the next right step") },
      { index: 1, kind: "step", text: "3. 37 + 8 = 44", scores: rule(0, "wrong") },
      { index: 2, kind: "end", text: "", scores: [] },
    ],
    picked: null, picked_text: "", picked_by: null, branch: null, created_at: null, ready_at: null,
    ...extra,
  };
}

describe("AlternativesPanel", () => {
  it("shows the candidates side by side with their scores; only real steps can be picked", () => {
    const onPick = vi.fn();
    render(<AlternativesPanel set={set()} canAct onPick={onPick} onOwn={vi.fn()} onClose={vi.fn()} />);
    const cards = screen.getAllByTestId("candidate");
    expect(cards.map((c) => c.querySelector(".candidate-text")?.textContent)).toEqual([
      "3. 37 + 8 = 45", "3. 37 + 8 = 44", "(ends the reasoning here) ",
    ]);
    expect(within(cards[0]).getByText("rule 1.00")).toBeTruthy();
    expect(within(cards[1]).getByText("rule 0.00").className).toContain("low");
    expect(within(cards[2]).queryByRole("button")).toBeNull();
    fireEvent.click(screen.getByTestId("pick-2"));
    expect(onPick).toHaveBeenCalledWith(1);
  });

  it("renders model text as text, never as HTML", () => {
    const evil = set({ candidates: [{ index: 0, kind: "step", text: "<img src=x onerror=alert(1)>", scores: [] }] });
    const { container } = render(<AlternativesPanel set={evil} canAct onPick={vi.fn()} onOwn={vi.fn()} onClose={vi.fn()} />);
    expect(container.querySelector("img")).toBeNull();
    expect(screen.getByText("<img src=x onerror=alert(1)>")).toBeTruthy();
  });

  it("takes your own step, says while it samples, and says what was picked", () => {
    const onOwn = vi.fn();
    const { rerender } = render(<AlternativesPanel set={set()} canAct onPick={vi.fn()} onOwn={onOwn} onClose={vi.fn()} />);
    fireEvent.change(screen.getByTestId("own-step"), { target: { value: " 3. 45 " } });
    fireEvent.submit(screen.getByTestId("own-step").closest("form")!);
    expect(onOwn).toHaveBeenCalledWith("3. 45");
    rerender(<AlternativesPanel set={set({ status: "running", candidates: [] })} canAct onPick={vi.fn()} onOwn={onOwn} onClose={vi.fn()} />);
    expect(screen.getByTestId("alternatives-status").textContent).toContain("Sampling 3 candidates");
    rerender(<AlternativesPanel set={set({ picked: 0, picked_text: "3. 37 + 8 = 45", branch: 9 })} canAct onPick={vi.fn()} onOwn={onOwn} onClose={vi.fn()} branchHref="/b/9" />);
    expect(screen.getByTestId("alternatives-picked").textContent).toContain("Picked candidate 1: branch #9");
    expect(screen.queryByTestId("pick-1")).toBeNull(); // picked once: no more picks
  });
});

describe("trace.alternatives events", () => {
  it("add a set, then replace it as it becomes ready", () => {
    let s = traceReducer(initialState(1), { type: "message", traceId: 1, msg: snapshot(1, 1, { trace: trace(1) }) });
    s = traceReducer(s, { type: "message", traceId: 1, msg: { type: "trace.alternatives", seq: 2, set: set({ status: "queued", candidates: [] }) } });
    expect(s.trace?.alternatives?.map((a) => a.status)).toEqual(["queued"]);
    s = traceReducer(s, { type: "message", traceId: 1, msg: { type: "trace.alternatives", seq: 3, set: set() } });
    expect(s.trace?.alternatives?.map((a) => [a.id, a.status, a.candidates.length])).toEqual([[5, "ready", 3]]);
  });
});
