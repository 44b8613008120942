"""Executors: worker processes and a local Ray cluster (real processes, real Redis, real Ray)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.config import load_config
from synthagent.core.engine import WorkerLostError
from synthagent.core.errors import UsageError
from synthagent.core.models import ToolCall
from synthagent.core.pipeline import Pipeline
from synthagent.core.registry import load_plugins
from synthagent.core.models import Message, Task, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.testing import executor_probe_job
from synthagent.plugins.executors.process import ProcessExecutor

NO_AUTOLOAD = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}


async def _collect(executor: Any, fn: Any, items: list[Any], concurrency: int) -> dict[Any, Any]:
    out = {}
    async for item, result in executor.map(fn, items, concurrency=concurrency):
        out[item["value"] if isinstance(item, dict) else item] = result
    return out


def test_process_executor_isolates_an_exception_and_a_dead_worker() -> None:
    """One job raises, one kills its worker process: every other job still completes, the dead worker is
    replaced, and the executor keeps serving later maps."""
    items = [{"value": i, "sleep": 0.05} for i in range(10)]
    items[3]["raise"] = True
    items[5]["exit"] = True

    async def main() -> tuple[dict[Any, Any], dict[Any, Any], int]:
        executor = ProcessExecutor(workers=2)
        try:
            # concurrency 2 over 2 workers: one job per worker at a time, so the crash takes only job 5
            first = await _collect(executor, executor_probe_job, items, concurrency=2)
            second = await _collect(executor, executor_probe_job, [{"value": 100}, {"value": 101}], concurrency=2)
            return first, second, executor.restarts
        finally:
            await executor.aclose()

    first, second, restarts = asyncio.run(main())
    assert sorted(first) == list(range(10))
    assert isinstance(first[3], ValueError) and "failed on purpose" in str(first[3])
    assert isinstance(first[5], WorkerLostError) and "died" in str(first[5])
    ok = {i: r for i, r in first.items() if i not in (3, 5)}
    assert all(r["value"] == 2 * i for i, r in ok.items()), ok
    assert len({r["pid"] for r in ok.values()}) >= 2  # both workers served (and the replacement, maybe)
    assert restarts == 1  # the dead worker was replaced by a fresh process
    assert second[100]["value"] == 200 and second[101]["value"] == 202


@pytest.mark.timeout(180)
def test_process_executor_serves_the_next_map_after_a_caller_stops_early() -> None:
    """The generate stage stops reading once it has its tasks; the jobs still running must not disturb the
    next stage's map (their answers are ignored, the workers' counters still arrive)."""
    import contextlib

    async def main() -> dict[Any, Any]:
        executor = ProcessExecutor(workers=2)
        try:
            items = [{"value": i, "sleep": 0.2} for i in range(20)]
            async with contextlib.aclosing(executor.map(executor_probe_job, items, concurrency=6)) as results:
                async for _ in results:
                    break
            return await _collect(executor, executor_probe_job, [{"value": v} for v in range(100, 110)], 4)
        finally:
            await executor.aclose()

    second = asyncio.run(main())
    assert {v: r["value"] for v, r in second.items()} == {v: 2 * v for v in range(100, 110)}


def test_process_executor_refuses_a_job_it_cannot_send() -> None:
    async def main() -> None:
        executor = ProcessExecutor(workers=1)
        local = 3

        async def closure(item: int) -> int:  # a local function cannot be pickled
            return item + local

        async for _ in executor.map(closure, [1], concurrency=1):
            pass

    with pytest.raises(UsageError, match="cannot be pickled"):
        asyncio.run(main())


# -- a local Ray cluster -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the ray extra (synthagent[ray], part of dev) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _run(root: Path, overrides: list[str], *, resume: bool = False) -> dict[str, Any]:
    config = load_config(None, overrides)
    pipeline = Pipeline(config, load_plugins(environ=NO_AUTOLOAD))
    pipeline.open_store(root, resume=resume)
    return asyncio.run(pipeline.run())


def test_ray_batches_keep_one_jobs_failure_its_own(ray_cluster: Any) -> None:
    from synthagent.plugins.executors.ray import RayExecutor

    items = [{"value": i, "raise": i == 3} for i in range(10)]

    async def main() -> dict[Any, Any]:
        executor = RayExecutor(workers=2, batch=4)  # job 3 shares its batch with others
        try:
            return await _collect(executor, executor_probe_job, items, concurrency=8)
        finally:
            await executor.aclose()

    results = asyncio.run(main())
    assert sorted(results) == list(range(10))
    assert isinstance(results[3], ValueError) and "failed on purpose" in str(results[3])
    assert all(results[i]["value"] == 2 * i for i in range(10) if i != 3)


def test_ray_run_records_equal_the_single_process_run_and_resume(ray_cluster: Any, records: Any,
                                                                 tmp_path: Path) -> None:
    """executor=ray (2 actors on a 2-CPU local cluster) writes the same records as executor=local with the
    same seed; an interrupted Ray run resumes to the same records."""
    common = ["tasks=12", "seed=5", "simulate.samples=2"]
    _run(tmp_path / "local", common)
    summary = _run(tmp_path / "ray", [*common, "executor=ray", "ray.workers=2"])
    expected = records(tmp_path / "local")
    assert records(tmp_path / "ray") == expected
    assert len(expected["trajectories.jsonl"]) == 24
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    engine = manifest["stages"]["simulate"]["engine"]
    assert engine["executor"] == "ray" and engine["rollouts"] == 24  # counted in the Ray workers
    assert summary["trajectories"] == 24

    # interrupt: keep half the trajectories, lose the later stages, then resume on Ray
    root = tmp_path / "cut"
    shutil.copytree(tmp_path / "ray", root)
    lines = (root / "trajectories.jsonl").read_text().splitlines(keepends=True)
    (root / "trajectories.jsonl").write_text("".join(lines[:10]))
    for name in ("rubrics.jsonl", "scores.jsonl"):
        (root / name).unlink()
    manifest = json.loads((root / "manifest.json").read_text())
    for stage in ("simulate", "rubric", "score", "export"):
        manifest["stages"][stage] = {"status": "pending"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    _run(root, [*common, "executor=ray", "ray.workers=2"], resume=True)
    assert records(root) == expected
    for name in ("exports/sft.jsonl", "exports/rl.jsonl"):
        assert (root / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


class PidTeacher:
    """A teacher that answers every tool simulation, after ``delay_s``, with JSON naming its process."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.name = "pid-teacher"
        self.calls = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        import asyncio
        import json
        import os

        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return ChatResponse(Message("assistant", json.dumps({"served_by_pid": os.getpid(), "status": "ok"})),
                            Usage(calls=1))


async def shared_tool_call_job(item: tuple[str, str, Task, ToolCall, float]) -> dict[str, Any]:
    """Issue one tool call through the ``llm`` tool simulator backed by the Redis mapping store, in this
    process: ``item = (redis_url, prefix, task, call, teacher_delay_s)``. The teacher answers with its own
    process id after the delay, so two workers that both miss the store would disagree unless the store makes
    the first writer win. Returns ``{"pid", "response", "stats"}``."""
    import os

    from synthagent.core.protocols import RunContext
    from synthagent.plugins.simulators.tools.llm import LLMToolSimulator
    from synthagent.plugins.mapping.redis import RedisMappingStore

    import asyncio

    import redis.asyncio as aioredis

    url, prefix, task, call, delay = item
    store = RedisMappingStore(url, prefix=prefix)
    sim = LLMToolSimulator()
    sim.setup(RunContext(llm=PidTeacher(delay), mapping=store, run_dir="", seed=0))
    try:
        session = await sim.start(task, 0)
        # a barrier: both workers issue the call only once both are ready, so the race this test is about
        # happens even on a loaded machine (one worker starting late used to find the other's answer stored)
        barrier = aioredis.from_url(url)
        try:
            await barrier.incr(f"{prefix}barrier")
            for _ in range(600):
                if int(await barrier.get(f"{prefix}barrier") or 0) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await barrier.aclose()
        result = await session.call(call)
    finally:
        await store.aclose()
    return {"pid": os.getpid(), "response": result.content, "stats": dict(sim.stats)}


def test_two_ray_workers_issuing_the_same_tool_call_get_the_same_response(ray_cluster: Any,
                                                                          redis_url: str) -> None:
    """Two Ray workers simulate the same call of the same task at the same time through the llm tool
    simulator and the Redis mapping store; each teacher answers with its own pid, yet both get one response."""
    import cloudpickle

    from synthagent.plugins.executors.ray import RayExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import a test module by name

    task = _first_task()
    step = next(s for s in task.workflow if s.tool)
    call = ToolCall("c1", step.tool, dict(step.arguments))
    prefix = f"test:{uuid.uuid4().hex}:"
    items = [(redis_url, prefix, task, call, 0.5), (redis_url, prefix, task, call, 0.5)]

    async def main() -> list[Any]:
        executor = RayExecutor(workers=2)
        try:
            return [result async for _, result in executor.map(shared_tool_call_job, items, concurrency=2)]
        finally:
            await executor.aclose()

    results = asyncio.run(main())
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len({r["pid"] for r in results}) == 2, "the two calls ran in the same worker"
    assert results[0]["response"] == results[1]["response"]
    assert results[0]["response"]["served_by_pid"] in {r["pid"] for r in results}
    # both missed the store and asked their teacher; the second writer got the first writer's response back
    assert sorted(r["stats"].get("stored_by_other", 0) for r in results) == [0, 1]


def _first_task() -> Any:
    from synthagent.core.protocols import GenerationContext

    generator = load_plugins(environ=NO_AUTOLOAD).registry("generator").get("offline-domains").create({})

    async def first() -> Any:
        async for task in generator.generate(GenerationContext(count=1, seed=0)):
            return task

    return asyncio.run(first())


ORPHAN_DRIVER = r"""
import asyncio, sys
from synthagent.core.testing import executor_probe_job
from synthagent.plugins.executors.process import ProcessExecutor

async def main() -> None:
    executor = ProcessExecutor(workers=2)
    items = [{"block": 60, "value": i, "touch": f"{sys.argv[1]}/job{i}"} for i in range(2)]
    async for _ in executor.map(executor_probe_job, items, concurrency=2):
        pass

asyncio.run(main())
"""


def test_process_workers_exit_promptly_when_the_driver_is_killed(tmp_path: Path) -> None:
    """Both workers are stuck in a job that blocks their event loop for 60 s when the driver is SIGKILLed:
    they are gone within seconds (the grace timer), not after the job (before: 60 s)."""
    import os
    import signal
    import subprocess
    import time

    driver = subprocess.Popen([sys.executable, "-c", ORPHAN_DRIVER, str(tmp_path)])
    markers = [tmp_path / "job0", tmp_path / "job1"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(m.exists() and m.read_text() for m in markers):
        time.sleep(0.05)
    pids = {int(m.read_text()) for m in markers}
    assert len(pids) == 2 and driver.poll() is None
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed = time.monotonic()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    while any(alive(p) for p in pids) and time.monotonic() - killed < 30:
        time.sleep(0.02)
    outlived = time.monotonic() - killed
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    print(f"\n[orphans] workers outlived the SIGKILLed driver by {outlived:.2f} s")
    assert outlived < 5, outlived
