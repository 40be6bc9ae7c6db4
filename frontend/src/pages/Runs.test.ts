import { describe, expect, it } from "vitest";
import { groupOf } from "./Runs";

describe("groupOf", () => {
  it("sorts training curves into charts", () => {
    expect(groupOf("loss")).toBe("loss");
    expect(groupOf("rewards/format_reward/mean")).toBe("reward");
    expect(groupOf("kl")).toBe("kl");
    expect(groupOf("grad_norm")).toBe("other");
    expect(groupOf("mean_token_accuracy")).toBe("other");
  });

  it("leaves run-level counters out of the charts", () => {
    for (const name of ["total_flos", "num_input_tokens_seen", "epoch", "train_runtime", "train_samples_per_second", "train_loss"]) {
      expect(groupOf(name)).toBeNull();
    }
  });
});
