"""The rollout engine: the picklable jobs that executors run, in this process or in worker processes.

A stage hands its executor a :class:`JobRunner` instead of a closure. In the driver (executor ``local``) the
runner uses the driver's :class:`~synthagent.core.runtime.Runtime`. Pickled to another process (executors
``process`` and ``ray``) it carries only a :class:`WorkerSpec` (the validated config, the plugins to load, the
run directory) and rebuilds the runtime there on first use, once per process (:meth:`Runtime.for_worker`):
tool sessions, SQLite databases, user simulators and LLM backends are never pickled with open connections.
Every unit of work (rollout, score, generation slot) is the runtime's; the runner adds retries and counters. Workers return records; the driver alone appends them to the
run store, so resume works the same whatever the executor.

Rules every job keeps, whatever runs it:

* **one event loop per process, nothing blocking on it**: agent-loop nodes and routers are coroutines (LangGraph
  would run sync ones in a thread pool), SQLite mapping stores run on their own thread;
* **partial failures are isolated**: an exception in one rollout is retried with a fresh environment (new tool
  and user sessions) up to ``simulate.retries`` times, then returned as that item's error, which the pipeline
  records as an ``infra_error`` trajectory; it never cancels the other items. A
  :class:`~synthagent.core.errors.FatalRunError` (a plugin's programming error, refused credentials) is not
  retried and stops the stage instead of being recorded as an infrastructure failure;
* **per-rollout seeds differ** (:func:`~synthagent.core.agent_loop.episode_seed` of task id, sample and run
  seed), so records are identical whichever process ran them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from synthagent.core.errors import FatalRunError, SynthError
from synthagent.core.models import Rubric, Score, Task, Trajectory, from_json_dict, to_json_dict
from synthagent.core.runtime import Runtime, WorkerSpec

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "local_map",
    "JobRunner",
    "RemoteJobError",
    "WorkerLostError",
    "LoopLagMonitor",
    "process_stats",
    "close_process_components",
    "portable_error",
]



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

    The job is recorded as an infrastructure failure, which ``synth run --resume`` retries
    (:func:`synthagent.core.resume.retry_infra_failures`)."""


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


# Runtimes built in this process, by spec key (worker processes build one and keep it).
_PROCESS_RUNTIMES: dict[str, Runtime] = {}
# Counters of the jobs run in this process (``rollouts``, ``rollout_retries``, ...), by spec key.
_PROCESS_STATS: dict[str, Counter[str]] = {}


def _runtime(spec: WorkerSpec) -> Runtime:
    runtime = _PROCESS_RUNTIMES.get(spec.key)
    if runtime is None:
        runtime = _PROCESS_RUNTIMES[spec.key] = Runtime.for_worker(spec)
    return runtime


def process_stats() -> dict[str, dict[str, int]]:
    """Counters of the runtimes built in this process and of the jobs it ran, summed over specs, by kind
    (``llm``, ``tools``, ``mapping``, ``user``, ``scorer``, ``engine``). Executors with worker processes call
    it in each worker and add the results up, so the run summary counts the work done everywhere."""
    out: dict[str, Counter[str]] = {}
    for runtime in _PROCESS_RUNTIMES.values():
        for kind, counts in runtime.stats().items():
            out.setdefault(kind, Counter()).update(counts)
    for counter in _PROCESS_STATS.values():
        out.setdefault("engine", Counter()).update(counter)
    return {kind: dict(sorted(c.items())) for kind, c in out.items()}


async def close_process_components() -> None:
    """Close and forget the runtimes built in this process (a worker's last step)."""
    while _PROCESS_RUNTIMES:
        _, runtime = _PROCESS_RUNTIMES.popitem()
        try:
            await runtime.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort at the end of a worker
            pass


class JobRunner:
    """A picklable async job of one stage: ``await runner(item)``.

    :param spec: how to rebuild the runtime in another process.
    :param op: ``"rollout"`` (item ``(task, sample)`` -> :class:`Trajectory`) or ``"score"`` (item
        ``(task, rubric, trajectory)`` -> :class:`Score`) or ``"generate"`` (item: a generation slot ->
        :class:`Task` or None); ``task`` is a :class:`Task` or the id of one in ``tasks`` (ids keep items small:
        the tasks travel once per worker, not once per job).
    :param runtime: the driver's runtime (used as it is in this process; dropped when pickled).
    :param tasks: the tasks items may name by id.
    """

    OPS = ("rollout", "score", "generate")

    def __init__(self, spec: WorkerSpec, op: str, runtime: Runtime | None = None,
                 tasks: Mapping[str, Task] | None = None) -> None:
        if op not in self.OPS:
            raise ValueError(f"unknown job {op!r}; one of {self.OPS}")
        self.spec = spec
        self.op = op
        self._runtime = runtime
        self._local_stats: Counter[str] | None = Counter() if runtime is not None else None
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
        self._runtime = None
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

    def runtime(self) -> Runtime:
        """The runtime this job uses (built here on first use in a worker process)."""
        if self._runtime is None:
            self._runtime = _runtime(self.spec)
        return self._runtime

    async def __call__(self, item: Any) -> Any:
        if self.op == "rollout":
            task, sample = item
            return await self.rollout(self.task(task), sample)
        if self.op == "generate":
            return await self.generate(item)
        task, rubric, trajectory = item
        return await self.score(self.task(task), rubric, trajectory)

    async def rollout(self, task: Task, sample: int) -> Trajectory:
        """One rollout; an exception or an ``infra_error`` ending is retried with fresh tool and user sessions
        up to ``simulate.retries`` times. The last attempt's trajectory is returned, or its exception raised."""
        runtime = self.runtime()
        retries = self.spec.config.simulate.retries
        stats = self.stats
        for attempt in range(retries + 1):
            if attempt:
                stats["rollout_retries"] += 1
            try:
                trajectory = await runtime.rollout(task, sample)
            except FatalRunError:  # a plugin bug, refused credentials: no retry can mend it
                stats["rollout_failures"] += 1
                raise
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
        self.stats["slots"] += 1
        return await self.runtime().synthesize(slot)

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """Score one trajectory against its task's rubric."""
        self.stats["scores"] += 1
        return await self.runtime().score(task, rubric, trajectory)


async def local_map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *,
                    concurrency: int) -> AsyncIterator[tuple[T, R | BaseException]]:
    """Run ``fn`` on every item on this event loop, at most ``concurrency`` at once; yield ``(item, result or
    exception)`` as each finishes. Jobs start lazily (a window of ``concurrency``), so millions of items cost no
    memory up front; one job's exception never cancels the others. The ``local`` executor is this."""
    iterator = iter(items)
    pending: dict[asyncio.Future[R], T] = {}

    def fill() -> None:
        while len(pending) < max(1, concurrency):
            try:
                item = next(iterator)
            except StopIteration:
                return
            pending[asyncio.ensure_future(fn(item))] = item

    fill()
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                exc = fut.exception()
                yield item, (exc if exc is not None else fut.result())
            fill()
    finally:
        for fut in pending:
            fut.cancel()


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
