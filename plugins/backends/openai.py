"""The ``openai`` LLM backend: any OpenAI-compatible chat-completions endpoint.

Works with ``vllm serve``, ``transformers serve``, llama.cpp's server and hosted providers.

**Concurrency adapts to the server** (:class:`AdaptiveLimit`, on by default): requests in flight start at
``initial_concurrency`` and grow while answers stay fast, up to ``max_concurrency``; they are cut by half
(AIMD) when a request times out, the server answers 429/503, or latency climbs well above the fastest answer
seen. The limit does not grow when one more request in flight would, on a server that answers one at a time,
push the answer time past ``growth_headroom * timeout_s``: a one-slot server with answers that take most of
the timeout is asked one request at a time, never flooded. The timeout (``timeout_s``) starts when a request
has its concurrency slot, so it measures the server's answer, not the client's own queue.

**Structured outputs**: a request whose ``params["json_schema"]`` is ``{"name": str, "schema": {...}}`` is
sent with the schema in the server's form (option ``structured_outputs``: ``auto`` (OpenAI
``response_format`` with ``json_schema``, the form vLLM, llama.cpp's ``llama-server`` and hosted providers
accept), ``openai``, ``llamacpp`` (``response_format: {type: json_object, schema}``, llama-cpp-python's
server), ``vllm`` (``structured_outputs: {json: schema}``), ``vllm-guided`` (``guided_json``, older vLLM) or
``none``). A server that rejects the form (HTTP 400, 422 or 500 naming it) is asked again without it (``auto`` first
tries the llama.cpp form), and the backend remembers that for its later requests; the caller's own
repair loop then checks the JSON. :attr:`OpenAIBackend.stats` counts the form used (``structured_openai``,
``structured_llamacpp``, ``structured_vllm``, ``structured_none``) and ``structured_rejected``.

Transport failures (connection
errors, timeouts, HTTP 408/409/425/429/5xx, and response bodies that are not the JSON the API promises) are
retried with exponential backoff and full jitter, honouring ``Retry-After``; every failure is counted by kind
in :attr:`OpenAIBackend.stats`. When retries run out the call raises :class:`LLMUnavailableError`, which the
agent loop records as an infrastructure failure (never a reward of 0). HTTP 401 and 403 are not retried:
they raise :class:`~synthagent.core.errors.AuthenticationError` ("authentication failed (HTTP 401) at URL -
check llm.api_key_env"), which stops the run (exit code 4) instead of being recorded as infrastructure.
A model *output* that does not parse (a malformed tool call) is not a transport failure: it reaches the
environment as an error observation.

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

from synthagent.core.errors import AuthenticationError, ConfigError, SynthError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Message, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.toolcalls import parse_assistant

__all__ = ["OpenAIBackend", "AdaptiveLimit", "LLMUnavailableError", "AUTH_STATUSES", "RETRY_STATUSES",
           "STRUCTURED_FORMS", "to_openai_messages", "structured_body"]

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Values of the ``structured_outputs`` option.
STRUCTURED_FORMS = ("auto", "openai", "llamacpp", "vllm", "vllm-guided", "none")
#: Words in a 400 answer that say the server refused the structured-output form (not the request as such).
_STRUCTURED_WORDS = ("response_format", "json_schema", "structured_outputs", "guided_json")


class LLMUnavailableError(SynthError):
    """The endpoint kept failing after every retry (an infrastructure failure, not a model error)."""

    #: an infrastructure failure (:func:`synthagent.core.runtime.plugin_bug`): ``--resume`` retries it
    infrastructure = True


#: Statuses that mean the server refused the credentials: :class:`AuthenticationError`, never retried.
AUTH_STATUSES = frozenset({401, 403})


def to_openai_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages in the OpenAI wire format (tool-call ``arguments`` as JSON strings).

    An assistant turn that only calls tools is sent with ``content: ""``, not ``null``: both are valid OpenAI
    chat format, and llama-cpp-python's server answers ``null`` with HTTP 500, which failed every tool-calling
    rollout against it at its second turn.
    """
    out = []
    for m in messages:
        d = m.openai()
        for call in d.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
        if d.get("role") == "assistant" and d.get("tool_calls") and d.get("content") is None:
            d["content"] = ""
        out.append(d)
    return out


def structured_body(form: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The request-body keys that ask the server for JSON following ``spec`` (``{"name", "schema"}``) in
    ``form`` (one of :data:`STRUCTURED_FORMS` except ``auto``; ``none`` gives ``{}``)."""
    schema = spec.get("schema") if isinstance(spec.get("schema"), Mapping) else {}
    name = str(spec.get("name") or "output")[:64]
    if form == "openai":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": name, "schema": schema, "strict": bool(spec.get("strict", False))}}}
    if form == "llamacpp":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if form == "vllm":
        return {"structured_outputs": {"json": schema}}
    if form == "vllm-guided":
        return {"guided_json": schema}
    return {}


class AdaptiveLimit:
    """An AIMD limit on requests in flight that follows what the server can answer.

    :param max_limit: the ceiling.
    :param initial: the limit to start with; it grows by one per fast answer until the first sign of
        congestion (slow start), then by ``1/limit`` per answer (additive increase).
    :param timeout_s: the request timeout; unless answers show the server works in parallel (as fast as the
        fastest with several in flight), growth stops where one more request, on a server that answers one
        at a time, would take the answer time past ``headroom * timeout_s``.
    :param latency_factor: an answer slower than this many times the fastest recent answer, with more than
        one request in flight, is congestion.
    :param decrease: the factor a congestion signal multiplies the limit by (at most once per round trip).
    :param adaptive: False: a fixed limit of ``max_limit`` (the behaviour before adaptation).

    :attr:`in_flight` and :attr:`peak` count requests holding a slot.
    """

    def __init__(self, max_limit: int, initial: int = 2, timeout_s: float = 60.0, *, latency_factor: float = 3.0,
                 headroom: float = 0.6, decrease: float = 0.5, adaptive: bool = True) -> None:
        self.max_limit = max(1, int(max_limit))
        self.adaptive = bool(adaptive)
        self.limit = float(min(self.max_limit, max(1, int(initial)))) if adaptive else float(self.max_limit)
        self.timeout_s = float(timeout_s)
        self.latency_factor = float(latency_factor)
        self.headroom = float(headroom)
        self.decrease = float(decrease)
        self.in_flight = 0
        self.peak = 0
        self.slow_start = True
        self.baseline: float | None = None  # the fastest recent answer (drifts up slowly)
        self._started = 0  # a sequence number per acquired slot
        self._cut_at = 0  # requests started before the last cut do not cut again
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> int:
        """Wait for a slot; returns the request's sequence number (pass it to :meth:`release`)."""
        while self.in_flight >= max(1, int(self.limit)):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self._started += 1
        return self._started

    def release(self, seq: int, latency_s: float | None, congested: bool = False) -> None:
        """Give the slot back. ``latency_s``: the answer time of a success (None for a failure);
        ``congested``: the failure was a timeout or an overload answer (429/503)."""
        if self.adaptive:
            self._adapt(seq, latency_s, congested)
        self.in_flight -= 1
        self.wake()

    def wake(self) -> None:
        """Wake as many waiters as there are free slots."""
        free = max(1, int(self.limit)) - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _cut(self, seq: int) -> None:
        if seq > self._cut_at:  # once per round trip: the requests already in flight saw the old limit
            self.limit = max(1.0, self.limit * self.decrease)
            self._cut_at = self._started
        self.slow_start = False

    def _adapt(self, seq: int, latency_s: float | None, congested: bool) -> None:
        if congested:
            self._cut(seq)
            return
        if latency_s is None:
            return
        self.baseline = latency_s if self.baseline is None else min(latency_s, self.baseline * 1.02)
        if self.in_flight > 1 and latency_s > self.latency_factor * self.baseline:
            self._cut(seq)
            return
        current = max(1, int(self.limit))
        if self.in_flight < current:  # the limit is not what holds requests back: no evidence to grow on
            return
        # Answers as fast as the fastest with several in flight: the server works in parallel, growing is safe.
        # Otherwise it may answer one at a time, where one more request adds one answer time to everyone's.
        parallel = self.in_flight > 1 and latency_s <= 1.5 * self.baseline
        if not parallel and latency_s + self.baseline > self.headroom * self.timeout_s:
            return
        self.limit = min(float(self.max_limit), self.limit + (1.0 if self.slow_start else 1.0 / self.limit))


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
    :param timeout_s: per-request timeout, counted from the moment the request holds a concurrency slot.
    :param max_concurrency: the most requests in flight at once (the adaptive limit's ceiling).
    :param adaptive_concurrency: adapt the requests in flight to the server (:class:`AdaptiveLimit`);
        False: always ``max_concurrency``.
    :param initial_concurrency: requests in flight at the start (the adaptive limit grows from there).
    :param latency_factor: answers this many times slower than the fastest recent one signal congestion.
    :param growth_headroom: the limit grows only while a one-at-a-time server would still answer within
        this fraction of ``timeout_s``.
    :param tool_choice: sent with every request that offers tools (``auto``, ``required``, ``none``; empty:
        not sent). llama.cpp's server returns native tool calls only when it is set.
    :param structured_outputs: how a request's ``params["json_schema"]`` reaches the server (see the module
        docstring): ``auto``, ``openai``, ``llamacpp``, ``vllm``, ``vllm-guided`` or ``none``.
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
        adaptive_concurrency: bool = True,
        initial_concurrency: int = 1,
        latency_factor: float = 3.0,
        growth_headroom: float = 0.6,
        tool_choice: str = "auto",
        structured_outputs: str = "auto",
    ) -> None:
        if not base_url:
            raise ConfigError("the openai backend needs llm.base_url (e.g. --set llm.base_url=http://127.0.0.1:8000/v1)")
        if not model:
            raise ConfigError("the openai backend needs llm.model (the name the server serves)")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self._api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self._api_key_env = api_key_env
        self.defaults = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        self.timeout_s = float(timeout_s)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.connections_per_client = max(1, int(connections_per_client))
        if structured_outputs not in STRUCTURED_FORMS:
            raise ConfigError(f"plugins.openai.structured_outputs must be one of {', '.join(STRUCTURED_FORMS)}, "
                              f"not {structured_outputs!r}")
        if self.max_concurrency < 1 or int(initial_concurrency) < 1:
            raise ConfigError("plugins.openai.max_concurrency and initial_concurrency must be at least 1")
        self.tool_choice = str(tool_choice or "")
        self.structured_outputs = structured_outputs
        #: The structured-output forms still to try, in order (a rejected form is dropped for good).
        self._forms = {"auto": ["openai", "llamacpp"], "none": []}.get(structured_outputs, [structured_outputs])
        self.limit = AdaptiveLimit(self.max_concurrency, int(initial_concurrency), self.timeout_s,
                                   latency_factor=float(latency_factor), headroom=float(growth_headroom),
                                   adaptive=bool(adaptive_concurrency))
        #: Failures by kind (``http_503``, ``timeout``, ``connect``, ``malformed_body``, ``gave_up``),
        #: ``requests`` / ``retries`` counts, the structured-output forms used (``structured_openai``, ...,
        #: ``structured_none``, ``structured_rejected``) and ``peak_in_flight``; the pipeline puts it in the
        #: run summary.
        self.stats: Counter[str] = Counter()
        self._client: Any = None
        self._clients: list[Any] = []
        self._next = 0
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
            self.limit.in_flight = 0  # a new event loop: nothing of the old one is in flight
            self.limit._waiters = []
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
        params.pop("json_schema", None)  # sent in the server's form by chat()
        body.update({k: v for k, v in params.items() if v is not None})
        if request.seed:
            body.setdefault("seed", request.seed)
        if request.tools:
            body["tools"] = [t.openai_schema() for t in request.tools]
            if self.tool_choice:
                body.setdefault("tool_choice", self.tool_choice)
        return body

    def _structured(self, request: ChatRequest) -> tuple[str, dict[str, Any]]:
        """The structured-output form to use now and its body keys (``("", {})`` when none is asked)."""
        spec = request.params.get("json_schema") if request.params else None
        if not isinstance(spec, Mapping):
            return "", {}
        form = self._forms[0] if self._forms else "none"
        return form, structured_body(form, spec)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Send one chat completion, retrying transport failures (see the module docstring)."""
        import httpx

        self._ensure_client()
        assert self._client is not None
        base = self._body(request)
        url = f"{self.base_url}/chat/completions"
        last = "no attempt"
        attempt = 0
        while attempt <= self.max_retries:
            wait: float | None = None
            seq = await self.limit.acquire()
            form, extra = self._structured(request)  # after the wait: a form refused meanwhile is not sent again
            body = {**base, **extra}
            self.stats["requests"] += 1
            self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"], self.limit.in_flight)
            started = time.monotonic()  # the timer starts once the slot is held: server time, not our queue
            try:
                async with asyncio.timeout(self.timeout_s):
                    resp = await self._pick().post(url, json=body)
            except (httpx.TimeoutException, TimeoutError):
                self.limit.release(seq, None, congested=True)
                kind, last = "timeout", f"timed out after {self.timeout_s}s"
            except httpx.TransportError as exc:
                self.limit.release(seq, None)
                kind, last = "connect", f"{type(exc).__name__}: {exc}"
            except BaseException:  # cancelled: the slot goes back
                self.limit.release(seq, None)
                raise
            else:
                latency = time.monotonic() - started
                status = resp.status_code
                self.limit.release(seq, latency if status == 200 else None, congested=status in (429, 503))
                if status == 200:
                    try:
                        parsed = self._parse(json.loads(resp.content.decode("utf-8", errors="replace")))  # non-UTF-8 bytes become U+FFFD
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        kind, last = "malformed_body", f"response is not a chat completion: {type(exc).__name__}"
                    else:
                        if form:
                            self.stats[f"structured_{form.replace('-', '_')}"] += 1
                        return parsed
                elif status in (400, 422, 500) and extra and any(w in resp.text for w in _STRUCTURED_WORDS):
                    # 422 and 500: how FastAPI servers refuse an unknown response_format type (llama-cpp-python
                    # 0.3.36 answers 500 with the validation error naming it)
                    # the server has no such structured-output form: drop it for good, ask again (no retry spent)
                    self.stats["structured_rejected"] += 1
                    if self._forms and self._forms[0] == form:
                        self._forms.pop(0)
                    continue
                elif status in AUTH_STATUSES:  # a wrong key stays wrong: stop the run, do not retry
                    self.stats[f"http_{status}"] += 1
                    self.stats["auth_failed"] += 1
                    raise AuthenticationError(self._auth_message(status, url))
                elif status in RETRY_STATUSES:
                    kind, last = f"http_{status}", f"HTTP {status}"
                    wait = _retry_after(resp.headers.get("retry-after"))
                else:
                    self.stats[f"http_{status}"] += 1
                    raise LLMUnavailableError(f"{url} answered HTTP {status}: {resp.text[:300]} (not retried)")
            self.stats[kind] += 1
            if attempt == self.max_retries:
                break
            attempt += 1
            self.stats["retries"] += 1
            backoff = self._rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))
            await asyncio.sleep(max(wait or 0.0, backoff))
        self.stats["gave_up"] += 1
        raise LLMUnavailableError(f"{url} failed {self.max_retries + 1} times; last: {last}")

    def _auth_message(self, status: int, url: str) -> str:
        """``authentication failed (HTTP 401) at URL: check llm.api_key_env ...`` (the URL redacted)."""
        from synthagent.core.redact import redact_text

        if self._api_key:
            hint = f"the key in ${self._api_key_env} was refused"
        elif self._api_key_env:
            hint = f"no key was sent, ${self._api_key_env} is not set"
        else:
            hint = "no key was sent, llm.api_key_env is empty"
        return f"authentication failed (HTTP {status}) at {redact_text(url)} - check llm.api_key_env ({hint})"

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
