"""The rollout engine: the picklable jobs that executors run, in this process or in worker processes.

A stage hands its executor a :class:`JobRunner` instead of a closure. In the driver (executor ``local``) the
runner uses the pipeline's own components. Pickled to another process (executors ``process`` and ``ray``) it
carries only a :class:`WorkerSpec` (the validated config, the plugins to load, the run directory) and rebuilds
every component there on first use, once per process: tool sessions, SQLite databases, user simulators and LLM
backends are never pickled with open connections. Workers return records; the driver alone appends them to the
run store, so resume works the same whatever the executor.

Rules every job keeps, whatever runs it:

* **one event loop per process, nothing blocking on it**: agent-loop nodes and routers are coroutines (LangGraph
  would run sync ones in a thread pool), SQLite mapping stores run on their own thread;
* **partial failures are isolated**: an exception in one rollout is retried with a fresh environment (new tool
  and user sessions) up to ``simulate.retries`` times, then returned as that item's error, which the pipeline
  records as an ``infra_error`` trajectory; it never cancels the other items;
* **per-rollout seeds differ** (:func:`~synthagent.core.agent_loop.episode_seed` of task id, sample and run
  seed), so records are identical whichever process ran them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

from synthagent.core.agent_loop import episode_seed, run_episode
from synthagent.core.config import RunConfig
from synthagent.core.errors import SynthError
from synthagent.core.models import Rubric, Score, Task, Trajectory, from_json_dict, to_json_dict

__all__ = [
    "WorkerSpec",
    "JobRunner",
    "RemoteJobError",
    "WorkerLostError",
    "LoopLagMonitor",
    "process_stats",
    "close_process_components",
    "resolve_concurrency",
    "portable_error",
    "DEFAULT_CONCURRENCY",
]

#: Rollouts in flight when neither ``simulate.concurrency`` nor the backend says (``max_concurrency``).
DEFAULT_CONCURRENCY = 32


class RemoteJobError(SynthError):
    """A job failed in a worker with an exception that could not travel back as itself (not picklable).

    :attr:`kind` is the original exception's class name, :attr:`remote_traceback` its formatted traceback.
    """

    def __init__(self, kind: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> Any:
        return (RemoteJobError, (self.kind, str(self).split(": ", 1)[-1], self.remote_traceback))


class WorkerLostError(SynthError):
    """The worker process running a job died (killed, out of memory, crashed) before answering.

    The job is recorded as an infrastructure failure; ``synth run --resume`` does not redo it (delete its
    record, or re-run ``--from simulate``, to retry)."""


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling, else a :class:`RemoteJobError` naming it (for workers)."""
    import pickle
    import traceback

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling problem: send a portable description instead
        tb = "".join(traceback.format_exception(exc))
        return RemoteJobError(type(exc).__name__, str(exc), tb)


@attrs.frozen
class WorkerSpec:
    """What a worker process needs to rebuild a run's components.

    :param config: the validated run configuration.
    :param plugins: plugin names or module paths to load beside the built-ins (``--plugin``).
    :param environ: the ``SYNTHAGENT_*`` environment variables of the driver (plugin autoload switches).
    :param run_dir: the run directory (implementations' ``setup`` put per-run files there).
    """

    config: RunConfig
    plugins: tuple[str, ...] = ()
    environ: tuple[tuple[str, str], ...] = ()
    run_dir: str = ""

    @property
    def key(self) -> str:
        """Identifies the components built from this spec (one set per process and key)."""
        return f"{self.config.fingerprint()}|{self.plugins}|{self.environ}|{self.run_dir}"


# Components built in this process, by spec key (worker processes build them once and keep them).
_PROCESS_COMPONENTS: dict[str, Any] = {}
# Counters of the jobs run in this process (``rollouts``, ``rollout_retries``, ...), by spec key.
_PROCESS_STATS: dict[str, Counter[str]] = {}


def _build(spec: WorkerSpec) -> Any:
    components = _PROCESS_COMPONENTS.get(spec.key)
    if components is not None:
        return components
    from synthagent.core.pipeline import build_components
    from synthagent.core.protocols import RunContext
    from synthagent.core.registry import load_plugins

    environ = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    environ.update(dict(spec.environ))
    plugins = load_plugins(spec.plugins, environ=environ)
    components = build_components(spec.config, plugins)
    ctx = RunContext(llm=components.llm, mapping=components.mapping, run_dir=spec.run_dir, seed=spec.config.seed)
    for comp in attrs.astuple(components, recurse=False):
        setup = getattr(comp, "setup", None)
        if callable(setup) and comp is not components.executor:  # a worker never drives an executor itself
            setup(ctx)
    _PROCESS_COMPONENTS[spec.key] = components
    return components


def process_stats() -> dict[str, dict[str, int]]:
    """Counters of the components built in this process and of the jobs it ran, summed over specs, by kind
    (``llm``, ``tools``, ``mapping``, ``user``, ``scorer``, ``engine``). Executors with worker processes call
    it in each worker and add the results up, so the run summary counts the work done everywhere."""
    out: dict[str, Counter[str]] = {}
    for components in _PROCESS_COMPONENTS.values():
        for kind in ("llm", "user", "tools", "mapping", "generator", "scorer"):
            stats = getattr(getattr(components, kind), "stats", None)
            if stats:
                out.setdefault(kind, Counter()).update(dict(stats))
    for counter in _PROCESS_STATS.values():
        out.setdefault("engine", Counter()).update(counter)
    return {kind: dict(sorted(c.items())) for kind, c in out.items()}


async def close_process_components() -> None:
    """Close (``aclose``) and forget the components built in this process (a worker's last step)."""
    while _PROCESS_COMPONENTS:
        _, components = _PROCESS_COMPONENTS.popitem()
        for comp in attrs.astuple(components, recurse=False):
            close = getattr(comp, "aclose", None)
            if close is not None and inspect.iscoroutinefunction(close):
                try:
                    await close()
                except Exception:  # noqa: BLE001 - closing is best effort at the end of a worker
                    pass


def resolve_concurrency(config: RunConfig, llm: Any) -> int:
    """Rollouts in flight: ``simulate.concurrency`` when set (> 0), else the backend's ``max_concurrency``
    (the ``openai`` backend: 64), else :data:`DEFAULT_CONCURRENCY`."""
    if config.simulate.concurrency > 0:
        return config.simulate.concurrency
    backend = getattr(llm, "max_concurrency", None)
    if isinstance(backend, int) and not isinstance(backend, bool) and backend > 0:
        return backend
    return DEFAULT_CONCURRENCY


class JobRunner:
    """A picklable async job of one stage: ``await runner(item)``.

    :param spec: how to rebuild the components in another process.
    :param op: ``"rollout"`` (item ``(task, sample)`` -> :class:`Trajectory`) or ``"score"`` (item
        ``(task, rubric, trajectory)`` -> :class:`Score`) or ``"generate"`` (item: a generation slot ->
        :class:`Task` or None); ``task`` is a :class:`Task` or the id of one in ``tasks`` (ids keep items small:
        the tasks travel once per worker, not once per job).
    :param components: the driver's components (used as they are in this process; dropped when pickled).
    :param tasks: the tasks items may name by id.
    """

    OPS = ("rollout", "score", "generate")

    def __init__(self, spec: WorkerSpec, op: str, components: Any = None,
                 tasks: Mapping[str, Task] | None = None) -> None:
        if op not in self.OPS:
            raise ValueError(f"unknown job {op!r}; one of {self.OPS}")
        self.spec = spec
        self.op = op
        self._components = components
        self._local_stats: Counter[str] | None = Counter() if components is not None else None
        self._tasks: dict[str, Task] = dict(tasks or {})
        self._task_json: dict[str, str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tasks travel once per worker and stage, as JSON text (a Task pickles slowly: ~1 ms, ~28 kB with its
        # database), and are decoded in the worker only when one of its jobs names them.
        if self._task_json is None:
            self._task_json = {tid: json.dumps(to_json_dict(t), ensure_ascii=False) for tid, t in self._tasks.items()}
        return {"spec": self.spec, "op": self.op, "task_json": self._task_json}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.spec = state["spec"]
        self.op = state["op"]
        self._components = None
        self._local_stats = None
        self._tasks = {}
        self._task_json = dict(state.get("task_json") or {})

    def task(self, ref: Task | str) -> Task:
        """The task an item names: a :class:`Task`, or the id of one this runner was given."""
        if isinstance(ref, Task):
            return ref
        task = self._tasks.get(ref)
        if task is None:
            if not self._task_json or ref not in self._task_json:
                raise KeyError(f"job names task {ref!r}, which this runner was not given")
            task = self._tasks[ref] = from_json_dict(Task, json.loads(self._task_json[ref]))
        return task

    @property
    def stats(self) -> Counter[str]:
        """``rollouts``, ``rollout_retries``, ``rollout_failures``, ``scores`` run by this runner's process."""
        if self._local_stats is not None:
            return self._local_stats
        return _PROCESS_STATS.setdefault(self.spec.key, Counter())

    def components(self) -> Any:
        """The components this job uses (built here on first use in a worker process)."""
        if self._components is None:
            self._components = _build(self.spec)
        return self._components

    async def __call__(self, item: Any) -> Any:
        if self.op == "rollout":
            task, sample = item
            return await self.rollout(self.task(task), sample)
        if self.op == "generate":
            return await self.generate(item)
        task, rubric, trajectory = item
        return await self.score(self.task(task), rubric, trajectory)

    async def _episode(self, c: Any, task: Task, sample: int) -> Trajectory:
        config = self.spec.config
        seed = episode_seed(task.id, sample, config.seed)
        tool_session = await c.tools.start(task, seed)
        try:
            user = await c.user.start(task, seed)
            return await run_episode(
                task, policy=c.llm, tools=tool_session, user=user, max_turns=config.simulate.max_turns,
                sample=sample, seed=config.seed,
                params={"temperature": config.llm.temperature, "max_tokens": config.llm.max_tokens},
            )
        finally:
            await tool_session.aclose()

    async def rollout(self, task: Task, sample: int) -> Trajectory:
        """One rollout; an exception or an ``infra_error`` ending is retried with fresh tool and user sessions
        up to ``simulate.retries`` times. The last attempt's trajectory is returned, or its exception raised."""
        c = self.components()
        retries = self.spec.config.simulate.retries
        stats = self.stats
        for attempt in range(retries + 1):
            if attempt:
                stats["rollout_retries"] += 1
            try:
                trajectory = await self._episode(c, task, sample)
            except Exception:
                if attempt == retries:
                    stats["rollout_failures"] += 1
                    raise
                continue
            if trajectory.termination == "infra_error" and attempt < retries:
                continue
            stats["rollouts"] += 1
            if trajectory.termination == "infra_error":
                stats["rollout_failures"] += 1
            return trajectory
        raise AssertionError("unreachable")  # pragma: no cover

    async def generate(self, slot: Any) -> Task | None:
        """Synthesize the task of one generation slot (generators with ``slots``/``synthesize``), or None when
        the slot was dropped (the reason is in the generator's ``stats``)."""
        c = self.components()
        self.stats["slots"] += 1
        task: Task | None = await c.generator.synthesize(c.llm, slot, self.spec.config.seed)
        return task

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """Score one trajectory against its task's rubric."""
        self.stats["scores"] += 1
        score: Score = await self.components().scorer.score(task, rubric, trajectory)
        return score


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeping task: the cost of anything blocking the loop.

    Use as ``async with LoopLagMonitor() as lag: ...`` (or ``lag = LoopLagMonitor().start()`` ... ``await
    lag.stop()``); then :meth:`summary` gives ``ticks``, ``p50_ms``,
    ``p99_ms`` and ``max_ms`` of the lateness. A loop that nothing blocks stays near 0 ms; a 10 ms blocking call
    shows as ~10 ms.

    :param interval_s: how often to probe.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.lags.append(max(0.0, time.perf_counter() - start - self.interval_s))

    def start(self) -> LoopLagMonitor:
        """Start probing (call from a coroutine, on the loop to watch)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._probe())
        return self

    async def stop(self) -> None:
        """Stop probing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> LoopLagMonitor:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def summary(self) -> dict[str, float | int]:
        """Lateness of the loop's wake-ups, in milliseconds."""
        if not self.lags:
            return {"ticks": 0}
        lags = sorted(self.lags)

        def pct(p: float) -> float:
            return round(1000 * lags[min(len(lags) - 1, int(p * len(lags)))], 3)

        return {"ticks": len(lags), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(1000 * lags[-1], 3)}
