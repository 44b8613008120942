"""The ``ray`` executor: jobs on Ray actors, on one machine or a cluster of many.

``synth run --set executor=ray [--set ray.address=ray://head:10001]`` (``ray.*`` is shorthand for
``plugins.ray.*`` when the executor is ``ray``). Each actor is a worker process with one event loop that runs
many jobs at once (an async actor). The job callable (a :class:`~synthagent.core.engine.JobRunner`) is put in
the object store once per ``map``; each actor rebuilds the run's components from the config the first time it
runs a job of that run, so nothing with an open connection is ever pickled. Records come back to the driver,
which alone appends them to the run store: ``--resume`` works exactly as with the other executors.

Every machine must have synthagent (and any ``--plugin`` module) installed. Share the mapping store between
workers with ``mapping = "redis"`` (every worker reaches the same server); ``sqlite`` is shared only by the
workers of one host (the file in the run directory) and ``memory`` not at all.

Needs ``pip install 'synthagent[ray]'``; Ray is imported only when this executor is built.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from synthagent.core.errors import ConfigError, require_non_negative_int
from synthagent.core.hookspecs import hookimpl

__all__ = ["RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")


class _RayWorker:
    """The actor: runs jobs on its event loop (Ray async actor), reports and closes its components."""

    def __init__(self) -> None:
        self.fns: dict[int, Any] = {}

    async def set_fn(self, fn_id: int, fn: Any) -> None:
        self.fns = {fn_id: fn}  # one map at a time: the previous map's job (and its tasks) can go

    async def run_batch(self, fn_id: int, items: list[Any]) -> list[tuple[bool, Any]]:
        """Run ``items`` concurrently; ``(True, result)`` or ``(False, error)`` for each, in order."""
        from synthagent.core.engine import portable_error

        fn = self.fns[fn_id]
        results = await asyncio.gather(*[fn(item) for item in items], return_exceptions=True)
        return [(False, portable_error(r)) if isinstance(r, BaseException) else (True, r) for r in results]

    async def stats(self) -> dict[str, dict[str, int]]:
        from synthagent.core.engine import process_stats

        return process_stats()

    async def close(self) -> None:
        from synthagent.core.engine import close_process_components

        await close_process_components()


class RayExecutor:
    """Runs jobs on ``workers`` Ray actors, each running up to its share of ``concurrency`` at once.

    :param address: the cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); empty: the cluster
        already initialised in this process, else ``$RAY_ADDRESS``, else a new local cluster.
    :param workers: actors (0: one per ``num_cpus_per_worker`` CPUs of the cluster).
    :param num_cpus_per_worker: CPUs each actor reserves.
    :param init: extra keyword arguments for ``ray.init`` when this executor starts or joins the cluster
        (e.g. ``{num_cpus = 2, include_dashboard = false}``).
    :param batch: jobs sent to an actor per call (a Ray call costs about a millisecond; batching amortizes it);
        0: a quarter of each actor's share of ``concurrency``, at most 16. Results still come back per batch,
        and one job's failure stays its own.

    A cluster this executor started is shut down by :meth:`aclose`; one that was already running is left up.
    """

    name = "ray"
    #: Jobs run in other processes: the pipeline also spreads slot-by-slot generation over the workers.
    remote = True

    def __init__(self, address: str = "", workers: int = 0, num_cpus_per_worker: float = 1.0,
                 init: Mapping[str, Any] | None = None, batch: int = 0) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise ConfigError("executor 'ray' needs Ray: pip install 'synthagent[ray]'") from exc
        require_non_negative_int("executor 'ray'", "workers", workers, "one per CPU")
        if not isinstance(num_cpus_per_worker, (int, float)) or num_cpus_per_worker <= 0:
            raise ConfigError(f"executor 'ray': num_cpus_per_worker must be > 0, got {num_cpus_per_worker!r}")
        if not isinstance(address, str):
            raise ConfigError(f"executor 'ray': address must be a string, got {address!r}")
        require_non_negative_int("executor 'ray'", "batch", batch, "automatic")
        self.batch = batch
        self.address = address
        self.workers = workers
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.init_options = dict(init or {})
        self._actors: list[Any] = []
        self._dead: set[int] = set()
        self._owns_cluster = False
        self._stats: dict[str, dict[str, int]] = {}

    def setup(self, ctx: Any) -> None:
        """Start or join the cluster before the run directory exists: an unreachable address fails the run
        with nothing written (``ConfigError``, exit code 2)."""
        try:
            self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster is a configuration problem
            raise ConfigError(
                f"executor 'ray' could not start or join the cluster (address {self.address or 'local'!r}): "
                f"{type(exc).__name__}: {exc}; check plugins.ray.address (e.g. auto, ray://head:10001)"
            ) from exc

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address or None, **self.init_options)
            self._owns_cluster = True

    def _ensure(self) -> None:
        import ray

        self._connect()
        if not self._actors:
            count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus_per_worker))
            actor = ray.remote(_RayWorker).options(num_cpus=self.num_cpus_per_worker, max_concurrency=100_000)
            self._actors = [actor.remote() for _ in range(count)]
            self._dead = set()

    def worker_stats(self) -> dict[str, dict[str, int]]:
        """The actors' component counters summed, by kind (as of the end of the last ``map``)."""
        return self._stats

    async def map(
        self, fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, concurrency: int
    ) -> AsyncIterator[tuple[T, R | BaseException]]:
        """Yield ``(item, result or exception)`` as jobs finish on the actors."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from synthagent.core.engine import WorkerLostError  # the engine imports langgraph: not at plugin load

        self._ensure()
        fn_ref = ray.put(fn)  # pickled once; each actor deserializes it once (set_fn), not once per job
        fn_id = self._next_fn = getattr(self, "_next_fn", 0) + 1
        await asyncio.gather(*[asyncio.wrap_future(a.set_fn.remote(fn_id, fn_ref).future())
                               for i, a in enumerate(self._actors) if i not in self._dead], return_exceptions=True)
        iterator = iter(items)
        load = [0] * len(self._actors)
        pending: dict[asyncio.Future[Any], tuple[list[T], int]] = {}

        def fill() -> None:
            live = [i for i in range(len(self._actors)) if i not in self._dead]
            while live:
                share = -(-max(1, concurrency) // len(live))
                size = self.batch or max(1, min(16, share // 4))
                index = min(live, key=lambda i: load[i])
                room = min(size, share - load[index])
                if room <= 0:
                    return
                batch = list(itertools.islice(iterator, room))
                if not batch:
                    return
                ref = self._actors[index].run_batch.remote(fn_id, batch)
                pending[asyncio.wrap_future(ref.future())] = (batch, index)
                load[index] += len(batch)

        fill()
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    batch, index = pending.pop(fut)
                    load[index] -= len(batch)
                    try:
                        outcomes: list[tuple[bool, Any]] = fut.result()
                    except RayActorError as exc:
                        self._dead.add(index)
                        lost = WorkerLostError(f"Ray worker {index} died while running this job: {exc}")
                        outcomes = [(False, lost)] * len(batch)
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        outcomes = [(False, cause if isinstance(cause, BaseException) else exc)] * len(batch)
                    except Exception as exc:  # noqa: BLE001 - any other failure is this batch's
                        outcomes = [(False, exc)] * len(batch)
                    for item, (_, result) in zip(batch, outcomes, strict=True):
                        yield item, result
                if len(self._dead) == len(self._actors):
                    lost = WorkerLostError("every Ray worker of executor 'ray' has died")
                    for fut, (batch, _) in list(pending.items()):
                        fut.cancel()
                        for item in batch:
                            yield item, lost
                    pending.clear()
                    for item in iterator:
                        yield item, lost
                    return
                fill()
        finally:
            for fut in pending:
                fut.cancel()
            await self._collect_stats()

    async def _collect_stats(self) -> None:
        live = [a for i, a in enumerate(self._actors) if i not in self._dead]
        results = await asyncio.gather(*[asyncio.wrap_future(a.stats.remote().future()) for a in live],
                                       return_exceptions=True)
        totals: dict[str, Counter[str]] = {}
        for stats in results:
            if isinstance(stats, dict):
                for kind, counts in stats.items():
                    totals.setdefault(kind, Counter()).update(counts)
        self._stats = {kind: dict(sorted(c.items())) for kind, c in totals.items()}

    async def aclose(self) -> None:
        """Close the actors' components, stop the actors, and shut down a cluster this executor started."""
        if not self._actors:
            return
        import ray

        actors, self._actors = self._actors, []
        live = [a for i, a in enumerate(actors) if i not in self._dead]
        await asyncio.gather(*[asyncio.wrap_future(a.close.remote().future()) for a in live], return_exceptions=True)
        for actor in actors:
            ray.kill(actor)
        if self._owns_cluster:
            ray.shutdown()
            self._owns_cluster = False


@hookimpl
def synth_register_executors(register: Any) -> None:
    """Register the ``ray`` executor."""
    register("ray", RayExecutor, description="Ray actors on one or many machines (needs synthagent[ray])")
