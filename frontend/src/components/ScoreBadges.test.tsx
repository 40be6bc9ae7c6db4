import { describe, expect, it } from "vitest";
import { render, screen } from "@testing-library/react";
import { ScoreBadges } from "./StepRow";

describe("ScoreBadges", () => {
  it("shows each scorer's score, marks the rule checker rule-based and a low score as a warning", () => {
    render(
      <ScoreBadges
        scores={[
          { step_index: 2, scorer: "rule:demo_task", score: 0, detail: "wrong", model_version: null },
          { step_index: 2, scorer: "prm:12", score: 0.875, detail: "P(step is good)", model_version: 12 },
        ]}
      />,
    );
    const rule = screen.getByText("rule 0.00");
    expect(rule.className).toContain("low");
    expect(rule.getAttribute("title")).toBe("rule-based checker: wrong");
    const prm = screen.getByText("prm:12 0.88");
    expect(prm.className).not.toContain("low");
  });

  it("shows nothing for a step nobody scored", () => {
    const { container } = render(<ScoreBadges scores={[]} />);
    expect(container.textContent).toBe("");
  });
});
