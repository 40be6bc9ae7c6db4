"""A protocol-level stand-in for ``vllm serve``.

vLLM cannot run on the CPU-only test machines (CUDA-only wheels that would replace torch), so the
vLLM client is tested against this small local HTTP server instead. It speaks the same wire format
as vLLM's OpenAI-compatible API for the endpoints the project uses:

* ``POST /v1/chat/completions`` with ``stream: true``: HTTP/1.1 chunked server-sent events, one
  ``data: {"choices": [{"index": 0, "delta": {"content": ...}, "finish_reason": null}]}`` per token,
  a final chunk with ``finish_reason``, a usage chunk when ``stream_options.include_usage`` is set,
  then ``data: [DONE]``. Errors are JSON ``{"error": {"message", "type", "code"}}``.
* ``POST /v1/chat/completions`` without ``stream``: one JSON ``chat.completion`` with ``n`` choices,
  each cut at the first of ``stop`` (kept when ``include_stop_str_in_output``), ``finish_reason``
  ``stop`` (a stop string or the end of the text, ``stop_reason`` naming the string) or ``length``.
* ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``: ``{"lora_name", "lora_path"}``.

It records every request body and notices when a client hangs up mid-stream. It does not model
anything: the "completion" is canned text cut into chunks, each counted as one token.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeVLLMState:
    completion: str = "<think>\nStep one.\nStep two.\n</think>\nDone."
    # Non-streamed requests: choice i continues with samples[i % len(samples)] (default: completion).
    samples: list[str] | None = None
    chunk_size: int = 3  # characters per streamed "token"
    # The streamed pieces exactly (overrides completion/chunk_size), e.g. the two halves of a
    # surrogate pair, as a server that cuts text in UTF-16 units sends them.
    pieces: list[str] | None = None
    # Send JSON as raw UTF-8 (as vLLM does) with every event cut in two HTTP chunks in the middle of
    # its first multi-byte character: a client must decode the byte stream incrementally.
    split_utf8: bool = False
    delay_s: float = 0.0  # pause before each chunk
    sample_delay_s: float = 0.0  # pause before answering a non-streamed (n-choice) request
    prompt_tokens: int = 11
    error_status: int | None = None  # answer every chat request with this HTTP error
    # A server failing mid-stream after this many streamed pieces: "error" sends an error event (as
    # vLLM does when the engine dies), "drop" cuts the connection without ending the stream.
    fail_after: int | None = None
    fail_how: str = "error"
    error_message: str = "The model `x` does not exist."
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    chunks_sent: int = 0
    client_disconnected: threading.Event = field(default_factory=threading.Event)
    loaded_adapters: dict[str, str] = field(default_factory=dict)
    load_delay_s: float = 0.0  # a slow adapter load: the answer to load_lora_adapter waits this long
    load_started: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": "BadRequestError", "code": status}})

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        state.requests.append((self.path, body))
        if self.path == "/v1/chat/completions":
            self._chat(state, body)
        elif self.path == "/v1/load_lora_adapter":
            state.load_started.set()
            time.sleep(state.load_delay_s)
            if not body.get("lora_name") or not body.get("lora_path"):
                self._error(400, "Both 'lora_name' and 'lora_path' must be provided.")
            elif body["lora_name"] in state.loaded_adapters:
                self._error(400, f"The lora adapter '{body['lora_name']}' has already been loaded.")
            else:
                state.loaded_adapters[body["lora_name"]] = body["lora_path"]
                self._text(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")
        elif self.path == "/v1/unload_lora_adapter":
            if state.loaded_adapters.pop(body.get("lora_name", ""), None) is None:
                self._error(404, f"The lora adapter '{body.get('lora_name')}' cannot be found.")
            else:
                self._text(200, f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")
        else:
            self._json(404, {"detail": "Not Found"})

    def _chat(self, state: FakeVLLMState, body: dict[str, Any]) -> None:
        if state.error_status is not None:
            self._error(state.error_status, state.error_message)
            return
        if not body.get("stream"):
            self._complete(state, body)
            return
        text = state.completion
        pieces = [text[i : i + state.chunk_size] for i in range(0, len(text), state.chunk_size)]
        if state.pieces is not None:
            pieces = list(state.pieces)
        finish = "stop"
        if len(pieces) > body.get("max_tokens", len(pieces)):
            pieces, finish = pieces[: body["max_tokens"]], "length"
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model")}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}]
        events += [
            {**base, "choices": [{"index": 0, "delta": {"content": p}, "logprobs": None, "finish_reason": None}]}
            for p in pieces
        ]
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": finish}]}
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": state.prompt_tokens, "completion_tokens": len(pieces),
                     "total_tokens": state.prompt_tokens + len(pieces)}
            events.append({**base, "choices": [], "usage": usage})
        try:
            for i, event in enumerate(events):
                if 0 < i <= len(pieces) and state.delay_s:
                    time.sleep(state.delay_s)
                if state.fail_after is not None and i == state.fail_after + 1:
                    if state.fail_how == "drop":
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)  # no terminating chunk: the stream is cut short
                        return
                    self._send_event(json.dumps({"error": {"message": "EngineDeadError: the engine died",
                                                           "type": "InternalServerError", "code": 500}}))
                    self._send_event("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                self._send_event(json.dumps(event, ensure_ascii=not state.split_utf8))
                if 0 < i <= len(pieces):
                    state.chunks_sent += 1
            self._send_event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            state.client_disconnected.set()
            self.close_connection = True

    def _complete(self, state: FakeVLLMState, body: dict[str, Any]) -> None:
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 64:
            self._error(400, f"n must be between 1 and 64, got {n!r}")
            return
        samples = state.samples or [state.completion]
        if state.sample_delay_s:
            time.sleep(state.sample_delay_s)
        choices, tokens = [], 0
        for i in range(n):
            text, finish, stop_reason = samples[i % len(samples)], "stop", None
            hits = [(text.find(stop), stop) for stop in body.get("stop") or [] if stop in text]
            if hits:
                at, stop_reason = min(hits)
                text = text[: at + len(stop_reason)] if body.get("include_stop_str_in_output") else text[:at]
            budget = body.get("max_tokens", len(text)) * state.chunk_size
            if len(text) > budget:
                text, finish, stop_reason = text[:budget], "length", None
            tokens += -(-len(text) // state.chunk_size)
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                            "finish_reason": finish, "stop_reason": stop_reason})
        self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                         "model": body.get("model"), "choices": choices,
                         "usage": {"prompt_tokens": state.prompt_tokens, "completion_tokens": tokens,
                                   "total_tokens": state.prompt_tokens + tokens}})

    def _send_event(self, payload: str) -> None:
        data = f"data: {payload}\n\n".encode("utf-8", "surrogatepass")
        cut = next((i for i, byte in enumerate(data) if byte & 0xC0 == 0x80), None)  # inside a character
        for part in [data] if cut is None or not self.server.state.split_utf8 else [data[:cut], data[cut:]]:
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # socketserver's default backlog (5) resets a burst of connects; vLLM's is 2048
    state: FakeVLLMState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (a stop, a closed keep-alive connection) is expected, not an error.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeVLLM:
    """``with FakeVLLM() as fake: VLLMBackend(fake.base_url, "m")`` — serves on 127.0.0.1, port 0."""

    def __init__(self, **state: Any) -> None:
        self.state = FakeVLLMState(**state)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        # A short poll interval: shutdown() waits up to one interval, and tests start many servers.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-vllm", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        return self.state.requests

    def start(self) -> FakeVLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
