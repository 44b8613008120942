"""What every stage is and gets."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import attrs

from synthagent.core.config import RunConfig
from synthagent.core.counts import CountLog
from synthagent.core.models import Trajectory
from synthagent.core.runtime import Runtime
from synthagent.core.redact import redact_text
from synthagent.core.store import RunStore, UnstorableRecord

__all__ = ["Stage", "StageContext", "RecordStage", "ProgressHook", "collect_rollouts", "store_rollout", "UNSTORABLE",
           "DROPPED"]

#: The drop reason of a rollout whose record a strict JSON reader could not read back (model output nested
#: deeper than :data:`~synthagent.core.models.MAX_DEPTH`, ...): the rollout is left out of its record file and
#: counted under this name (``counts.jsonl`` kind :data:`DROPPED`; the summary's ``trajectories_dropped``).
UNSTORABLE = "unstorable_trajectory"
#: The ``counts.jsonl`` kind of records a stage dropped, by reason.
DROPPED = "dropped"

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
        """Forget this stage's output (``--from``, after :meth:`outputs` were set aside)."""
        ...

    def outputs(self, store: RunStore) -> list[Path]:
        """The files this stage writes (``--from`` sets them aside and puts them back if the rerun fails)."""
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

    def outputs(self, store: RunStore) -> list[Path]:
        """The stage's record file."""
        return [store.files[self.file].path] if self.file is not None else []


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
        if isinstance(result, Trajectory) and result.error:  # a server's error text may hold its URL's key
            clean = redact_text(result.error)
            if clean != result.error:
                result = attrs.evolve(result, error=clean)
        yield result


def store_rollout(ctx: StageContext, file: str, trajectory: Trajectory, *, stage: str, what: str,
                  dropped: Counter[str]) -> bool:
    """Append ``trajectory`` to record file ``file``; return True when written. A trajectory that cannot be
    stored (:class:`~synthagent.core.store.UnstorableRecord`: model output nested too deep, ...) is dropped,
    not fatal: it is counted in ``dropped`` and in ``counts.jsonl`` (:data:`UNSTORABLE`) and the run log names
    it with the reason; the other records and the run go on."""
    try:
        return ctx.store.files[file].append(trajectory)
    except UnstorableRecord as exc:
        dropped[UNSTORABLE] += 1
        if ctx.counts is not None:
            ctx.counts.add(stage, DROPPED, {UNSTORABLE: 1})
        log.warning("%s %s of task %s sample %d dropped: %s: %s", what, trajectory.id, trajectory.task_id,
                    trajectory.sample, UNSTORABLE, exc)
        return False
