"""Build a generation backend by kind. Its own module: the backends import the protocol in
``backends``, and this is the one module that imports the backends."""

from __future__ import annotations

from typing import Any

from annotator.generation.backends import GenerationBackend


def make_backend(kind: str, **options: Any) -> GenerationBackend:
    """``make_backend("local", model_path=...)`` or ``make_backend("vllm", base_url=..., model=...)``."""
    # Imported lazily: the vLLM client must not pull in torch, and the local one is heavy.
    if kind == "local":
        from annotator.generation.local import LocalBackend

        return LocalBackend(**options)
    if kind == "vllm":
        from annotator.generation.vllm import VLLMBackend

        return VLLMBackend(**options)
    raise ValueError(f"unknown generation backend {kind!r}; expected 'local' or 'vllm'")
