"""Generation through a ``vllm serve`` OpenAI-compatible server (production serving).

Chat completions with ``stream: true``: the server answers with server-sent events, ``data: {json}``
lines ending with ``data: [DONE]``. A partial assistant message is continued with
``continue_final_message: true, add_generation_prompt: false`` (vLLM's extension of the OpenAI API),
so a human-edited prefix is extended in place instead of starting a new turn. Closing the HTTP
connection aborts the request on the server, which is how a stop reaches vLLM.

Only HTTP clients are needed here: vLLM runs as its own service (it is CUDA-only and would replace
torch). httpx serves the blocking calls; the relay hub's streams (``astream``) are read with aiohttp,
whose C parser and one wake-up per network read cost about 0.6x of httpx's CPU per event
(BENCHMARKS.md, "Reading the vLLM stream").
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import json
import re
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import httpx

from annotator.generation.backends import MAX_SAMPLES, Delta, GenerationError, GenerationRequest, StepSample
from annotator.generation.steps import boundary_stop_strings, next_step

# vLLM reports "abort" when the request was cancelled on its side; anything else ends a turn normally.
_FINISH_MAP = {"stop": "stop", "length": "length", "abort": "cancelled"}


def _image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    raise GenerationError("images must be PNG, JPEG, GIF or WebP bytes")


def _openai_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """Our messages (image placeholders + separate bytes) → OpenAI content parts with data URLs."""
    images = iter(request.images)
    out: list[dict[str, Any]] = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            parts: list[dict[str, Any]] = []
            for part in content:
                if part.get("type") == "image":
                    data = next(images)
                    url = f"data:{_image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                elif part.get("type") == "text":
                    parts.append({"type": "text", "text": part.get("text", "")})
                else:
                    parts.append(part)
            content = parts
        out.append({**message, "content": content})
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(pending: str, text: str) -> tuple[str, str]:
    """(text to yield now, text held back): a delta that ends in the first half of a UTF-16
    surrogate pair waits for the second half, which a server that cuts text in UTF-16 units sends
    in the next delta; pairs are joined into their character."""
    text = pending + text
    held = ""
    if text and "\ud800" <= text[-1] <= "\udbff":
        text, held = text[:-1], text[-1]
    if _SURROGATE.search(text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
    return text, held


def _error_message(response: httpx.Response) -> str:
    return _error_text(response.text, response.reason_phrase)


def _error_text(text: str, reason: str) -> str:
    """vLLM answers errors as {"error": {"message": ...}} (newer) or {"message": ...} / {"detail": ...}."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip() or reason
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)


class _StreamReader:
    """The SSE lines of one streamed chat completion → deltas, for the sync and the async client
    alike (so both relay exactly the same text, errors and finish reasons)."""

    def __init__(self) -> None:
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.done = False
        self.cancelled = False
        self.held = ""

    def line(self, line: str) -> list[Delta]:
        if not line.startswith("data:"):
            return []  # blank separators and ": keep-alive" comments
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise GenerationError("vLLM sent a malformed event", remote_detail=repr(payload[:200])) from exc
        if "error" in chunk:
            err = chunk["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise GenerationError("vLLM reported an error during generation", remote_detail=str(msg))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                text, self.held = _whole_characters(self.held, text)
                if text:
                    out.append(Delta(text))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> Iterator[Delta]:
        """The last deltas once the stream is over (or cancelled); raises when it was cut short."""
        if self.held:
            yield Delta(self.held)  # a half that never got its other half: the caller stores it as U+FFFD
        usage = self.usage
        if self.cancelled:
            # vLLM sends usage only at the end, so a cancelled stream has no token counts.
            yield Delta("", "cancelled", usage.get("prompt_tokens"), usage.get("completion_tokens"))
            return
        if not self.done and self.finish is None:
            raise GenerationError("the vLLM stream ended before the completion finished")
        yield Delta("", _FINISH_MAP.get(self.finish or "stop", "stop"), usage.get("prompt_tokens"),
                    usage.get("completion_tokens"))

class VLLMBackend:
    """Client for one served model (or LoRA adapter name) on a vLLM server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The read timeout bounds the wait for the next token, not the whole generation.
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        # No cap on connections (httpx's default is 100): a thread relay with more traces than that
        # would hold the rest back silently; the worker's concurrency (or the relay hub) bounds them.
        self._client = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout,
                                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary()
        )

    def close(self) -> None:
        self._client.close()

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON sent to /v1/chat/completions (public so callers and tests can inspect it)."""
        params = request.params
        messages = _openai_messages(request)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if request.prefix:
            as_parts = any(isinstance(m.get("content"), list) for m in messages)
            content: Any = [{"type": "text", "text": request.prefix}] if as_parts else request.prefix
            messages.append({"role": "assistant", "content": content})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        else:
            body["add_generation_prompt"] = True
        return body

    def stream(self, request: GenerationRequest, *, should_stop: Callable[[], bool]) -> Iterator[Delta]:
        request.validate()
        body = self.request_body(request)
        reader = _StreamReader()
        try:
            if should_stop():
                yield Delta("", "cancelled", None, 0)
                return
            with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise GenerationError(
                        f"vLLM answered {response.status_code}", remote_detail=_error_message(response)
                    )
                for line in response.iter_lines():
                    if should_stop():
                        # Leaving the with-block closes the connection; vLLM aborts the request.
                        reader.cancelled = True
                        break
                    yield from reader.line(line)
                    if reader.done:
                        break
        except httpx.HTTPError as exc:
            raise GenerationError(f"cannot stream from vLLM at {self.base_url}: {exc}") from exc
        yield from reader.end()

    async def astream(self, request: GenerationRequest, *, should_stop: Callable[[], bool]) -> AsyncIterator[Delta]:
        """``stream`` on the running event loop (the generate worker's relay hub): the same request,
        the same deltas and errors, read with an aiohttp session of this loop, so one thread relays
        many streams. ``should_stop`` must be cheap and must not block (it is called between network
        reads on the loop).

        Each network read is decoded (UTF-8, incrementally: a character may be cut between reads)
        and cut into lines at ``\\n`` (a ``\\r`` before it dropped), as the SSE lines vLLM sends; one
        wake-up per read, however many events it holds. No redirects are followed (the URL was
        checked against the allowed backends; a redirect could lead elsewhere)."""
        request.validate()
        body = self.request_body(request)
        reader = _StreamReader()
        try:
            if should_stop():
                yield Delta("", "cancelled", None, 0)
                return
            async with self._async_session().post(self.base_url + "/v1/chat/completions", json=body,
                                                  allow_redirects=False) as response:
                if response.status >= 400:
                    text = (await response.read()).decode("utf-8", "replace")
                    raise GenerationError(
                        f"vLLM answered {response.status}", remote_detail=_error_text(text, response.reason or "")
                    )
                decoder = codecs.getincrementaldecoder("utf-8")("replace")
                pending = ""
                async for data in response.content.iter_any():
                    if should_stop():
                        reader.cancelled = True
                        response.close()  # the connection closes: vLLM aborts the request
                        break
                    *lines, pending = (pending + decoder.decode(data)).split("\n")
                    for line in lines:
                        for delta in reader.line(line.removesuffix("\r")):
                            yield delta
                        if reader.done:
                            break
                    if reader.done:
                        break
                else:
                    last = pending + decoder.decode(b"", final=True)
                    if last and not reader.done:
                        for delta in reader.line(last.removesuffix("\r")):
                            yield delta
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GenerationError(f"cannot stream from vLLM at {self.base_url}: {exc!r}") from exc
        for delta in reader.end():
            yield delta

    def _async_session(self) -> aiohttp.ClientSession:
        """One aiohttp session per event loop (its connections belong to the loop). No cap on
        connections: the relay hub bounds how many streams a worker holds at once. The read timeout
        bounds the wait for the next bytes, not the whole generation, as the blocking client's does."""
        loop = asyncio.get_running_loop()
        session = self._async_clients.get(loop)
        if session is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout.connect, sock_read=self._timeout.read)
            session = self._async_clients[loop] = aiohttp.ClientSession(
                headers=self._headers, timeout=timeout, trust_env=True,
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            )
        return session

    async def aclose(self) -> None:
        """Close this loop's session (the relay hub does this as it shuts down)."""
        session = self._async_clients.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def sample_body(self, request: GenerationRequest, *, n: int, rule: str) -> dict[str, Any]:
        """The JSON of a ``sample_steps`` call: one non-streamed chat completion with ``n`` choices
        that continue the partial assistant message and stop at the step boundary (the stop string
        is kept in the output, so ``next_step`` can tell a closed step from a closed think block)."""
        body = self.request_body(request)
        del body["stream"], body["stream_options"]
        body.update(n=n, stop=boundary_stop_strings(rule), include_stop_str_in_output=True)
        return body

    def sample_steps(self, request: GenerationRequest, *, n: int, rule: str,
                     prefix_steps: list[str]) -> list[StepSample]:
        request.validate()
        if not 1 <= n <= MAX_SAMPLES:
            raise ValueError(f"n must be between 1 and {MAX_SAMPLES}, got {n}")
        if not request.prefix:
            raise ValueError("sample_steps continues a rendered prefix; request.prefix is empty")
        try:
            response = self._client.post("/v1/chat/completions", json=self.sample_body(request, n=n, rule=rule))
        except httpx.HTTPError as exc:
            raise GenerationError(f"cannot sample from vLLM at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise GenerationError(f"vLLM answered {response.status_code}", remote_detail=_error_message(response))
        try:
            choices = sorted(response.json()["choices"], key=lambda c: c.get("index", 0))
            texts = [(c["message"].get("content") or "", c.get("finish_reason")) for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GenerationError("vLLM sent a malformed completion", remote_detail=response.text[:200]) from exc
        if len(texts) != n:
            raise GenerationError(f"vLLM answered {len(texts)} choices for n={n}")
        out = []
        for text, finish in texts:
            found = next_step(rule, prefix_steps, text, complete=False)
            if found.kind == "incomplete" and finish == "stop":  # the model's end of sequence
                found = next_step(rule, prefix_steps, text, complete=True)
            out.append(StepSample(found))
        return out

    def load_lora_adapter(self, name: str, path: str) -> None:
        """Make a trained LoRA adapter servable as model ``name`` (needs the server started with
        ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``)."""
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    def unload_lora_adapter(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name})

    def _post(self, url: str, body: dict[str, Any]) -> None:
        try:
            response = self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise GenerationError(f"cannot reach vLLM at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise GenerationError(f"vLLM answered {response.status_code}", remote_detail=_error_message(response))
