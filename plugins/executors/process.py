"""The ``process`` executor: several worker processes, each with one event loop running many jobs at once.

One event loop drives about 1,500 LLM calls a second at most (LangGraph's per-step cost; docs/performance.md);
past that the orchestrator, not the model server, is the limit. This executor spreads jobs over ``workers``
processes (``spawn``ed, so nothing of the driver's state is inherited). The job callable is pickled once per
``map`` and sent to every worker: use a :class:`~synthagent.core.engine.JobRunner` (the pipeline does), which
rebuilds the run's components inside each worker from the config. Results travel back to the driver, which
alone writes the run store.

Failures stay with their job: a job's exception comes back as that item's result; a worker that dies (killed,
out of memory) fails only the jobs it was running (:class:`~synthagent.core.engine.WorkerLostError`), and the
remaining items go to the surviving workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import pickle
import threading
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from synthagent.core.errors import ConfigError, UsageError, require_non_negative_int
from synthagent.core.hookspecs import hookimpl

__all__ = ["ProcessExecutor", "worker_main"]

T = TypeVar("T")
R = TypeVar("R")


#: Seconds a worker whose driver has gone (its pipe closed, or its parent changed) is given to close its
#: components before it exits anyway: nobody is left to take its results.
ORPHAN_GRACE_S = 0.5


def _exit_soon(grace_s: float) -> None:
    """End this worker process after ``grace_s`` even if its event loop is still busy."""
    timer = threading.Timer(grace_s, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


def _watch_parent(parent: int, interval_s: float = 0.2) -> None:
    """A daemon thread: when this process's parent changes (the driver died; we were re-parented), exit soon."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(interval_s)
        _exit_soon(ORPHAN_GRACE_S)

    threading.Thread(target=watch, daemon=True, name="synthagent-worker-parent-watch").start()


def worker_main(conn: Any) -> None:
    """A worker process: receive callables and jobs on ``conn``, run the jobs on one event loop, answer each.
    It exits within about :data:`ORPHAN_GRACE_S` of its driver dying (pipe EOF or a new parent)."""
    _watch_parent(os.getppid())
    asyncio.run(_serve(conn))


async def _serve(conn: Any) -> None:
    from synthagent.core.engine import close_process_components, portable_error, process_stats

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def read() -> None:  # blocking reads on a thread, never on the loop
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the driver is gone: close what we can, then exit regardless
                msg = ("close",)
                _exit_soon(ORPHAN_GRACE_S)
            except Exception as exc:  # noqa: BLE001 - an item that does not unpickle here fails alone
                msg = ("bad", exc)
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, msg)
            except RuntimeError:  # the worker's loop has ended
                return
            if msg[0] == "close":
                return

    threading.Thread(target=read, daemon=True, name="synthagent-worker-reader").start()
    fns: dict[int, Any] = {}
    running: set[asyncio.Task[None]] = set()

    def send(msg: Any) -> None:
        try:
            conn.send(msg)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an unpicklable result fails alone
            conn.send(("done", msg[1], False, portable_error(exc)))

    async def run(job_id: int, fn: Any, item: Any) -> None:
        try:
            result = await fn(item)
        except BaseException as exc:  # noqa: BLE001 - returned as the item's result
            if isinstance(exc, asyncio.CancelledError):
                raise
            send(("done", job_id, False, portable_error(exc)))
        else:
            send(("done", job_id, True, result))

    while True:
        msg = await inbox.get()
        kind = msg[0]
        if kind == "fn":
            try:
                fns[msg[1]] = pickle.loads(msg[2])
            except Exception as exc:  # noqa: BLE001 - every job of this map then fails with the reason
                fns[msg[1]] = _Failing(portable_error(exc))
        elif kind == "job":
            _, job_id, fn_id, item = msg
            task = asyncio.ensure_future(run(job_id, fns[fn_id], item))
            running.add(task)
            task.add_done_callback(running.discard)
        elif kind == "stats":
            send(("stats", msg[1], process_stats()))
        elif kind == "bad":
            pass  # the driver times nothing out: it learns of the failure when the worker exits
        elif kind == "close":
            for task in list(running):
                task.cancel()
            await close_process_components()
            return


class _Failing:
    """Stands in for a job callable that did not unpickle in the worker: every job fails with the reason."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def __call__(self, item: Any) -> Any:
        raise self.error


class _Worker:
    def __init__(self, index: int, process: Any, conn: Any) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.alive = True
        self.load = 0
        self.fn_ids: set[int] = set()


class ProcessExecutor:
    """Runs jobs in ``workers`` processes, each running up to its share of ``concurrency`` at once.

    :param workers: worker processes (0: one per CPU core of this machine).
    :param start_method: ``spawn`` (default; safe with threads) or ``forkserver``.
    :param max_restarts: dead workers replaced by fresh ones over the executor's life (-1: as many as there
        are workers; 0: none, the survivors take the remaining jobs).

    Workers start at the first ``map`` and stay up (with the components they built) until :meth:`aclose`.
    ``map`` calls are served one at a time. :meth:`worker_stats` sums the counters of every worker's components
    as of the end of the last ``map``.
    """

    name = "process"
    #: Jobs run in other processes: the pipeline also spreads slot-by-slot generation over the workers.
    remote = True

    def __init__(self, workers: int = 0, start_method: str = "spawn", max_restarts: int = -1) -> None:
        require_non_negative_int("executor 'process'", "workers", workers, "one per core")
        if start_method not in ("spawn", "forkserver"):
            raise ConfigError(f"executor 'process': start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
            raise ConfigError(f"executor 'process': max_restarts must be an integer, got {max_restarts!r}")
        self.workers = workers or os.cpu_count() or 1
        #: Dead workers replaced so far, and the most that will be (default: as many as there are workers).
        self.restarts = 0
        self.max_restarts = self.workers if max_restarts < 0 else max_restarts
        self.start_method = start_method
        self._workers: list[_Worker] = []
        self._inbox: asyncio.Queue[Any] | None = None
        self._lock: asyncio.Lock | None = None
        self._ids = itertools.count()
        self._stats: dict[str, dict[str, int]] = {}

    def _start(self) -> None:
        self._inbox = asyncio.Queue()
        for index in range(self.workers):
            self._workers.append(self._spawn(index))

    def _spawn(self, index: int) -> _Worker:
        """Start worker process ``index`` and the driver thread that reads its answers."""
        loop = asyncio.get_running_loop()
        inbox = self._inbox
        assert inbox is not None
        ctx: Any = multiprocessing.get_context(self.start_method)
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=worker_main, args=(child,), daemon=True, name=f"synthagent-worker-{index}")
        process.start()
        child.close()
        worker = _Worker(index, process, parent)

        def post(msg: Any) -> bool:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, msg)
                return True
            except RuntimeError:  # the driver's loop has closed (the executor outlived its run): stop quietly
                return False

        def read(w: _Worker = worker) -> None:
            while True:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    post(("dead", w))
                    return
                except Exception as exc:  # noqa: BLE001 - a result that does not unpickle here
                    msg = ("undecodable", w.index, exc)
                if not post(msg):
                    return

        threading.Thread(target=read, daemon=True, name=f"synthagent-driver-reader-{index}").start()
        return worker

    def _replace(self, worker: _Worker) -> None:
        """A worker died: start a fresh one in its place while the restart budget lasts."""
        if self._workers[worker.index] is worker and self.restarts < self.max_restarts:
            self.restarts += 1
            self._workers[worker.index] = self._spawn(worker.index)

    def worker_stats(self) -> dict[str, dict[str, int]]:
        """The workers' component counters summed, by kind (as of the end of the last ``map``)."""
        return self._stats

    def _send(self, worker: _Worker, msg: Any) -> bool:
        if not worker.alive:
            return False
        try:
            worker.conn.send(msg)
            return True
        except (OSError, EOFError, BrokenPipeError):
            worker.alive = False
            return False

    async def map(
        self, fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, concurrency: int
    ) -> AsyncIterator[tuple[T, R | BaseException]]:
        """Yield ``(item, result or exception)`` as jobs finish in the worker processes."""
        try:
            payload = pickle.dumps(fn)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(
                f"executor 'process' sends the job to other processes, and this one cannot be pickled "
                f"({type(exc).__name__}: {exc}); pass a module-level function or a synthagent.core.engine.JobRunner"
            ) from exc
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._workers:
                self._start()
            # closed explicitly: a caller that stops early must not leave _map's clean-up (which reads the
            # workers' answers) running later, beside the next map
            async with contextlib.aclosing(self._map(payload, items, concurrency)) as pairs:
                async for pair in pairs:
                    yield pair

    async def _map(self, fn: bytes, items: Iterable[Any], concurrency: int) -> AsyncGenerator[tuple[Any, Any], None]:
        from synthagent.core.engine import WorkerLostError  # the engine imports langgraph: not at plugin load

        assert self._inbox is not None
        fn_id = next(self._ids)
        for w in self._workers:
            w.load = 0  # jobs an earlier map abandoned (it stopped early) finish on their own; answers are ignored
        iterator = iter(items)
        backlog: deque[Any] = deque()  # items a dying worker never took: offered again first
        inflight: dict[int, tuple[Any, _Worker]] = {}
        end = object()

        def next_item() -> Any:
            return backlog.popleft() if backlog else next(iterator, end)

        def live() -> list[_Worker]:
            return [w for w in self._workers if w.alive]

        def fill() -> bool:
            """Send items while some live worker is under its share; False once every item is sent."""
            while True:
                workers = live()
                if not workers:
                    return True
                share = -(-max(1, concurrency) // len(workers))
                worker = min(workers, key=lambda w: w.load)
                if worker.load >= share:
                    return True
                item = next_item()
                if item is end:
                    return False
                if fn_id not in worker.fn_ids and self._send(worker, ("fn", fn_id, fn)):
                    worker.fn_ids.add(fn_id)
                job_id = next(self._ids)
                if fn_id in worker.fn_ids and self._send(worker, ("job", job_id, fn_id, item)):
                    inflight[job_id] = (item, worker)
                    worker.load += 1
                else:
                    backlog.append(item)

        more = fill()
        try:
            while inflight or more:
                if not live():
                    lost = WorkerLostError("every worker process of executor 'process' has died")
                    for item, _ in list(inflight.values()):
                        yield item, lost
                    while (item := next_item()) is not end:
                        yield item, lost
                    return
                msg = await self._inbox.get()
                if msg[0] == "done":
                    entry = inflight.pop(msg[1], None)
                    if entry is not None:
                        entry[1].load -= 1
                        yield entry[0], msg[3]
                elif msg[0] == "dead":
                    worker = msg[1]
                    worker.alive = False
                    await asyncio.get_running_loop().run_in_executor(None, worker.process.join, 5)
                    self._replace(worker)
                    for job_id, (item, w) in list(inflight.items()):
                        if w is worker:
                            del inflight[job_id]
                            yield item, WorkerLostError(
                                f"worker process {worker.index} (pid {worker.process.pid}) died (exit code "
                                f"{worker.process.exitcode}) while running this job")
                more = fill()
        finally:
            await self._collect_stats()  # counters as of now (the pipeline reads them into the stage summary)

    async def _collect_stats(self) -> None:
        assert self._inbox is not None
        request = next(self._ids)
        asked = [w for w in self._workers if self._send(w, ("stats", request))]
        totals: dict[str, Counter[str]] = {}
        answered = 0
        while answered < len(asked):
            try:
                msg = await asyncio.wait_for(self._inbox.get(), timeout=30)
            except asyncio.TimeoutError:
                break
            if msg[0] == "stats" and msg[1] == request:
                answered += 1
                for kind, counts in msg[2].items():
                    totals.setdefault(kind, Counter()).update(counts)
            elif msg[0] == "dead":
                msg[1].alive = False
                self._replace(msg[1])
                asked = [w for w in asked if w.alive]
        self._stats = {kind: dict(sorted(c.items())) for kind, c in totals.items()}

    async def aclose(self) -> None:
        """Stop the worker processes (each closes the components it built)."""
        workers, self._workers = self._workers, []
        for w in workers:
            self._send(w, ("close",))
        loop = asyncio.get_running_loop()
        for w in workers:
            await loop.run_in_executor(None, w.process.join, 10)
            if w.process.is_alive():
                w.process.terminate()
                await loop.run_in_executor(None, w.process.join, 5)
            w.conn.close()


@hookimpl
def synth_register_executors(register: Any) -> None:
    """Register the ``process`` executor."""
    register("process", ProcessExecutor, description="worker processes, one event loop each (plugins.process.workers)")
