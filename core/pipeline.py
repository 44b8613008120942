"""The pipeline: runs the stages of :data:`synthagent.core.stages.PIPELINE` in order over one run directory.

It only orchestrates. The :class:`~synthagent.core.runtime.Runtime` owns the components and every unit of work
(rollouts, scores, generation slots); each stage (:mod:`synthagent.core.stages`) reads its inputs from the run
store and appends records keyed by stable ids, so an interrupted stage continues where it stopped
(``--resume``), a finished stage is a no-op, and ``--from STAGE`` re-runs one stage and those after it. All
setup (plugins, implementations, options) happens when the pipeline is built and in :meth:`Pipeline.open_store`,
before any directory is created, so bad input fails with nothing written.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthagent.core import __version__
from synthagent.core.config import STAGES, RunConfig
from synthagent.core.counts import CountLog
from synthagent.core.errors import RunDirectoryError, StageError, UsageError
from synthagent.core.registry import Plugins
from synthagent.core.resume import retry_infra_failures
from synthagent.core.runtime import Components, Runtime, WorkerSpec
from synthagent.core.stages import PIPELINE, StageContext
from synthagent.core.stages.base import ProgressHook
from synthagent.core.store import RunStore
from synthagent.core.summary import summarize

__all__ = ["Pipeline", "config_digest"]

log = logging.getLogger("synthagent")


def config_digest(config: RunConfig) -> str:
    """The sha256 of the configuration's fingerprint (what ``--resume`` compares)."""
    return hashlib.sha256(config.fingerprint().encode()).hexdigest()


class Pipeline:
    """Runs the stages of one run directory.

    :param config: the validated run configuration.
    :param plugins: loaded plugins (their registries supply the implementations).
    :param progress: optional progress callback (the CLI draws rich progress bars with it).
    :param runtime: an already built runtime (default: built from ``config`` and ``plugins``).
    """

    def __init__(self, config: RunConfig, plugins: Plugins, progress: ProgressHook | None = None, *,
                 runtime: Runtime | None = None) -> None:
        self.config = config
        self.plugins = plugins
        self.progress: ProgressHook = progress or (lambda stage, advance, total: None)
        self.runtime = runtime or Runtime(config, plugins)  # builds every implementation: fails early
        self.store: RunStore | None = None

    @property
    def components(self) -> Components:
        """The runtime's components."""
        return self.runtime.components

    # -- run directory ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest of a new run: config, plugins with versions, prompt hashes, seed, environment."""
        selected = self.runtime.selected()
        return {
            "synthagent": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "fingerprint": config_digest(self.config),
            "plugins": self.plugins.loaded,
            "implementations": {
                kind: {"name": name, "plugin": self.plugins.registry(kind).get(name).plugin,
                       "version": self.plugins.registry(kind).get(name).version}
                for kind, name in selected.items()
            },
            "prompt_hashes": self.runtime.prompt_hashes(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "stages": {stage.name: {"status": "pending"} for stage in PIPELINE},
        }

    def open_store(self, root: Path, *, resume: bool) -> RunStore:
        """Set the components up, then create (or, with ``resume``, reopen) the run directory; a resumed run
        retries what failed for infrastructure reasons (:func:`~synthagent.core.resume.retry_infra_failures`)."""
        self.runtime.setup(str(root))  # before the directory exists: a setup error leaves nothing behind
        if resume:
            store = RunStore.open(root)
            if store.manifest.get("fingerprint") != config_digest(self.config):
                store.close()
                raise RunDirectoryError(
                    f"{str(root)!r} was started with a different configuration; resume it with the same config, "
                    "or start a new run with another --name"
                )
            retried = retry_infra_failures(store, target_tasks=self.config.tasks,
                                           uses_demonstrations=self.runtime.demonstrations > 0)
            if retried:
                log.info("resume retries infrastructure failures: %s", retried)
        else:
            store = RunStore.create(root.parent, root.name, self.manifest())
        self.store = store
        return store

    # -- stages ----------------------------------------------------------------------------------
    async def run(self, *, from_stage: str | None = None) -> dict[str, Any]:
        """Run every stage not yet done (from ``from_stage`` on when given) and write the summary."""
        store = self._store()
        names = [stage.name for stage in PIPELINE]
        if from_stage is not None:
            if from_stage not in names:
                raise UsageError(f"unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
            for stage in PIPELINE[names.index(from_stage):]:
                stage.reset(store)
                store.mark_stage(stage.name, "pending")
        counts = CountLog(store.root, self.runtime.stats)  # counts.jsonl: what this process counts, by stage

        def progress(stage: str, advance: int, total: int | None) -> None:
            self.progress(stage, advance, total)
            if advance > 0:
                counts.tick(stage, advance)

        ctx = StageContext(self.runtime, store, progress, counts)
        timings: dict[str, float] = dict(store.manifest.get("timings", {}))
        try:
            for stage in PIPELINE:
                if store.stage_done(stage.name):
                    continue
                store.mark_stage(stage.name, "running")
                log.info("stage %s started", stage.name)
                start = time.perf_counter()
                try:
                    info = await stage.run(ctx)
                finally:  # also when interrupted: the work done so far stays counted
                    counts.flush(stage.name)
                timings[stage.name] = round(time.perf_counter() - start, 3)
                log.info("stage %s done in %.3f s: %s", stage.name, timings[stage.name], info)
                if stage.file is not None:
                    store.files[stage.file].touch()  # present even when the stage produced nothing
                    store.files[stage.file].sync()
                store.mark_stage(stage.name, "done", **info)
            store.manifest["timings"] = timings
            store.save_manifest()
            return self.write_summary()
        finally:
            store.close()
            await self.runtime.aclose()

    def _store(self) -> RunStore:
        if self.store is None:
            raise StageError("open_store() must be called before run()")
        return self.store

    def worker_spec(self) -> WorkerSpec:
        """What an executor's worker processes need to rebuild this run's runtime."""
        return self.runtime.worker_spec()

    def component_stats(self) -> dict[str, dict[str, int]]:
        """Counters the implementations keep, by kind, the workers' included (:meth:`Runtime.stats`)."""
        return self.runtime.stats()

    def write_summary(self) -> dict[str, Any]:
        """Compute ``summary.json`` from the records and write it."""
        return summarize(self._store())
