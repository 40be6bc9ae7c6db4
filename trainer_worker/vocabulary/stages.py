"""The training stages a run can take (``TrainingRun.stage``; ``StageConfig.stage``)."""

from __future__ import annotations

# stage -> its title (the Django choice label)
STAGES: dict[str, str] = {
    "sft": "CoT-SFT",
    "dpo": "DPO",
    "verifier": "Verifier",
    "reward": "Reward model",
    "prm": "Process reward model",
    "grpo": "GRPO (M3-RL)",
}
