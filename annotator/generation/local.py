"""Generation with transformers in this process.

Models are loaded once per process and kept warm in a module-level cache keyed by path: loading a
checkpoint costs seconds, a trace must start streaming in milliseconds. When a new checkpoint is
promoted over the same path, ``evict(path)`` (or ``LocalBackend.reload()``) drops the stale copy.

``model.generate`` runs in a thread and hands tokens over through a ``TextIteratorStreamer``. The
caller's ``should_stop`` is polled from the caller's thread (it may touch a database or a cache that
is not thread-safe) and a stop is passed on through an event that a ``StoppingCriteria`` checks
after every token.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotator.generation.backends import MAX_SAMPLES, Delta, GenerationError, GenerationRequest, StepSample
from annotator.generation.steps import next_step

# How often the caller's should_stop is polled while no token arrives (prefill, a slow device).
_IDLE_POLL_S = 0.02


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    processor: Any | None  # set for image-text checkpoints (LLaVA and friends)
    device: str
    lock: threading.Lock  # one generation per model at a time: keeps seeded sampling reproducible


_CACHE: dict[str, _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def evict(path: str | Path) -> bool:
    """Forget the cached model at ``path``; the next request loads it again. True if one was cached."""
    with _CACHE_LOCK:
        return _CACHE.pop(_key(path), None) is not None


def _has_processor(path: Path) -> bool:
    return (path / "processor_config.json").exists() or (path / "preprocessor_config.json").exists()


def _load(path: str | Path, device: str) -> _Loaded:
    key = _key(path)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        import torch

        folder = Path(key)
        if not (folder / "config.json").exists():
            raise GenerationError(f"no model checkpoint at {folder} (config.json missing)")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            if _has_processor(folder):
                from transformers import AutoModelForImageTextToText, AutoProcessor

                processor = AutoProcessor.from_pretrained(folder)
                tokenizer = processor.tokenizer
                model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                processor = None
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise GenerationError(f"cannot load model at {folder}: {exc}") from exc
        model.to(device).eval()
        loaded = _Loaded(model, tokenizer, processor, device, threading.Lock())
        _CACHE[key] = loaded
        return loaded


def _stop_on_event(event: threading.Event) -> Any:
    """A StoppingCriteria that generate checks after every token."""
    import torch
    from transformers import StoppingCriteria

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = event.is_set()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StopOnEvent()


def _stop_at_boundary(tokenizer: Any, prompt_len: int, rule: str, prefix_steps: list[str]) -> Any:
    """A StoppingCriteria that ends each row of a batch once its text reaches the next step boundary."""
    import torch
    from transformers import StoppingCriteria

    class StopAtBoundary(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [next_step(rule, prefix_steps, t, complete=False).kind != "incomplete" for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopAtBoundary()


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class LocalBackend:
    """Stream from a Hugging Face checkpoint folder with transformers (CPU, or CUDA in bf16)."""

    def __init__(self, model_path: str | Path, device: str = "auto") -> None:
        self.model_path = str(model_path)
        self.device = device

    def reload(self) -> None:
        """Drop the cached copy and load the checkpoint again (after a promotion over the same path)."""
        evict(self.model_path)
        _load(self.model_path, self.device)

    def _prompt_inputs(self, loaded: _Loaded, request: GenerationRequest) -> dict[str, Any]:
        messages = list(request.messages)
        if request.prefix:
            # Keep the content shape uniform: some templates cannot mix string and list contents.
            as_parts = any(isinstance(m.get("content"), list) for m in messages)
            content: Any = [{"type": "text", "text": request.prefix}] if as_parts else request.prefix
            messages.append({"role": "assistant", "content": content})
        templater = loaded.processor or loaded.tokenizer
        try:
            text = templater.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=not request.prefix,
                continue_final_message=bool(request.prefix),
            )
        except ValueError as exc:
            raise GenerationError(f"chat template failed: {exc}") from exc
        if request.images:
            if loaded.processor is None:
                raise GenerationError(f"the model at {self.model_path} does not take images")
            from PIL import Image, UnidentifiedImageError

            try:
                images = [Image.open(io.BytesIO(b)).convert("RGB") for b in request.images]
            except UnidentifiedImageError as exc:
                raise GenerationError(f"unreadable image: {exc}") from exc
            inputs = loaded.processor(text=text, images=images, return_tensors="pt")
        else:
            # The template already wrote every special token; adding a BOS again would shift ids.
            inputs = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        return {k: v.to(loaded.device) for k, v in inputs.items()}

    def stream(self, request: GenerationRequest, *, should_stop: Callable[[], bool]) -> Iterator[Delta]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        request.validate()
        loaded = _load(self.model_path, self.device)
        inputs = self._prompt_inputs(loaded, request)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        params = request.params
        stop_event = threading.Event()
        streamer = TextIteratorStreamer(
            loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        gen_kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": params.max_new_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_stop_on_event(stop_event)]),
            "pad_token_id": loaded.tokenizer.pad_token_id,
        }
        if params.temperature == 0:
            gen_kwargs["do_sample"] = False
        else:
            # top_k=0 disables the top-k filter, as vLLM does by default.
            gen_kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)

        result: dict[str, Any] = {}

        def work() -> None:
            # Wait for the model without ignoring a stop: a request queued behind a long generation
            # must still be cancellable (and an abandoned iterator must not wait for the other one).
            while not loaded.lock.acquire(timeout=_IDLE_POLL_S):
                if stop_event.is_set():
                    result["sequences"] = inputs["input_ids"]
                    streamer.end()
                    return
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    result["sequences"] = loaded.model.generate(**gen_kwargs)
            except BaseException as exc:
                result["error"] = exc
                streamer.end()  # unblock the reader; the error is raised below
            finally:
                loaded.lock.release()

        thread = threading.Thread(target=work, name="local-generate", daemon=True)
        cancelled = False
        try:
            if should_stop():
                cancelled = True
                stop_event.set()
                yield Delta("", "cancelled", prompt_tokens, 0)
                return
            thread.start()
            while True:
                if not cancelled and should_stop():
                    cancelled = True
                    stop_event.set()
                try:
                    item = streamer.text_queue.get(timeout=_IDLE_POLL_S)
                except queue.Empty:
                    continue
                if item is streamer.stop_signal:
                    break
                if item:
                    # Text produced before the stop took effect is still the model's output: keep it,
                    # so the stored trace matches the token count.
                    yield Delta(item)
        finally:
            # Also reached when the consumer abandons the iterator: never leave generate running.
            stop_event.set()
            if thread.is_alive():
                thread.join()
        if "error" in result:
            raise GenerationError(f"generation failed: {result['error']}") from result["error"]
        new_tokens = result["sequences"][0, inputs["input_ids"].shape[1] :].tolist()
        if cancelled:
            reason = "cancelled"
        elif new_tokens and new_tokens[-1] in _eos_ids(loaded.model, loaded.tokenizer):
            reason = "stop"
        else:
            reason = "length"
        yield Delta("", reason, prompt_tokens, len(new_tokens))

    def sample_steps(self, request: GenerationRequest, *, n: int, rule: str,
                     prefix_steps: list[str]) -> list[StepSample]:
        """``n`` rows of one ``generate`` call (``num_return_sequences``), each stopped at its own
        step boundary; rows that finished early are padded while the others go on."""
        import torch
        from transformers import StoppingCriteriaList

        request.validate()
        if not 1 <= n <= MAX_SAMPLES:
            raise ValueError(f"n must be between 1 and {MAX_SAMPLES}, got {n}")
        loaded = _load(self.model_path, self.device)
        inputs = self._prompt_inputs(loaded, request)
        prompt_len = int(inputs["input_ids"].shape[1])
        params = request.params
        tokenizer = loaded.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        gen_kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": params.max_new_tokens,
            # Greedy rows would all be the same: one row, copied below.
            "num_return_sequences": n if params.temperature > 0 else 1,
            "stopping_criteria": StoppingCriteriaList([_stop_at_boundary(tokenizer, prompt_len, rule, prefix_steps)]),
            "pad_token_id": pad,
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            gen_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        with loaded.lock:
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    sequences = loaded.model.generate(**gen_kwargs)
            except Exception as exc:
                raise GenerationError(f"sampling failed: {exc}") from exc
        out: list[StepSample] = []
        eos = _eos_ids(loaded.model, tokenizer) | ({pad} if pad is not None else set())
        rows = sequences[:, prompt_len:].tolist()
        for row in rows if len(rows) == n else rows * n:
            ended = bool(row) and row[-1] in eos  # the model's own end (or padding after a row's stop)
            while row and row[-1] in eos:
                row.pop()
            text = tokenizer.decode(row, skip_special_tokens=True)
            found = next_step(rule, prefix_steps, text, complete=False)
            if found.kind == "incomplete" and ended:
                found = next_step(rule, prefix_steps, text, complete=True)  # ended without a newline
            out.append(StepSample(found, len(row)))
        return out
