"""One check for untrusted JSON and text, shared by every entry point (the REST parser, query strings,
JSONL import lines and the websocket's frames).

What it refuses is what PostgreSQL, Python or a later encoder cannot take, so that such input gets a
clear 400 at the door instead of a 500 somewhere inside: NUL characters (PostgreSQL text and jsonb
cannot hold U+0000), lone surrogates (not encodable as UTF-8), JSON nested deeper than MAX_DEPTH
(recursion in json and in the serialisers), NaN / Infinity, and integers outside PostgreSQL's bigint.
"""

from __future__ import annotations

import json
import math
from typing import Any

from annotator.errors import InvalidInput

MAX_DEPTH = 32
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
_MAX_INT_DIGITS = 20  # bigint has 19; anything longer is refused before int() spends time on it


class BadJSON(InvalidInput):
    code = "bad_json"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def loads(text: str | bytes, *, what: str = "The body") -> Any:
    """json.loads for untrusted text: BadJSON for what is not JSON we take, InvalidInput for values."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadJSON(f"{what} is not UTF-8 (byte {exc.start}).") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except RecursionError:
        raise BadJSON(f"{what} is nested too deeply; the limit is {MAX_DEPTH} levels.") from None
    except json.JSONDecodeError as exc:
        raise BadJSON(f"{what} is invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}).") from None
    except ValueError as exc:
        raise BadJSON(f"{what} is invalid JSON ({exc}).") from None
    check_value(value, what=what)
    return value


def check_text(value: str, *, where: str) -> None:
    if "\x00" in value:
        raise InvalidInput(f"{where}: text may not contain NUL (U+0000).")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}: text may not contain a lone surrogate (U+D800 to U+DFFF).") from None


def check_value(value: Any, *, what: str = "The body") -> None:
    """Walk a decoded JSON value (iteratively: depth is what is being checked) and refuse what cannot
    be stored. The message names where the bad value is, e.g. `messages[0].content`."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        where = f"{what} at {path}" if path else what
        if depth > MAX_DEPTH:
            raise BadJSON(f"{what} is nested too deeply; the limit is {MAX_DEPTH} levels.")
        if isinstance(item, str):
            check_text(item, where=where)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not BIGINT_MIN <= item <= BIGINT_MAX:
                raise InvalidInput(f"{where}: the integer is out of range (64-bit signed).")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{where}: numbers must be finite.")
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(f"{where}: object keys must be strings.")
                check_text(key, where=f"{where} (a key)")
                stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(item):
                stack.append((child, depth + 1, f"{path}[{index}]"))
        else:
            raise InvalidInput(f"{where}: {type(item).__name__} is not a JSON value.")


def json_size(value: Any) -> int:
    """Bytes of a value as stored (compact JSON), for size caps on free-form JSON fields."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
