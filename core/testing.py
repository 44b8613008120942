"""Helpers for plugin authors' tests: a scripted chat model, a scripted user, an in-memory store.

Light: standard library and core only. The helpers that need Hugging Face (a tiny model, SmolLM2, a
``transformers serve`` wrapper) are in :mod:`synthagent.plugins.backends.hf_testing`.

Example::

    from synthagent.core.testing import ScriptedChatModel, ScriptedUser, tool_call_message
    policy = ScriptedChatModel([tool_call_message("get_balance", {"account_id": "A1"}), "Your balance is 5."])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from synthagent.core.models import Message, Task, ToolCall, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse, UserTurn

__all__ = [
    "ScriptedChatModel",
    "ScriptedUser",
    "InMemoryMappingStore",
    "ScriptedOpenAIServer",
    "tool_call_message",
    "executor_probe_job",
]


def tool_call_message(name: str, arguments: Mapping[str, Any], call_id: str = "call_0") -> Message:
    """An assistant message that calls one tool."""
    return Message("assistant", None, (ToolCall(call_id, name, dict(arguments)),))


class ScriptedChatModel:
    """An LLM backend that replies with a fixed script (strings become assistant text messages).

    After the script runs out it repeats ``default``. Every request is kept in :attr:`requests`.
    """

    def __init__(self, script: Iterable[Message | str], *, name: str = "scripted", default: str = "Done.") -> None:
        self.script = [m if isinstance(m, Message) else Message("assistant", m) for m in script]
        self.name = name
        self.default = default
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The next scripted message."""
        self.requests.append(request)
        index = len(self.requests) - 1
        message = self.script[index] if index < len(self.script) else Message("assistant", self.default)
        return ChatResponse(message, Usage(prompt_tokens=0, completion_tokens=0, calls=1))


class ScriptedUser:
    """A user simulator (and session) that replies with a fixed script, then stops."""

    def __init__(self, replies: Sequence[str] = (), stop_text: str = "Thanks, bye.") -> None:
        self.replies = list(replies)
        self.stop_text = stop_text
        self.turns = 0

    async def start(self, task: Task, seed: int) -> ScriptedUser:
        """A fresh session with the same script."""
        return ScriptedUser(self.replies, self.stop_text)

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """The next scripted reply, or a stop."""
        self.turns += 1
        if self.turns <= len(self.replies):
            return UserTurn(Message("user", self.replies[self.turns - 1]))
        return UserTurn(Message("user", self.stop_text), stop=True)


class InMemoryMappingStore:
    """A mapping store in a dict (first writer wins)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}

    async def get(self, task_id: str, key: str) -> Any | None:
        """The stored response, or None."""
        return self.data.get((task_id, key))

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Store unless present; return the stored response."""
        return self.data.setdefault((task_id, key), value)


class ScriptedOpenAIServer:
    """A loopback OpenAI-compatible chat server for tests, with scripted replies and injected faults.

    :param reply: ``reply(request_body) -> str | dict | bytes`` gives the assistant message (a string is the
        content; a dict may carry ``content`` and ``tool_calls``; bytes are sent as the whole response body, as
        is). Default: ``"ok"``.
    :param faults: probability of each fault per request: an HTTP status (``"500"``, ``"503"``, ``"400"``,
        ...; ``"429"`` comes with ``Retry-After``), ``"timeout"`` (answers after ``timeout_delay_s``), ``"malformed"`` (a truncated
        JSON body with status 200), ``"drop"`` (closes the connection without answering).
    :param seed: seeds the fault draws, so a test run is reproducible.
    :param latency_s: delay before every answer.
    :param fault_for: ``fault_for(request_body) -> kind | None``: a fault aimed at chosen requests (same kinds
        as ``faults``; None: answer normally, after the random draw). Example: drop the connection of one
        rollout's call mid-flight, ``fault_for=lambda b: "drop" if "ORDER-7" in str(b) else None``.

    :param port: the port on 127.0.0.1 (0: any free port).

    Use as a context manager; :attr:`base_url` is ``http://127.0.0.1:PORT/v1``; :attr:`served` counts what
    was answered by kind and :attr:`requests` keeps every request body.
    """

    def __init__(self, reply: Any = None, *, faults: Mapping[str, float] | None = None, seed: int = 0,
                 latency_s: float = 0.0, timeout_delay_s: float = 5.0, retry_after_s: float = 0.01,
                 fault_for: Any = None, port: int = 0) -> None:
        import random
        import threading
        from collections import Counter

        self.reply = reply or (lambda body: "ok")
        self.faults = dict(faults or {})
        self.fault_for = fault_for
        self.latency_s = latency_s
        self.timeout_delay_s = timeout_delay_s
        self.retry_after_s = retry_after_s
        self.served: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: Any = None
        self.base_url = ""
        self.port = int(port)

    def _draw(self) -> str:
        with self._lock:
            x = self._rng.random()
        for kind, p in self.faults.items():
            if x < p:
                return kind
            x -= p
        return "ok"

    def __enter__(self) -> ScriptedOpenAIServer:
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (its timeout): nothing to answer
                    self.close_connection = True

            def do_GET(self) -> None:  # /v1/models
                self._send(200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.requests.append(body)
                if outer.latency_s:
                    time.sleep(outer.latency_s)
                kind = (outer.fault_for(body) if outer.fault_for is not None else None) or outer._draw()
                with outer._lock:
                    outer.served[kind] += 1
                if kind == "429":
                    self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": str(outer.retry_after_s)})
                elif kind.isdigit():
                    self._send(int(kind), b'{"error": {"message": "injected failure"}}')
                elif kind == "timeout":
                    time.sleep(outer.timeout_delay_s)
                    self._send(504, b"{}")
                elif kind == "malformed":
                    self._send(200, b'{"id": "x", "choices": [{"message": {"role": "assis')
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                else:
                    out = outer.reply(body)
                    if isinstance(out, bytes):  # a raw body, sent as is (e.g. bytes that are not UTF-8)
                        self._send(200, out)
                        return
                    message = {"role": "assistant", "content": out} if isinstance(out, str) else {"role": "assistant", **out}
                    payload = {"id": "chatcmpl-scripted", "object": "chat.completion", "model": body.get("model", ""),
                               "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                    self._send(200, json.dumps(payload).encode())

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # the default listen backlog (5) refuses bursts of concurrent clients

            def handle_error(self, request: Any, client_address: Any) -> None:  # a dropped client is expected
                pass

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- executor contract helpers (module-level, so worker processes and Ray actors can import them) ----------


async def executor_probe_job(item: Mapping[str, Any]) -> dict[str, Any]:
    """A job for testing executors: writes its pid to the file ``item["touch"]`` when given, blocks its whole
    event loop for ``item["block"]`` seconds (a job stuck in a call that does not yield), sleeps
    ``item["sleep"]`` seconds, then raises ``ValueError`` when ``item["raise"]``, ends its whole process when
    ``item["exit"]`` (a crashed worker), else returns ``{"value": item["value"] * 2, "pid": <the process that
    ran it>}``."""
    import asyncio
    import os
    import time

    if item.get("touch"):
        with open(item["touch"], "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
    if item.get("block"):
        time.sleep(float(item["block"]))
    await asyncio.sleep(float(item.get("sleep", 0.0)))
    if item.get("exit"):
        os._exit(17)
    if item.get("raise"):
        raise ValueError(f"probe job {item.get('value')} failed on purpose")
    return {"value": item.get("value", 0) * 2, "pid": os.getpid()}
