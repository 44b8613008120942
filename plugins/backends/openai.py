"""The ``openai`` LLM backend: any OpenAI-compatible chat-completions endpoint.

Works with ``vllm serve``, ``transformers serve``, llama.cpp's server and hosted providers. Requests are
bounded by a semaphore (``max_concurrency``) and a per-request timeout. Transport failures (connection
errors, timeouts, HTTP 408/409/425/429/5xx, and response bodies that are not the JSON the API promises) are
retried with exponential backoff and full jitter, honouring ``Retry-After``; every failure is counted by kind
in :attr:`OpenAIBackend.stats`. When retries run out the call raises :class:`LLMUnavailableError`, which the
agent loop records as an infrastructure failure (never a reward of 0). A model *output* that does not parse
(a malformed tool call) is not a transport failure: it reaches the environment as an error observation.

The API key is read from the environment variable named by ``api_key_env`` and is never stored in the
config, logged, or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from synthagent.core.errors import ConfigError, SynthError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Message, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.toolcalls import parse_assistant

__all__ = ["OpenAIBackend", "LLMUnavailableError", "RETRY_STATUSES", "to_openai_messages"]

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LLMUnavailableError(SynthError):
    """The endpoint kept failing after every retry (an infrastructure failure, not a model error)."""


def to_openai_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages in the OpenAI wire format (tool-call ``arguments`` as JSON strings)."""
    out = []
    for m in messages:
        d = m.openai()
        for call in d.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
        out.append(d)
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class OpenAIBackend:
    """Chat through an OpenAI-compatible HTTP endpoint.

    :param model: the model name the server expects.
    :param base_url: e.g. ``http://127.0.0.1:8000/v1``.
    :param api_key_env: environment variable holding the API key (optional for local servers).
    :param temperature: default sampling temperature (a request's ``params`` override it).
    :param max_tokens: default completion limit.
    :param timeout_s: per-request timeout.
    :param max_concurrency: requests in flight at once.
    :param max_retries: transport retries per request.
    :param backoff_s: first backoff; doubles each retry, capped by ``backoff_max_s``; full jitter.
    :param connections_per_client: connections per httpx pool; ``max_concurrency`` is spread over several
        pools of this size (one large httpx pool slows down past a few dozen requests in flight).
    """

    def __init__(
        self,
        model: str = "",
        base_url: str = "",
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        max_concurrency: int = 64,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 20.0,
        connections_per_client: int = 16,
    ) -> None:
        if not base_url:
            raise ConfigError("the openai backend needs llm.base_url (e.g. --set llm.base_url=http://127.0.0.1:8000/v1)")
        if not model:
            raise ConfigError("the openai backend needs llm.model (the name the server serves)")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self._api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.defaults = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        self.timeout_s = float(timeout_s)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.connections_per_client = max(1, int(connections_per_client))
        #: Failures by kind (``http_503``, ``timeout``, ``connect``, ``malformed_body``, ``gave_up``) and
        #: ``requests`` / ``retries`` counts; the pipeline puts it in the run summary.
        self.stats: Counter[str] = Counter()
        self._client: Any = None
        self._clients: list[Any] = []
        self._next = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def _ensure_client(self) -> None:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import httpx

            # One httpx pool slows down sharply past a few dozen connections in flight (measured: 48 req/s at
            # 128 in flight against 528 for raw asyncio; docs/performance.md). Several small pools do not.
            per = min(self.connections_per_client, self.max_concurrency)
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._clients = [
                httpx.AsyncClient(timeout=self.timeout_s, headers=headers,
                                  limits=httpx.Limits(max_connections=per, max_keepalive_connections=per))
                for _ in range(-(-self.max_concurrency // per))
            ]
            self._client = self._clients[0]
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop

    def _pick(self) -> Any:
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        for client in self._clients:
            await client.aclose()
        self._clients = []
        self._client = None

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(request.messages)}
        params = {**self.defaults, **dict(request.params)}
        body.update({k: v for k, v in params.items() if v is not None})
        if request.seed:
            body.setdefault("seed", request.seed)
        if request.tools:
            body["tools"] = [t.openai_schema() for t in request.tools]
        return body

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Send one chat completion, retrying transport failures (see the module docstring)."""
        import httpx

        self._ensure_client()
        assert self._client is not None and self._semaphore is not None
        body = self._body(request)
        url = f"{self.base_url}/chat/completions"
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            async with self._semaphore:
                self.stats["requests"] += 1
                try:
                    resp = await self._pick().post(url, json=body)
                except httpx.TimeoutException:
                    kind, last = "timeout", f"timed out after {self.timeout_s}s"
                except httpx.TransportError as exc:
                    kind, last = "connect", f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status_code == 200:
                        try:  # bytes that are not UTF-8 become U+FFFD: a reply is kept, never a store error
                            return self._parse(json.loads(resp.content.decode("utf-8", errors="replace")))
                        except (ValueError, KeyError, IndexError, TypeError) as exc:
                            kind, last = "malformed_body", f"response is not a chat completion: {type(exc).__name__}"
                    elif resp.status_code in RETRY_STATUSES:
                        kind, last = f"http_{resp.status_code}", f"HTTP {resp.status_code}"
                        wait = _retry_after(resp.headers.get("retry-after"))
                    else:
                        self.stats[f"http_{resp.status_code}"] += 1
                        raise LLMUnavailableError(
                            f"{url} answered HTTP {resp.status_code}: {resp.text[:300]} (not retried)")
            self.stats[kind] += 1
            if attempt == self.max_retries:
                break
            self.stats["retries"] += 1
            backoff = self._rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt))
            await asyncio.sleep(max(wait or 0.0, backoff))
        self.stats["gave_up"] += 1
        raise LLMUnavailableError(f"{url} failed {self.max_retries + 1} times; last: {last}")

    @staticmethod
    def _parse(data: Mapping[str, Any]) -> ChatResponse:
        choice = data["choices"][0]
        message = choice["message"]
        # parse_assistant makes the reply storable: lone surrogates replaced, non-finite arguments a malformed call
        parsed = parse_assistant(message.get("content"), message.get("tool_calls"))
        usage = data.get("usage") or {}
        return ChatResponse(parsed, Usage(int(usage.get("prompt_tokens") or 0),
                                          int(usage.get("completion_tokens") or 0), 1))


@hookimpl
def synth_register_llm_backends(register: Any) -> None:
    """Register the ``openai`` backend."""
    register("openai", OpenAIBackend, description="any OpenAI-compatible endpoint (vLLM, llama.cpp, hosted)")
