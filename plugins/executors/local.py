"""The ``local`` executor: asyncio tasks in this process with bounded concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

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

    async def map(
        self, fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, concurrency: int
    ) -> AsyncIterator[tuple[T, R | BaseException]]:
        """Yield ``(item, result or exception)`` as jobs finish."""
        iterator = iter(items)
        pending: dict[asyncio.Task[R], T] = {}

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


@hookimpl
def synth_register_executors(register: Any) -> None:
    """Register the ``local`` executor."""
    register("local", LocalExecutor, description="asyncio in this process, bounded concurrency")
