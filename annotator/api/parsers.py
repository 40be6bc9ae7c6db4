"""The API's JSON parser: the shared input check (annotator/input.py) at the door, so that NUL, lone
surrogates, deep nesting, NaN and out-of-range integers get a 400 before any view or service runs."""

from __future__ import annotations

from typing import Any

from rest_framework.parsers import JSONParser

from annotator import input as untrusted


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        raw = stream.read() if stream is not None else b""
        return untrusted.loads(raw)
