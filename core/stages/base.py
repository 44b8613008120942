"""What every stage is and gets."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import attrs

from synthagent.core.config import RunConfig
from synthagent.core.counts import CountLog
from synthagent.core.models import Trajectory
from synthagent.core.runtime import Runtime
from synthagent.core.store import RunStore

__all__ = ["Stage", "StageContext", "RecordStage", "ProgressHook", "collect_rollouts"]

log = logging.getLogger("synthagent")

#: ``progress(stage, advance, total)``: called as records are produced (``total`` may be None).
ProgressHook = Callable[[str, int, "int | None"], None]


@attrs.define
class StageContext:
    """What a stage works with: the runtime (components and rollouts), the open run store, and progress."""

    runtime: Runtime
    store: RunStore
    progress: ProgressHook
    #: the run's count log (``counts.jsonl``); stages add counts no component keeps with ``counts.add``
    counts: CountLog | None = None

    @property
    def config(self) -> RunConfig:
        """The run's configuration."""
        return self.runtime.config


class Stage(Protocol):
    """One step of the pipeline."""

    #: the stage's name (``synth run --from NAME``)
    name: str
    #: the record file it appends to (a :class:`~synthagent.core.store.RunStore` file key), or None
    file: str | None

    def reset(self, store: RunStore) -> None:
        """Forget this stage's output (``--from``)."""
        ...

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Do the stage's remaining work; return what the manifest records about it."""
        ...


class RecordStage:
    """A stage whose output is one record file (reset empties it)."""

    name = ""
    file: str | None = None

    def reset(self, store: RunStore) -> None:
        """Empty the stage's record file."""
        if self.file is not None:
            store.files[self.file].reset()


async def collect_rollouts(results: AsyncIterator[tuple[Any, Any]], *, what: str, failures: Counter[str],
                           on_failure: Callable[[str, int, BaseException], Trajectory]) -> AsyncIterator[Trajectory]:
    """Turn an executor's ``(item, result or error)`` stream of rollouts into trajectories: an error is counted
    in ``failures`` by exception type and becomes the infrastructure-failure record ``on_failure(task_id,
    sample, error)``; interrupts propagate."""
    async for (task_id, sample), result in results:
        if isinstance(result, BaseException):
            if isinstance(result, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
                raise result
            failures[type(result).__name__] += 1
            log.error("%s of task %s sample %d failed: %s: %s", what, task_id, sample, type(result).__name__,
                      result, exc_info=result)
            result = on_failure(task_id, sample, result)
        yield result
