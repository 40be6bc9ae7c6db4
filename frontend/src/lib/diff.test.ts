import { describe, expect, it } from "vitest";
import { wordDiff } from "./diff";

const render = (a: string, b: string) =>
  wordDiff(a, b)
    .map((o) => (o.op === "same" ? o.text : o.op === "del" ? `[-${o.text}-]` : `{+${o.text}+}`))
    .join("");

describe("wordDiff", () => {
  it("marks changed words only", () => {
    expect(render("3 + 4 = 8, so x is 8.", "3 + 4 = 7, so x is 7.")).toBe("3 + 4 = [-8,-]{+7,+} so x is [-8.-]{+7.+}");
  });
  it("rebuilds both sides exactly", () => {
    const a = "The quick brown fox\njumps over the lazy dog.";
    const b = "The slow brown fox\nwalks past the lazy dog!";
    const ops = wordDiff(a, b);
    expect(ops.filter((o) => o.op !== "add").map((o) => o.text).join("")).toBe(a);
    expect(ops.filter((o) => o.op !== "del").map((o) => o.text).join("")).toBe(b);
  });
  it("handles empty sides", () => {
    expect(render("", "new text")).toBe("{+new text+}");
    expect(render("old", "")).toBe("[-old-]");
    expect(wordDiff("", "")).toEqual([]);
  });
});
