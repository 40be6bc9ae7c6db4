import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { step } from "../stream/fixtures";
import { PartialStep, StepRow, type StepRowProps } from "./StepRow";

afterEach(cleanup);

const me = { id: 1, username: "ann" };

function props(extra: Partial<StepRowProps> = {}): StepRowProps {
  return {
    step: step(2, "plain"),
    selected: false,
    me,
    canAct: true,
    safetyTags: ["privacy", "bias"],
    editing: false,
    editText: "",
    onSelect: vi.fn(),
    onRate: vi.fn(),
    onToggleTag: vi.fn(),
    onNote: vi.fn(),
    onEditChange: vi.fn(),
    onEditSubmit: vi.fn(),
    onEditCancel: vi.fn(),
    ...extra,
  };
}

describe("StepRow", () => {
  it("renders model output as text, never as HTML", () => {
    const evil = '<script>alert(1)</script><img src=x onerror="alert(2)"><b>bold</b>';
    const { container } = render(<ul><StepRow {...props({ step: step(0, evil) })} /></ul>);
    const row = screen.getByTestId("step-0");
    expect(row.textContent).toContain(evil);
    expect(container.querySelector("script")).toBeNull();
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("b")).toBeNull();
  });

  it("renders the partial step as text too", () => {
    const { container } = render(<ul><PartialStep text="<script>alert(1)</script>" index={3} /></ul>);
    expect(screen.getByTestId("step-partial").textContent).toContain("<script>alert(1)</script>");
    expect(container.querySelector("script")).toBeNull();
  });

  it("rating buttons reflect my label and count everyone's", () => {
    const s = step(4, "x", {
      labels: [
        { id: 1, annotator: me, rating: -1, safety_tags: [], note: "" },
        { id: 2, annotator: { id: 2, username: "bob" }, rating: 1, safety_tags: [], note: "" },
      ],
    });
    render(<ul><StepRow {...props({ step: s })} /></ul>);
    expect(screen.getByTestId("rate-4--1").getAttribute("aria-pressed")).toBe("true");
    expect(screen.getByTestId("rate-4-+1").getAttribute("aria-pressed")).toBe("false");
    expect(screen.getByTestId("rate-4-+1").textContent).toContain("1"); // bob's vote counted
    expect(screen.getByTestId("rate-4-0").getAttribute("aria-pressed")).toBe("false");
    expect(screen.getByTestId("rate-4-unsure").getAttribute("aria-pressed")).toBe("false");
  });

  it("shows an unsure label (null rating) as unsure, and a pending rating over the saved one", () => {
    const s = step(1, "x", { labels: [{ id: 1, annotator: me, rating: null, safety_tags: [], note: "" }] });
    const { rerender } = render(<ul><StepRow {...props({ step: s })} /></ul>);
    expect(screen.getByTestId("rate-1-unsure").getAttribute("aria-pressed")).toBe("true");
    rerender(<ul><StepRow {...props({ step: s, pending: { rating: 0, tags: [], note: "" } })} /></ul>);
    expect(screen.getByTestId("rate-1-0").getAttribute("aria-pressed")).toBe("true");
    expect(screen.getByTestId("rate-1-unsure").getAttribute("aria-pressed")).toBe("false");
    // a label being removed shows no rating at all
    rerender(<ul><StepRow {...props({ step: s, pending: null })} /></ul>);
    for (const key of ["+1", "0", "-1", "unsure"])
      expect(screen.getByTestId(`rate-1-${key}`).getAttribute("aria-pressed")).toBe("false");
  });

  it("the selected step takes a comment, saved on Enter", () => {
    const onNote = vi.fn();
    render(<ul><StepRow {...props({ selected: true, onNote })} /></ul>);
    const input = screen.getByTestId("note-input-2") as HTMLInputElement;
    fireEvent.change(input, { target: { value: " carries the 1 wrongly " } });
    fireEvent.keyDown(input, { key: "Enter" });
    expect(onNote).toHaveBeenCalledWith(2, "carries the 1 wrongly");
  });

  it("sends the clicked rating with the step index; viewers cannot rate", () => {
    const onRate = vi.fn();
    const { rerender } = render(<ul><StepRow {...props({ onRate })} /></ul>);
    fireEvent.click(screen.getByTestId("rate-2-+1"));
    fireEvent.click(screen.getByTestId("rate-2-unsure"));
    expect(onRate.mock.calls).toEqual([
      [2, 1],
      [2, null],
    ]);
    rerender(<ul><StepRow {...props({ onRate, canAct: false })} /></ul>);
    expect((screen.getByTestId("rate-2--1") as HTMLButtonElement).disabled).toBe(true);
  });

  it("edits in place: Ctrl+Enter submits, Esc cancels", () => {
    const onEditSubmit = vi.fn();
    const onEditCancel = vi.fn();
    const onEditChange = vi.fn();
    render(<ul><StepRow {...props({ editing: true, editText: "plain", onEditSubmit, onEditCancel, onEditChange })} /></ul>);
    const area = screen.getByTestId("edit-input") as HTMLTextAreaElement;
    expect(area.value).toBe("plain");
    fireEvent.change(area, { target: { value: "fixed" } });
    expect(onEditChange).toHaveBeenCalledWith("fixed");
    fireEvent.keyDown(area, { key: "Enter", ctrlKey: true });
    fireEvent.keyDown(area, { key: "Escape" });
    expect(onEditSubmit).toHaveBeenCalledTimes(1);
    expect(onEditCancel).toHaveBeenCalledTimes(1);
  });
});
