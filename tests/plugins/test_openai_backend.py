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
from synthagent.plugins.backends.oracle import plan_for
from synthagent.plugins.backends.openai import LLMUnavailableError, OpenAIBackend

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


def oracle_over_http(tasks):
    """A scripted server that plays the oracle: finds the task by its instruction (and, where instructions
    coincide, by the hidden facts the user has revealed; the plans agree until then), replies with its plan."""
    by_instruction = {}
    for t in tasks:
        by_instruction.setdefault((t.system_prompt, t.instruction), []).append(t)

    def reply(body):
        messages = body["messages"]
        candidates = by_instruction[(messages[0]["content"], messages[1]["content"])]
        said = " ".join(m["content"] for m in messages[2:] if m["role"] == "user")
        task = max(candidates, key=lambda t: sum(f.statement in said for f in t.user_context))
        position = sum(1 for m in messages if m["role"] == "assistant")
        plan = plan_for(task)
        action = plan[min(position, len(plan) - 1)]
        if action.kind == "call":
            return {"content": None, "tool_calls": [{"id": f"call_{position}", "type": "function", "function": {
                "name": action.tool, "arguments": json.dumps(action.arguments)}}]}
        return action.text

    return reply


def test_pipeline_survives_injected_faults_and_never_scores_an_infra_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    tasks = OfflineDomainsGenerator().sample(40, seed=0)
    faults = {"500": 0.1, "503": 0.1, "timeout": 0.1, "malformed": 0.1}
    with ScriptedOpenAIServer(oracle_over_http(tasks), faults=faults, seed=7, timeout_delay_s=1.5) as server:
        config = load_config(None, ["tasks=40", "llm.backend=openai", "llm.model=scripted", f"llm.base_url={server.base_url}",
                                    "llm.timeout_s=0.6", "plugins.openai.backoff_s=0.01", "plugins.openai.max_retries=3",
                                    "simulate.concurrency=16", "simulate.retries=0"])  # every give-up recorded
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
