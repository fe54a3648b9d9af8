"""A real loopback HTTP server that speaks the OpenAI Chat Completions and Anthropic Messages
streaming wire protocols, driven by a script of canned responses.

It stands in for a model vendor in tests: the real ``openai`` / ``anthropic`` SDKs talk to it over
TCP on 127.0.0.1, so the providers are exercised end to end without mocking the SDKs.

In process::

    with VendorServer([{"text": ["Hel", "lo"]}]) as server:
        env = {"OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "sk-test"}
        ...
        server.requests[0].body        # what the SDK sent
        server.stats()["requests"]     # how many calls arrived

Standalone (for tests that need the vendor in another OS process)::

    python -m tests.support.vendor_servers --port 0 --script script.json
    # first line of stdout: the port; then GET /_stats, GET /_requests, POST /_script

A script is a list of responses (or ``{"responses": [...], "default": {...}}``); each request to a
vendor path consumes the next one. When the script is exhausted the ``default`` response is used, or,
without one, a 400 ``script_exhausted`` error (non-transient, so an engine does not retry forever).

A response is a JSON object; every key is optional:

- ``text``: list of text chunks, streamed in order (a plain string is one chunk).
- ``tool_calls``: list of ``{"id", "name", "arguments"}``; ``arguments`` is a list of JSON text
  fragments (or one string), streamed as separate deltas.
- ``usage``: the vendor's own usage object, sent as is (OpenAI: ``prompt_tokens``,
  ``completion_tokens``, ``prompt_tokens_details.cached_tokens``,
  ``completion_tokens_details.reasoning_tokens``; Anthropic: ``input_tokens``, ``output_tokens``,
  ``cache_read_input_tokens``, ``cache_creation_input_tokens``). A plausible default otherwise.
- ``finish_reason``: the vendor's own value (OpenAI ``stop``/``tool_calls``/``length``;
  Anthropic ``end_turn``/``tool_use``/``max_tokens``); derived from ``tool_calls`` otherwise.
- ``status``: an HTTP error status (e.g. 400, 429, 500); the body is the vendor's error envelope
  built from ``message`` and ``error_type``, or ``body`` verbatim. ``headers`` adds response headers.
- ``delay``: seconds to wait before sending the status line (a hang, for timeouts).
- ``hang_after``: number of stream events to send before hanging ``hang`` seconds (default 30)
  mid-stream; the connection then closes without a terminal event.
- ``truncate_after``: number of stream events after which the connection is closed cleanly,
  without the terminal event.
- ``stream_error``: ``{"type", "message"}``: after the content, send the vendor's in-stream error
  event instead of finishing.
- ``chunk_interval``: seconds to sleep between stream events.
- ``raw_events``: replaces the rendered stream with these events verbatim, to reproduce a server's
  quirks. OpenAI: each item is sent as one ``data:`` line (objects JSON-encoded, strings as is,
  so include ``"[DONE]"`` yourself). Anthropic: each object is sent as ``event: <its type>``.

Hangs wait on the server's stop event, so ``stop()`` never blocks on a sleeping handler.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

Response = dict[str, Any]


@dataclass
class RecordedRequest:
    """One request the server received (vendor paths only)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON
    received_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "received_at": self.received_at,
        }


class _Hangup(Exception):
    """Raised inside a handler to drop the connection without a terminal event."""


class VendorServer:
    """A scripted OpenAI + Anthropic look-alike on 127.0.0.1 (ephemeral port unless given)."""

    def __init__(self, script: list[Response] | None = None, *, default: Response | None = None, port: int = 0):
        self._lock = threading.Lock()
        self._script: collections.deque[Response] = collections.deque(script or ())
        self.default = default
        self.requests: list[RecordedRequest] = []
        self.stop_event = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> VendorServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="vendor-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> VendorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    # script and records ----------------------------------------------------------------------

    def push(self, *responses: Response) -> None:
        """Append responses to the script."""
        with self._lock:
            self._script.extend(responses)

    def next_response(self) -> Response:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.default is not None:
            return dict(self.default)
        return {"status": 400, "error_type": "script_exhausted", "message": "the loopback script is exhausted"}

    def record(self, request: RecordedRequest) -> int:
        """Keep ``request``; returns its 1-based sequence number."""
        with self._lock:
            self.requests.append(request)
            return len(self.requests)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_path = collections.Counter(r.path for r in self.requests)
            return {"requests": len(self.requests), "by_path": dict(by_path), "remaining": len(self._script)}

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


# wire rendering ------------------------------------------------------------------------------


def _fragments(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _sse_data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _sse_event(event: str, payload: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


def _openai_error_body(response: Response) -> Any:
    if "body" in response:
        return response["body"]
    return {
        "error": {
            "message": response.get("message", f"loopback error {response['status']}"),
            "type": response.get("error_type", "server_error"),
            "param": None,
            "code": None,
        }
    }


def _anthropic_error_body(response: Response) -> Any:
    if "body" in response:
        return response["body"]
    return {
        "type": "error",
        "error": {
            "type": response.get("error_type", "api_error"),
            "message": response.get("message", f"loopback error {response['status']}"),
        },
    }


def openai_events(response: Response, request_body: Any, seq: int) -> Iterator[bytes]:
    """The SSE byte chunks of one scripted OpenAI chat-completions stream."""
    model = request_body.get("model", "loopback") if isinstance(request_body, dict) else "loopback"
    base = {"id": f"chatcmpl-loopback-{seq}", "object": "chat.completion.chunk", "created": 0, "model": model}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return _sse_data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    yield chunk({"role": "assistant", "content": ""})
    for text in _fragments(response.get("text")):
        yield chunk({"content": text})
    tool_calls = response.get("tool_calls") or []
    for index, call in enumerate(tool_calls):
        call_id = call.get("id") or f"call_loopback_{seq}_{index}"
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": call["name"], "arguments": ""}}
        yield chunk({"tool_calls": [head]})
        for fragment in _fragments(call.get("arguments")):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    if "stream_error" in response:
        err = response["stream_error"]
        yield _sse_data({"error": {"message": err.get("message", "stream error"), "type": err.get("type", "")}})
        return
    finish = response.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
    yield chunk({}, finish)
    usage = response.get("usage") or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    include_usage = isinstance(request_body, dict) and (request_body.get("stream_options") or {}).get("include_usage")
    if include_usage:
        yield _sse_data({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def anthropic_events(response: Response, request_body: Any, seq: int) -> Iterator[bytes]:
    """The SSE byte chunks of one scripted Anthropic messages stream."""
    model = request_body.get("model", "loopback") if isinstance(request_body, dict) else "loopback"
    usage = dict(response.get("usage") or {"input_tokens": 10, "output_tokens": 5})
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
    start_usage["output_tokens"] = 1
    message = {
        "id": f"msg_loopback_{seq}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield _sse_event("message_start", {"type": "message_start", "message": message})
    index = 0
    texts = _fragments(response.get("text"))
    if texts:
        block = {"type": "text", "text": ""}
        yield _sse_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        yield _sse_event("ping", {"type": "ping"})
        for text in texts:
            delta = {"type": "text_delta", "text": text}
            yield _sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    tool_calls = response.get("tool_calls") or []
    for n, call in enumerate(tool_calls):
        block = {"type": "tool_use", "id": call.get("id") or f"toolu_loopback_{seq}_{n}", "name": call["name"]}
        block["input"] = {}
        yield _sse_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        for fragment in _fragments(call.get("arguments")):
            delta = {"type": "input_json_delta", "partial_json": fragment}
            yield _sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    if "stream_error" in response:
        err = response["stream_error"]
        error = {"type": err.get("type", "overloaded_error"), "message": err.get("message", "stream error")}
        yield _sse_event("error", {"type": "error", "error": error})
        return
    stop_reason = response.get("finish_reason") or ("tool_use" if tool_calls else "end_turn")
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    delta["usage"] = {"output_tokens": usage.get("output_tokens", 0)}
    yield _sse_event("message_delta", delta)
    yield _sse_event("message_stop", {"type": "message_stop"})


def _raw_events(items: list[Any], openai: bool) -> Iterator[bytes]:
    for item in items:
        if openai:
            yield f"data: {item}\n\n".encode() if isinstance(item, str) else _sse_data(item)
        else:
            yield _sse_event(str(item.get("type")), item)


# HTTP handler --------------------------------------------------------------------------------


def _make_handler(server: VendorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "LoopbackVendor/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode(errors="replace")

        def do_GET(self) -> None:
            if self.path == "/_stats":
                self._send_json(200, server.stats())
            elif self.path == "/_requests":
                with server._lock:
                    self._send_json(200, [r.to_dict() for r in server.requests])
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            body = self._read_body()
            if self.path == "/_script":
                responses = body.get("responses", []) if isinstance(body, dict) else body
                server.push(*responses)
                self._send_json(200, server.stats())
                return
            if self.path not in (OPENAI_PATH, ANTHROPIC_PATH):
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            seq = server.record(RecordedRequest(method="POST", path=self.path, headers=headers, body=body))
            response = server.next_response()
            self._respond(response, body, seq)

        def _respond(self, response: Response, body: Any, seq: int) -> None:
            openai = self.path == OPENAI_PATH
            if response.get("delay"):
                server.stop_event.wait(float(response["delay"]))
            status = int(response.get("status") or 200)
            if status >= 400:
                envelope = _openai_error_body(response) if openai else _anthropic_error_body(response)
                self._send_json(status, envelope, response.get("headers"))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            # No Content-Length and no chunking: the stream ends when the connection closes.
            self.send_header("Connection", "close")
            for name, value in (response.get("headers") or {}).items():
                self.send_header(name, str(value))
            self.end_headers()
            self.close_connection = True
            if "raw_events" in response:
                events = _raw_events(response["raw_events"], openai)
            elif openai:
                events = openai_events(response, body, seq)
            else:
                events = anthropic_events(response, body, seq)
            try:
                self._stream(response, events)
            except (BrokenPipeError, ConnectionResetError, _Hangup):
                pass

        def _stream(self, response: Response, events: Iterator[bytes]) -> None:
            hang_after = response.get("hang_after")
            truncate_after = response.get("truncate_after")
            interval = float(response.get("chunk_interval") or 0)
            for sent, event in enumerate(events):
                if hang_after is not None and sent >= int(hang_after):
                    server.stop_event.wait(float(response.get("hang", 30)))
                    raise _Hangup
                if truncate_after is not None and sent >= int(truncate_after):
                    raise _Hangup
                if interval and sent:
                    server.stop_event.wait(interval)
                self.wfile.write(event)
                self.wfile.flush()

    return Handler


def _load_script(path: str | None) -> tuple[list[Response], Response | None]:
    if not path:
        return [], None
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, list):
        return data, None
    return list(data.get("responses") or []), data.get("default")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted loopback OpenAI/Anthropic server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="JSON file: a list of responses or {responses, default}")
    args = parser.parse_args(argv)
    script, default = _load_script(args.script)
    server = VendorServer(script, default=default, port=args.port)
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop_event.set()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
