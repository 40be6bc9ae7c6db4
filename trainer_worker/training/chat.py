"""Plain helpers on chat data as TRL passes it (no model, no tokenizer): messages, their text, completions.

Their own module so that both the stages and the rewards read them without importing each other.
"""

from __future__ import annotations

from typing import Any


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def as_messages(prompt: Any) -> list[dict[str, Any]]:
    return list(prompt) if is_conversational(prompt) else [{"role": "user", "content": str(prompt)}]


def message_text(content: Any) -> str:
    """Text of a message content (a string, or a list of parts of which the text parts count)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def completion_text(completion: Any) -> str:
    """Text of a completion as TRL passes it: a string or a list of assistant message dicts."""
    if isinstance(completion, str):
        return completion
    return "".join(message_text(m.get("content", "")) for m in completion)
