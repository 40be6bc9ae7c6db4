import { describe, expect, it } from "vitest";

import { isHeldOut, promptClass } from "./Queue";

describe("prompt metadata in the queue", () => {
  it("marks the prompts the snapshot builder holds out", () => {
    expect(isHeldOut({ split: "heldout" })).toBe(true);
    expect(isHeldOut({ split: "eval" })).toBe(true);
    expect(isHeldOut({ split: "test" })).toBe(true);
    expect(isHeldOut({ split: "train" })).toBe(false);
    expect(isHeldOut({})).toBe(false);
    expect(isHeldOut(null)).toBe(false);
    expect(isHeldOut({ split: 3 })).toBe(false);
  });

  it("shows the class of a prompt when it has one", () => {
    expect(promptClass({ klass: "planted" })).toBe("planted");
    expect(promptClass({ klass: "" })).toBeNull();
    expect(promptClass({ klass: ["x"] })).toBeNull();
    expect(promptClass(undefined)).toBeNull();
  });
});
