import { fireEvent, renderHook } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { useReviewKeyboard, type ReviewKeys } from "./useReviewKeyboard";

function keys(extra: Partial<ReviewKeys> = {}): ReviewKeys {
  return {
    helpOpen: false,
    setHelp: vi.fn(),
    steps: [0, 1, 2],
    selected: null,
    select: vi.fn(),
    rate: vi.fn(),
    editing: false,
    startEdit: vi.fn(),
    cancelEdit: vi.fn(),
    submitEdit: vi.fn(),
    status: "running",
    stop: vi.fn(),
    resume: vi.fn(),
    ...extra,
  };
}

const press = (key: string, extra: Record<string, unknown> = {}, target: Window | Element = window) =>
  fireEvent.keyDown(target, { key, ...extra });

afterEach(() => vi.restoreAllMocks());

describe("useReviewKeyboard", () => {
  it("subscribes once for the page's life, yet acts on the latest state", () => {
    const add = vi.spyOn(window, "addEventListener");
    const remove = vi.spyOn(window, "removeEventListener");
    const first = keys({ selected: 0 });
    const { rerender, unmount } = renderHook((k: ReviewKeys) => useReviewKeyboard(k), { initialProps: first });
    const second = keys({ selected: 2 });
    rerender(second);
    rerender(keys({ selected: 2, rate: second.rate }));
    press("1");
    expect(second.rate).toHaveBeenCalledWith(2, 1);
    expect(first.rate).not.toHaveBeenCalled();
    expect(add.mock.calls.filter(([type]) => type === "keydown")).toHaveLength(1);
    expect(remove.mock.calls.filter(([type]) => type === "keydown")).toHaveLength(0);
    unmount();
    expect(remove.mock.calls.filter(([type]) => type === "keydown")).toHaveLength(1);
    press("1");
    expect(second.rate).toHaveBeenCalledTimes(1); // gone with the page
  });

  it("j / k move through the steps and stop at the ends; 1–4 rate the selected step", () => {
    const k = keys({ selected: 1 });
    renderHook(() => useReviewKeyboard(k));
    press("j");
    press("k");
    expect(k.select).toHaveBeenNthCalledWith(1, 2);
    expect(k.select).toHaveBeenNthCalledWith(2, 0);
    for (const key of ["2", "3", "4"]) press(key);
    expect(vi.mocked(k.rate).mock.calls).toEqual([
      [1, 0],
      [1, -1],
      [1, null],
    ]);
  });

  it("with nothing selected, j selects the first step and ratings do nothing", () => {
    const k = keys();
    renderHook(() => useReviewKeyboard(k));
    press("1");
    press("j");
    expect(k.rate).not.toHaveBeenCalled();
    expect(k.select).toHaveBeenCalledWith(0);
  });

  it("Esc stops a running trace, or cancels an edit; Ctrl+Enter submits an edit or continues a stopped trace", () => {
    const running = keys();
    const { unmount } = renderHook(() => useReviewKeyboard(running));
    press("Escape");
    expect(running.stop).toHaveBeenCalledOnce();
    unmount();

    const editing = keys({ editing: true, selected: 0 });
    const ed = renderHook(() => useReviewKeyboard(editing));
    press("Escape");
    press("Enter", { ctrlKey: true });
    expect(editing.cancelEdit).toHaveBeenCalledOnce();
    expect(editing.submitEdit).toHaveBeenCalledOnce();
    expect(editing.stop).not.toHaveBeenCalled();
    ed.unmount();

    const stopped = keys({ status: "stopped" });
    renderHook(() => useReviewKeyboard(stopped));
    press("Enter", { metaKey: true });
    expect(stopped.resume).toHaveBeenCalledOnce();
  });

  it("e opens the editor without typing the e; typing in a field is left alone", () => {
    const k = keys({ selected: 1 });
    renderHook(() => useReviewKeyboard(k));
    const input = document.createElement("input");
    document.body.appendChild(input);
    press("1", {}, input);
    press("j", {}, input);
    expect(k.rate).not.toHaveBeenCalled();
    expect(k.select).not.toHaveBeenCalled();
    const notTyped = press("e");
    expect(notTyped).toBe(false); // default prevented
    expect(k.startEdit).toHaveBeenCalledWith(1);
    input.remove();
  });

  it("while the help is open only Esc and ? (closing it) do anything", () => {
    const k = keys({ helpOpen: true, selected: 0 });
    renderHook(() => useReviewKeyboard(k));
    press("1");
    press("Escape");
    expect(k.rate).not.toHaveBeenCalled();
    expect(k.stop).not.toHaveBeenCalled();
    expect(k.setHelp).toHaveBeenCalledWith(false);
  });

  it("? opens the help; keys with Ctrl / Alt held are the browser's", () => {
    const k = keys({ selected: 0 });
    renderHook(() => useReviewKeyboard(k));
    press("1", { altKey: true });
    press("j", { ctrlKey: true });
    expect(k.rate).not.toHaveBeenCalled();
    expect(k.select).not.toHaveBeenCalled();
    press("?");
    expect(k.setHelp).toHaveBeenCalledWith(true);
  });
});

describe("useReviewKeyboard: the team's keys", () => {
  it("n opens the next item, Ctrl+Z undoes, y / r / s drive the review form, Shift+digit a tag", () => {
    const k = keys({ selected: 1, next: vi.fn(), undo: vi.fn(), verdict: vi.fn(), saveReview: vi.fn(), toggleTag: vi.fn() });
    renderHook(() => useReviewKeyboard(k));
    press("n");
    press("z", { ctrlKey: true });
    press("y");
    press("r");
    press("s");
    press("@", { shiftKey: true, code: "Digit2" }); // Shift+2 whatever the layout prints
    expect(k.next).toHaveBeenCalledTimes(1);
    expect(k.undo).toHaveBeenCalledTimes(1);
    expect(k.verdict).toHaveBeenNthCalledWith(1, "accept");
    expect(k.verdict).toHaveBeenNthCalledWith(2, "reject");
    expect(k.saveReview).toHaveBeenCalledTimes(1);
    expect(k.toggleTag).toHaveBeenCalledWith(1, 1);
    expect(k.rate).not.toHaveBeenCalled(); // Shift+2 is not the "2" rating
  });

  it("leaves these keys alone while typing in a field", () => {
    const k = keys({ next: vi.fn(), undo: vi.fn() });
    renderHook(() => useReviewKeyboard(k));
    const input = document.createElement("input");
    document.body.appendChild(input);
    press("n", {}, input);
    press("z", { ctrlKey: true }, input);
    expect(k.next).not.toHaveBeenCalled();
    expect(k.undo).not.toHaveBeenCalled();
    input.remove();
  });
});

describe("useReviewKeyboard: supervision", () => {
  it("Enter accepts the step only while step mode waits at the end of one", () => {
    const paused = keys({ status: "stopped", finishReason: "step", acceptStep: vi.fn() });
    const { unmount } = renderHook(() => useReviewKeyboard(paused));
    expect(press("Enter")).toBe(false); // default prevented
    expect(paused.acceptStep).toHaveBeenCalledOnce();
    expect(paused.resume).not.toHaveBeenCalled();
    unmount();

    for (const state of [
      { status: "running", finishReason: "" },
      { status: "stopped", finishReason: "cancelled" }, // a human stop: Ctrl+Enter or p continues it
      { status: "stopped", finishReason: "auto_pause" },
    ]) {
      const k = keys({ ...state, acceptStep: vi.fn() });
      const h = renderHook(() => useReviewKeyboard(k));
      press("Enter");
      expect(k.acceptStep).not.toHaveBeenCalled();
      h.unmount();
    }
  });

  it("Enter does not clash with Ctrl+Enter, the edit, the comment field or a focused button", () => {
    const k = keys({ status: "stopped", finishReason: "step", acceptStep: vi.fn() });
    const { unmount } = renderHook(() => useReviewKeyboard(k));
    press("Enter", { ctrlKey: true });
    expect(k.resume).toHaveBeenCalledOnce(); // Ctrl+Enter continues, as before
    const input = document.createElement("input");
    const button = document.createElement("button");
    document.body.append(input, button);
    press("Enter", {}, input);
    press("Enter", {}, button);
    press("Enter", { shiftKey: true });
    expect(k.acceptStep).not.toHaveBeenCalled();
    input.remove();
    button.remove();
    unmount();

    const editing = keys({ status: "stopped", finishReason: "step", editing: true, acceptStep: vi.fn() });
    renderHook(() => useReviewKeyboard(editing));
    press("Enter");
    expect(editing.acceptStep).not.toHaveBeenCalled();
  });

  it("p stops a running trace and continues a stopped one; not while typing or editing", () => {
    const running = keys();
    const r = renderHook(() => useReviewKeyboard(running));
    press("p");
    expect(running.stop).toHaveBeenCalledOnce();
    r.unmount();

    const stopped = keys({ status: "stopped", finishReason: "auto_pause" });
    const s = renderHook(() => useReviewKeyboard(stopped));
    press("p");
    expect(stopped.resume).toHaveBeenCalledOnce();
    const input = document.createElement("input");
    document.body.appendChild(input);
    press("p", {}, input);
    expect(stopped.resume).toHaveBeenCalledOnce();
    input.remove();
    s.unmount();

    const other = keys({ status: "finished", editing: false });
    const o = renderHook(() => useReviewKeyboard(other));
    press("p");
    expect([other.stop, other.resume].map((f) => vi.mocked(f).mock.calls.length)).toEqual([0, 0]);
    o.unmount();

    const editing = keys({ editing: true });
    renderHook(() => useReviewKeyboard(editing));
    press("p");
    expect(editing.stop).not.toHaveBeenCalled();
  });
});

describe("useReviewKeyboard: alternatives", () => {
  it("a asks for alternatives of the selected step, or of the last step when none is selected", () => {
    const k = keys({ selected: 0, alternatives: vi.fn(), verdict: vi.fn() });
    const { rerender } = renderHook((props) => useReviewKeyboard(props), { initialProps: k });
    press("a");
    expect(k.alternatives).toHaveBeenCalledWith(0);
    expect(k.verdict).not.toHaveBeenCalled(); // a is no longer the accept verdict (y is)
    const none = { ...k, selected: null, alternatives: vi.fn() };
    rerender(none);
    press("a");
    expect(none.alternatives).toHaveBeenCalledWith(2);
  });

  it("while alternatives wait for a pick, 1…K pick a candidate instead of rating, and Esc closes them", () => {
    const k = keys({ selected: 1, picking: true, pick: vi.fn(), closeAlternatives: vi.fn(), status: "finished" });
    renderHook(() => useReviewKeyboard(k));
    press("1");
    press("3");
    press("Escape");
    expect(k.pick).toHaveBeenNthCalledWith(1, 0);
    expect(k.pick).toHaveBeenNthCalledWith(2, 2);
    expect(k.rate).not.toHaveBeenCalled();
    expect(k.closeAlternatives).toHaveBeenCalledTimes(1);
  });

  it("without an open set the digits rate as before", () => {
    const k = keys({ selected: 1, picking: false, pick: vi.fn() });
    renderHook(() => useReviewKeyboard(k));
    press("1");
    expect(k.rate).toHaveBeenCalledWith(1, 1);
    expect(k.pick).not.toHaveBeenCalled();
  });
});
