import { act, cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ServerMsg } from "../stream/protocol";
import { FakeSocket, snapshot, step, tok, trace } from "../stream/fixtures";
import { TraceReview } from "./TraceReview";


function server(msg: ServerMsg | Record<string, unknown>) {
  const ws = FakeSocket.all[FakeSocket.all.length - 1];
  act(() => {
    if (ws.readyState === 0) ws.open();
    ws.push(msg);
  });
  return ws;
}

const flush = () =>
  act(async () => {
    await new Promise((r) => setTimeout(r, 10));
  });

const key = (k: string, extra: Record<string, unknown> = {}) => act(() => void fireEvent.keyDown(window, { key: k, ...extra }));

beforeEach(() => {
  FakeSocket.all = [];
  vi.stubGlobal("WebSocket", FakeSocket);
  // The REST side of the page (project, prompt, related traces); not what these tests are about.
  vi.stubGlobal(
    "fetch",
    vi.fn(async (request: Request) => {
      const url = request.url;
      const body = url.includes("/prompts/")
        ? { id: 7, messages: [{ role: "user", content: "What is 3+4?" }], category: "knowledge", reference_answer: "7", images: [], metadata: {} }
        : url.includes("/traces/")
          ? { count: 0, next: null, results: [] }
          : { id: 1, name: "Demo", guidelines: "Rate each step.", label_schema: {}, my_role: "supervisor" };
      return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
    }),
  );
  window.history.replaceState(null, "", "/app/projects/1/traces/5/");
});
afterEach(async () => {
  // Let the page's REST loads settle inside act before unmounting.
  await act(async () => {
    await new Promise((r) => setTimeout(r, 20));
  });
  cleanup();
  vi.unstubAllGlobals();
});

const start = async () => {
  render(<TraceReview projectId={1} traceId={5} />);
  await act(async () => {
    await new Promise((r) => setTimeout(r, 10));
  });
  expect(FakeSocket.all[0].url).toMatch(/\/ws\/traces\/5\/$/);
  const ws = server(
    snapshot(5, 4, {
      trace: trace(5, { steps: [step(0, "3 + 4 = 8"), step(1, "<script>alert(1)</script>")], version: 2 }),
      partial: "So the ans",
      watchers: [
        { id: 1, username: "ann" },
        { id: 2, username: "bob" },
      ],
      me: { id: 1, username: "ann" },
    }),
  );
  await flush(); // the prompt and branch panels load once the trace is known
  return ws;
};

describe("TraceReview", () => {
  it("shows the snapshot, streams the partial step, and renders steps as text", async () => {
    await start();
    expect(screen.getByTestId("trace-status").textContent).toBe("running");
    expect(screen.getByTestId("watchers").textContent).toContain("bob");
    expect(screen.getByTestId("step-1").textContent).toContain("<script>alert(1)</script>");
    expect(document.querySelector(".steps script")).toBeNull();
    server(tok(5, "wer is 8"));
    expect(screen.getByTestId("step-partial").textContent).toContain("So the answer is 8");
  });

  it("j then 1 rates the first step +1 over the socket", async () => {
    const ws = await start();
    key("j");
    key("1");
    expect(ws.sent.at(-1)).toMatchObject({ action: "label", step_index: 0, rating: 1 });
    expect(screen.getByTestId("rate-0-+1").getAttribute("aria-pressed")).toBe("true");
    key("j");
    key("3");
    expect(ws.sent.at(-1)).toMatchObject({ action: "label", step_index: 1, rating: -1 });
  });

  it("Esc stops a running trace; ? opens the help overlay listing the shortcuts", async () => {
    const ws = await start();
    key("Escape");
    expect(ws.sent.at(-1)).toMatchObject({ action: "stop" });
    key("?");
    const help = screen.getByTestId("help-overlay");
    for (const k of ["j / k", "1", "2", "3", "e", "Ctrl+Enter", "Esc", "?"]) expect(help.textContent).toContain(k);
    key("Escape");
    expect(screen.queryByTestId("help-overlay")).toBeNull();
  });

  it("e edits the selected step; Ctrl+Enter sends it with the version and opens the branch on ack", async () => {
    const ws = await start();
    key("j");
    key("e");
    const area = screen.getByTestId("edit-input") as HTMLTextAreaElement;
    expect(area.value).toBe("3 + 4 = 8");
    fireEvent.change(area, { target: { value: "3 + 4 = 7" } });
    act(() => void fireEvent.keyDown(area, { key: "Enter", ctrlKey: true }));
    const sent = ws.sent.at(-1)!;
    expect(sent).toMatchObject({ action: "edit", step_index: 0, text: "3 + 4 = 7", expected_version: 2 });
    server({ type: "ack", action: "edit", request_id: sent.request_id as string, branch: { id: 9 } });
    await flush();
    expect(window.location.pathname).toBe("/app/projects/1/traces/9/");
  });

  it("a stale edit keeps the text and says why", async () => {
    const ws = await start();
    key("j");
    key("e");
    fireEvent.change(screen.getByTestId("edit-input"), { target: { value: "changed" } });
    act(() => void fireEvent.keyDown(screen.getByTestId("edit-input"), { key: "Enter", ctrlKey: true }));
    server({ type: "error", code: "stale_version", detail: "stale", request_id: ws.sent.at(-1)!.request_id as string });
    await flush();
    expect(screen.getByTestId("notice").textContent).toMatch(/changed this trace/);
    expect((screen.getByTestId("edit-input") as HTMLTextAreaElement).value).toBe("changed");
  });
});
