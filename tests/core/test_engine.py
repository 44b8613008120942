"""The rollout engine: failures stay with their rollout, nothing blocks the loop, seeds differ."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.agent_loop import episode_seed, run_episode
from synthagent.core.config import load_config
from synthagent.core.engine import LoopLagMonitor
from synthagent.core.runtime import resolve_concurrency
from synthagent.core.errors import ConfigError
from synthagent.core.pipeline import Pipeline
from synthagent.core.registry import load_plugins
from synthagent.core.testing import ScriptedChatModel, ScriptedOpenAIServer, ScriptedUser, tool_call_message

NO_AUTOLOAD = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}


def _run(root: Path, overrides: list[str]) -> Pipeline:
    pipeline = Pipeline(load_config(None, overrides), load_plugins(environ=NO_AUTOLOAD))
    pipeline.open_store(root, resume=False)
    asyncio.run(pipeline.run())
    return pipeline


def _trajectories(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "trajectories.jsonl").read_text().splitlines()]


class _Victim:
    """Picks the first rollout the server sees and kills its calls (``times`` of them) after 200 ms in flight."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.instruction: str | None = None
        self.killed = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str | None:
        instruction = body["messages"][1]["content"]
        with self._lock:
            if self.instruction is None:
                self.instruction = instruction
            if instruction == self.instruction and self.killed < self.times:
                self.killed += 1
                return "drop"  # after the server's latency: the call dies mid-flight, the connection is cut
        return None


@pytest.mark.parametrize("retries", [0, 1])
def test_a_backend_call_killed_mid_flight_fails_only_its_rollout(tmp_path: Path, retries: int) -> None:
    """Ten rollouts in flight against a real loopback server; one rollout's call is cut after 200 ms. Without
    retries that rollout is recorded as an infrastructure failure and the nine others complete; with one retry
    it runs again on a fresh environment and completes too."""
    victim = _Victim(times=1 if retries else 10**6)
    with ScriptedOpenAIServer(lambda body: "All done, thank you.", latency_s=0.2, fault_for=victim) as server:
        pipeline = _run(tmp_path / "run", [
            "tasks=10", "simulate.concurrency=10", f"simulate.retries={retries}", "llm.backend=openai",
            "llm.model=scripted", f"llm.base_url={server.base_url}", "plugins.openai.max_retries=0",
        ])
    assert victim.killed >= 1 and victim.instruction is not None
    rows = _trajectories(tmp_path / "run")
    assert len(rows) == 10
    failed = [t for t in rows if t["termination"] == "infra_error"]
    done = [t for t in rows if t["termination"] != "infra_error"]
    engine = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["simulate"]["engine"]
    if retries:
        assert not failed and len(done) == 10
        assert engine["rollout_retries"] == 1
    else:
        assert len(failed) == 1 and len(done) == 9
        assert failed[0]["messages"][1]["content"] == victim.instruction
        assert "LLMUnavailableError" in failed[0]["error"]
        assert engine["rollout_failures"] == 1
    assert all(t["error"] is None and t["termination"] == "user_stop" and t["turns"] == 1 for t in done)
    assert pipeline.component_stats()["llm"]["connect"] == victim.killed


def test_an_episode_never_leaves_the_event_loop_thread() -> None:
    """LangGraph runs a sync node or router in the default thread pool under ainvoke; the agent loop has none.
    A default executor that refuses work proves no step hops to a thread."""

    class Refuse(ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("an agent-loop step ran on a worker thread")

    class Tools:
        def __init__(self) -> None:
            self.threads: set[int] = set()

        async def call(self, call: Any) -> Any:
            from synthagent.core.protocols import ToolResult

            self.threads.add(threading.get_ident())
            return ToolResult({"ok": True})

        def final_state(self) -> None:
            return None

        async def aclose(self) -> None:
            pass

    from synthagent.core.models import Persona, Task

    task = Task(id="t1", persona=Persona("p", "someone"), domain="d", tools=(), instruction="hi",
                full_instruction="hi", system_prompt="You help.", user_context=(), visible_facts=(), workflow=())
    tools = Tools()

    async def main() -> Any:
        asyncio.get_running_loop().set_default_executor(Refuse(max_workers=1))
        policy = ScriptedChatModel([tool_call_message("lookup", {"q": 1}), "Anything else?", "Bye."])
        return await run_episode(task, policy=policy, tools=tools, user=ScriptedUser(["no"]), max_turns=5)

    trajectory = asyncio.run(main())
    assert trajectory.termination == "user_stop" and trajectory.turns == 3
    assert tools.threads == {threading.get_ident()}


def test_per_rollout_seeds_differ(default_run: Any) -> None:
    seeds = {episode_seed(f"task-{i}", s, 7) for i in range(300) for s in range(4)}
    assert len(seeds) == 1200
    assert episode_seed("task-1", 0, 7) != episode_seed("task-1", 0, 8)
    rows = _trajectories(default_run.root)
    assert len({t["seed"] for t in rows}) == len(rows) == 200


def test_concurrency_defaults_to_the_backend_and_executor_tables_are_shorthand() -> None:
    config = load_config(None, [])
    assert config.simulate.concurrency == 0 and config.simulate.retries == 1

    class Backend:
        max_concurrency = 96

    assert resolve_concurrency(config, Backend()) == 96
    assert resolve_concurrency(config, object()) == 32
    assert resolve_concurrency(load_config(None, ["simulate.concurrency=8"]), Backend()) == 8
    ray = load_config(None, ["executor=ray", "ray.address=ray://head:10001", "ray.workers=4"])
    assert ray.plugins == {"ray": {"address": "ray://head:10001", "workers": 4}}
    with pytest.raises(ConfigError, match="unknown config key 'ray'"):
        load_config(None, ["ray.address=auto"])  # only the selected executor's table is a shorthand


def test_loop_lag_monitor_sees_a_blocking_call() -> None:
    import time

    async def main() -> dict[str, Any]:
        async with LoopLagMonitor(interval_s=0.005) as lag:
            await asyncio.sleep(0.03)
            time.sleep(0.08)  # blocks the loop
            await asyncio.sleep(0.03)
        return lag.summary()

    summary = asyncio.run(main())
    assert summary["max_ms"] >= 60
