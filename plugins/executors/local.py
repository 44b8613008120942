"""The ``local`` executor: asyncio tasks in this process with bounded concurrency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from synthagent.core.engine import local_map
from synthagent.core.hookspecs import hookimpl

__all__ = ["LocalExecutor"]

T = TypeVar("T")
R = TypeVar("R")


class LocalExecutor:
    """Runs jobs on the current event loop, at most ``concurrency`` at once.

    Jobs are started lazily (a window of ``concurrency``), so millions of items cost no memory up front. A
    job's exception is yielded as its result; it never cancels the others.
    """

    name = "local"

    def map(
        self, fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, concurrency: int
    ) -> AsyncIterator[tuple[T, R | BaseException]]:
        """Yield ``(item, result or exception)`` as jobs finish (:func:`synthagent.core.engine.local_map`)."""
        return local_map(fn, items, concurrency=concurrency)


@hookimpl
def synth_register_executors(register: Any) -> None:
    """Register the ``local`` executor."""
    register("local", LocalExecutor, description="asyncio in this process, bounded concurrency")
