"""How a project splits the think block into steps (``Project.step_rule``).

The names and meanings live here; the streaming segmenter that applies them is
``annotator.generation.steps.StepSegmenter``. ``format.split_completion`` is the default rule
("line") applied to a finished completion.
"""

from __future__ import annotations

DEFAULT_STEP_RULE = "line"

# rule -> what it means (also the Django choice label)
STEP_RULES: dict[str, str] = {
    "line": "One step per non-empty line",
    "blank_line": "Steps separated by blank lines",
    "numbered": "A step starts at a numbered line",
}
