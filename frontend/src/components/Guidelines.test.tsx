import { cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { Guidelines } from "./Guidelines";

afterEach(cleanup);

describe("Guidelines", () => {
  it("renders Markdown", () => {
    render(<Guidelines text={"# Rules\n\n- rate **every** step\n- [guide](https://example.org/g)\n\n1. first"} />);
    const box = screen.getByTestId("guidelines");
    expect(box.querySelector("h2")?.textContent).toBe("Rules");
    expect(box.querySelector("strong")?.textContent).toBe("every");
    expect(box.querySelectorAll("li")).toHaveLength(3);
    const link = box.querySelector("a")!;
    expect(link.getAttribute("href")).toBe("https://example.org/g");
    expect(link.getAttribute("rel")).toBe("noopener noreferrer");
  });

  it("never makes HTML of what it is given: tags show as text, bad links are dropped", () => {
    const evil = '<script>alert(1)</script><img src=x onerror="alert(2)"> [x](javascript:alert(3)) <iframe src="https://evil"></iframe>';
    const { container } = render(<Guidelines text={evil} />);
    expect(container.querySelector("script, img, iframe")).toBeNull();
    expect(container.textContent).toContain("<script>alert(1)</script>");
    expect(container.querySelector("a")).toBeNull();
    expect(container.querySelector("[onerror], [href^='javascript']")).toBeNull();
  });

  it("says when there are none", () => {
    render(<Guidelines text="  " />);
    expect(screen.queryByTestId("guidelines")).toBeNull();
    expect(document.body.textContent).toContain("No guidelines.");
  });
});
