"""The openai backend over real HTTP on loopback: parsing, retries, fault injection, secrets."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from synthagent.core.config import load_config
from synthagent.core.models import Message, ToolSpec
from synthagent.core.pipeline import Pipeline
from synthagent.core.protocols import ChatRequest
from synthagent.core.registry import load_plugins
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.openai import LLMUnavailableError, OpenAIBackend
from synthagent.plugins.backends.oracle import oracle_reply

HELLO = ChatRequest(messages=(Message("user", "hi"),))


def chat(backend: OpenAIBackend, request: ChatRequest = HELLO):
    return asyncio.run(backend.chat(request))


def test_content_tool_calls_usage_and_request_shape() -> None:
    reply = {"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"id": "A1"}'}}]}
    with ScriptedOpenAIServer(lambda body: reply) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_env="")
        tool = ToolSpec("get", "d", {"type": "object", "properties": {"id": {"type": "string"}}})
        response = chat(backend, ChatRequest(messages=(Message("user", "hi"),), tools=(tool,), params={"temperature": 0.7}))
    assert response.message.tool_calls[0].arguments == {"id": "A1"}
    assert response.usage.prompt_tokens == 10 and response.usage.completion_tokens == 5
    body = server.requests[0]
    assert body["model"] == "m" and body["temperature"] == 0.7 and body["tools"][0]["function"]["name"] == "get"


def test_text_embedded_call_is_parsed() -> None:
    with ScriptedOpenAIServer(lambda body: '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>') as server:
        msg = chat(OpenAIBackend(model="m", base_url=server.base_url)).message
    assert (msg.content, msg.tool_calls[0].name, msg.tool_calls[0].arguments) == (None, "f", {"x": 1})


@pytest.mark.parametrize("fault", ["500", "503", "429", "malformed", "drop", "timeout"])
def test_each_transport_fault_is_retried_and_counted(fault: str) -> None:
    # a generous client timeout: only the injected 3 s stalls time out, never a normal reply on a busy machine
    with ScriptedOpenAIServer(faults={fault: 0.5}, seed=3, timeout_delay_s=3.0) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, timeout_s=1.0, backoff_s=0.01, max_retries=8)
        for _ in range(6):
            assert chat(backend).message.content == "ok"
    kind = {"timeout": "timeout", "malformed": "malformed_body", "drop": "connect"}.get(fault, f"http_{fault}")
    assert backend.stats[kind] == server.served[fault] > 0
    assert backend.stats["retries"] == server.served[fault]


def test_retry_after_is_honoured() -> None:
    with ScriptedOpenAIServer(faults={"429": 1.0}, retry_after_s=0.25) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, backoff_s=0.001, max_retries=2)
        import time
        start = time.perf_counter()
        with pytest.raises(LLMUnavailableError, match="failed 3 times; last: HTTP 429"):
            chat(backend)
    assert time.perf_counter() - start >= 0.5  # two waits of Retry-After, not the 1 ms backoff


def test_client_errors_are_not_retried() -> None:
    with ScriptedOpenAIServer(faults={"400": 1.0}) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url)
        with pytest.raises(LLMUnavailableError, match="HTTP 400"):
            chat(backend)
    assert sum(server.served.values()) == 1


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test-SECRET")
    seen = []
    with ScriptedOpenAIServer(lambda body: "ok") as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_env="MY_KEY")
        backend._ensure_client = backend._ensure_client  # noqa: B018 - keep the real client
        chat(backend)
        seen.append(repr(backend))
    assert "SECRET" not in seen[0]
    assert backend._client is not None and backend._client.headers["authorization"] == "Bearer sk-test-SECRET"


def test_pipeline_survives_injected_faults_and_never_scores_an_infra_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    tasks = OfflineDomainsGenerator().sample(40, seed=0)
    faults = {"500": 0.1, "503": 0.1, "timeout": 0.1, "malformed": 0.1}
    with ScriptedOpenAIServer(oracle_reply(tasks), faults=faults, seed=7, timeout_delay_s=1.5) as server:
        config = load_config(None, ["tasks=40", "llm.backend=openai", "llm.model=scripted", f"llm.base_url={server.base_url}",
                                    "llm.timeout_s=0.6", "plugins.openai.backoff_s=0.01", "plugins.openai.max_retries=3",
                                    "simulate.concurrency=16", "simulate.retries=0",  # every give-up recorded
                                    # 20% injected timeouts/503s keep an AIMD limit near 2 (as they should: it
                                    # reads them as overload) and double this test's time; adaptation has its
                                    # own tests above, this one is about retries and infra records
                                    "plugins.openai.adaptive_concurrency=false"])
        pipeline = Pipeline(config, load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
        pipeline.open_store(tmp_path / "faulty", resume=False)
        summary = asyncio.run(pipeline.run())
    assert summary["trajectories"] == 40
    stats = summary["stats"]["llm"]
    for kind in ("http_500", "http_503", "timeout", "malformed_body"):
        assert stats[kind] > 0, stats
    scores = [json.loads(line) for line in (tmp_path / "faulty/scores.jsonl").read_text().splitlines()]
    trajectories = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "faulty/trajectories.jsonl").read_text().splitlines()}
    for s in scores:
        if trajectories[s["trajectory_id"]]["error"]:
            assert s["status"] == "infra_error" and s["total"] is None
        else:
            assert s["status"] == "ok" and s["total"] == 1.0  # faults were retried away, never scored
    assert summary["infra_errors"] == summary["stats_by_stage"]["simulate"]["llm"].get("gave_up", 0)
    # every request is counted, the rubric stage's demonstrations included (not a snapshot after simulate); the
    # client counts an attempt that timed out before the server read it (a loaded machine), never fewer
    assert stats["requests"] >= len(server.requests) > summary["stats_by_stage"]["simulate"]["llm"]["requests"]
    # the secret never reaches the run directory
    found = subprocess.run(["grep", "-r", "-l", "SECRET", str(tmp_path / "faulty")], capture_output=True, text=True)
    assert found.stdout == "" and found.returncode == 1


# -- adaptive concurrency: a slow one-slot server is not flooded ---------------------------------------------

async def _gather(backend: OpenAIBackend, n: int) -> list:
    return await asyncio.gather(*(backend.chat(HELLO) for _ in range(n)), return_exceptions=True)


def test_one_slot_slow_server_is_asked_one_at_a_time_and_nothing_times_out() -> None:
    # a server that computes one request at a time, 1 s each; the client's timeout is 2.5 s. Asked 3 at once,
    # the adaptive client keeps 1 in flight and its timer measures the server's answer, not its own queue.
    with ScriptedOpenAIServer(slots=1, latency_s=1.0) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, timeout_s=2.5, max_retries=0)
        results = asyncio.run(_gather(backend, 3))
    assert [r.message.content for r in results] == ["ok"] * 3
    assert backend.stats["timeout"] == 0 and backend.stats["requests"] == 3
    assert 1 <= server.peak_in_flight <= 2 and backend.limit.peak <= 2


def test_without_adaptation_the_same_server_times_out() -> None:
    # the behaviour before: every request in flight at once, so the queue at the server eats the timeout
    with ScriptedOpenAIServer(slots=1, latency_s=1.0) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, timeout_s=2.5, max_retries=0,
                                adaptive_concurrency=False)
        results = asyncio.run(_gather(backend, 3))
    assert sum(isinstance(r, LLMUnavailableError) for r in results) >= 1
    assert backend.stats["timeout"] >= 1 and server.peak_in_flight == 3


def test_fast_parallel_server_lets_the_limit_grow_to_the_ceiling() -> None:
    with ScriptedOpenAIServer(latency_s=0.05) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, timeout_s=10.0, max_concurrency=8)
        results = asyncio.run(_gather(backend, 60))
    assert all(r.message.content == "ok" for r in results)
    assert backend.limit.peak == 8 and backend.stats["peak_in_flight"] == 8 and server.peak_in_flight <= 8


def test_aimd_cuts_once_per_round_trip_and_latency_climbs_cut() -> None:
    from synthagent.plugins.backends.openai import AdaptiveLimit

    async def run() -> AdaptiveLimit:
        limit = AdaptiveLimit(16, initial=8, timeout_s=60.0)
        seqs = [await limit.acquire() for _ in range(8)]
        limit.release(seqs[0], None, congested=True)  # a timeout: halve
        assert limit.limit == 4 and not limit.slow_start
        limit.release(seqs[1], None, congested=True)  # started before the cut: no second cut
        assert limit.limit == 4
        for s in seqs[2:]:
            limit.release(s, 1.0)
        a, b = await limit.acquire(), await limit.acquire()
        limit.release(a, 1.0)  # the baseline answer time
        limit.release(b, 10.0)  # ten times slower with requests in flight... only b left: in_flight 1
        c, d = await limit.acquire(), await limit.acquire()
        before = limit.limit
        limit.release(c, 10.0)  # two in flight and 10x the fastest answer: latency climbed
        assert limit.limit == max(1.0, before / 2)
        limit.release(d, 1.0)
        return limit

    assert asyncio.run(run()).in_flight == 0


def test_overload_answers_cut_the_limit() -> None:
    with ScriptedOpenAIServer(faults={"503": 0.3}, seed=1) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_concurrency=16, initial_concurrency=8,
                                backoff_s=0.01, max_retries=10)
        asyncio.run(_gather(backend, 20))
    assert server.served["503"] > 0 and backend.limit.limit < 16 and not backend.limit.slow_start


# -- tool_choice and structured outputs ----------------------------------------------------------------------

TOOL = ToolSpec("get", "d", {"type": "object", "properties": {"id": {"type": "string"}}})
SCHEMA = {"name": "toolset", "schema": {"type": "object", "properties": {"tools": {"type": "array"}}, "required": ["tools"]}}


def test_tool_choice_is_sent_only_with_tools() -> None:
    with ScriptedOpenAIServer() as server:
        chat(OpenAIBackend(model="m", base_url=server.base_url), ChatRequest(messages=HELLO.messages, tools=(TOOL,)))
        chat(OpenAIBackend(model="m", base_url=server.base_url))
        chat(OpenAIBackend(model="m", base_url=server.base_url, tool_choice=""), ChatRequest(messages=HELLO.messages, tools=(TOOL,)))
    assert server.requests[0]["tool_choice"] == "auto"
    assert "tool_choice" not in server.requests[1] and "tool_choice" not in server.requests[2]


@pytest.mark.parametrize("form,expected", [
    ("auto", {"response_format": {"type": "json_schema", "json_schema": {"name": "toolset", "schema": SCHEMA["schema"], "strict": False}}}),
    ("openai", {"response_format": {"type": "json_schema", "json_schema": {"name": "toolset", "schema": SCHEMA["schema"], "strict": False}}}),
    ("llamacpp", {"response_format": {"type": "json_object", "schema": SCHEMA["schema"]}}),
    ("vllm", {"structured_outputs": {"json": SCHEMA["schema"]}}),
    ("vllm-guided", {"guided_json": SCHEMA["schema"]}),
    ("none", {}),
])
def test_schema_is_sent_in_the_chosen_form_and_counted(form: str, expected: dict) -> None:
    with ScriptedOpenAIServer(lambda body: '{"tools": []}') as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, structured_outputs=form)
        chat(backend, ChatRequest(messages=HELLO.messages, params={"json_schema": SCHEMA}))
        chat(backend)  # no schema asked: nothing sent, nothing counted
    body, plain = server.requests
    keys = {"response_format", "structured_outputs", "guided_json", "json_schema"}
    assert {k: body[k] for k in keys & body.keys()} == expected
    assert not keys & plain.keys()
    used = "openai" if form == "auto" else form.replace("-", "_")
    assert backend.stats[f"structured_{used}"] == 1 and backend.stats["requests"] == 2


def test_a_server_without_the_form_falls_back_and_the_backend_remembers() -> None:
    with ScriptedOpenAIServer(lambda body: '{"tools": []}', reject={"response_format"}) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=0)
        request = ChatRequest(messages=HELLO.messages, params={"json_schema": SCHEMA})
        assert chat(backend, request).message.content == '{"tools": []}'
        assert chat(backend, request).message.content == '{"tools": []}'
    # auto tried the OpenAI form, then llama.cpp's, then none; the second call went straight to none
    forms = [b.get("response_format", {}).get("type") for b in server.requests]
    assert forms == ["json_schema", "json_object", None, None]
    assert backend.stats["structured_rejected"] == 2 and backend.stats["structured_none"] == 2
    assert server.served["rejected"] == 2 and backend.stats["http_400"] == 0


@pytest.mark.parametrize("status", [422, 500])
def test_a_422_or_500_refusal_naming_the_form_falls_back_too(status: int) -> None:
    # FastAPI servers refuse an unknown response_format type with 422; llama-cpp-python 0.3.36 with 500
    with ScriptedOpenAIServer(lambda body: "{}", reject={"response_format"}, reject_status=status) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, structured_outputs="openai", max_retries=0)
        chat(backend, ChatRequest(messages=HELLO.messages, params={"json_schema": SCHEMA}))
    assert backend.stats["structured_rejected"] == 1 and backend.stats["structured_none"] == 1
    assert "response_format" not in server.requests[-1]


def test_other_400s_are_still_errors_and_bad_form_is_a_config_error() -> None:
    from synthagent.core.errors import ConfigError

    with ScriptedOpenAIServer(faults={"400": 1.0}) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url)
        with pytest.raises(LLMUnavailableError, match="HTTP 400"):
            chat(backend, ChatRequest(messages=HELLO.messages, params={"json_schema": SCHEMA}))
    with pytest.raises(ConfigError, match="structured_outputs must be one of"):
        OpenAIBackend(model="m", base_url="http://x/v1", structured_outputs="grammar")


def test_in_process_backends_ignore_the_schema_key() -> None:
    from synthagent.plugins.backends.oracle import OracleBackend
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    task = OfflineDomainsGenerator().sample(1, seed=0)[0]
    oracle = OracleBackend()
    plain = asyncio.run(oracle.chat(ChatRequest(messages=(Message("user", task.instruction),), task=task)))
    oracle2 = OracleBackend()
    with_schema = asyncio.run(oracle2.chat(ChatRequest(messages=(Message("user", task.instruction),), task=task,
                                                       params={"json_schema": SCHEMA})))
    assert plain.message == with_schema.message


def test_requests_waiting_for_a_slot_do_not_resend_a_refused_form() -> None:
    async def go(backend: OpenAIBackend) -> list:
        request = ChatRequest(messages=HELLO.messages, params={"json_schema": SCHEMA})
        return await asyncio.gather(*(backend.chat(request) for _ in range(4)))

    with ScriptedOpenAIServer(lambda body: "{}", reject={"response_format"}) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=0)
        asyncio.run(go(backend))
    # one slot at the start: the first call finds both forms refused; the 3 waiting behind it send neither
    assert server.served["rejected"] == 2 and backend.stats["structured_none"] == 4


def test_a_tool_call_only_assistant_turn_is_sent_with_empty_content_not_null() -> None:
    """llama-cpp-python's server answers ``content: null`` with HTTP 500; ``""`` is valid for every server."""
    from synthagent.core.models import Message, ToolCall
    from synthagent.plugins.backends.openai import to_openai_messages

    wire = to_openai_messages((Message("user", "hi"), Message("assistant", None, (ToolCall("c1", "f", {"x": 1}),)),
                               Message("assistant", "done")))
    assert wire[1]["content"] == "" and wire[1]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    assert wire[0]["content"] == "hi" and wire[2]["content"] == "done"
