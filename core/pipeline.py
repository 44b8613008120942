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
from collections.abc import Mapping
from typing import Any

from synthagent.core import __version__
from synthagent.core.config import STAGES, RunConfig
from synthagent.core.counts import CountLog, read_counts, unaccounted_calls
from synthagent.core.errors import RunDirectoryError, StageError, SynthError, UsageError
from synthagent.core.registry import Plugins
from synthagent.core.redact import redact_config
from synthagent.core.resume import INFRA_DROP, retry_infra_failures
from synthagent.core.runtime import Components, Runtime, WorkerSpec
from synthagent.core.stages import PIPELINE, StageContext
from synthagent.core.stages.base import ProgressHook
from synthagent.core.store import RERUN, RunStore
from synthagent.core.summary import summarize

__all__ = ["Pipeline", "config_digest", "rerun_failures"]

log = logging.getLogger("synthagent")


def config_digest(config: RunConfig) -> str:
    """The sha256 of the configuration's fingerprint (what ``--resume`` compares), secrets redacted
    (:func:`~synthagent.core.redact.redact_config`): the manifest stores the redacted configuration, and the
    digest of a run given its secret again equals the stored one."""
    from synthagent.core.config import config_from_dict

    redacted = config_from_dict(redact_config(config.to_dict()))  # equal to ``config`` when it holds no secret
    return hashlib.sha256(redacted.fingerprint().encode()).hexdigest()


def rerun_failures(store: RunStore, stages: list[str]) -> str:
    """Why a ``--from`` rerun of ``stages`` did not succeed although every stage finished: the new records
    hold infrastructure failures (rollouts or demonstrations that failed, rubrics dropped because the teacher
    was unavailable, scores with status ``infra_error``), which must not replace the previous outputs. Empty
    when there are none."""
    found: list[str] = []
    if "simulate" in stages:
        n = sum(1 for t in store.trajectories if t.error is not None)
        if n:
            found.append(f"{n} of {len(store.trajectories)} rollouts failed for infrastructure reasons "
                         "(is the model server up?)")
    if "rubric" in stages:
        n = sum(1 for r in store.rubrics if str(r.dropped or "").startswith(INFRA_DROP))
        if n:
            found.append(f"{n} rubrics were dropped because the teacher was unavailable")
    if "score" in stages:
        n = sum(1 for sc in store.scores if sc.status == "infra_error")
        if n:
            found.append(f"{n} scores failed for infrastructure reasons")
    return "; ".join(found)


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
        self._resumed = False  # open_store(resume=True): run() reports uncounted requests

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
            "config": redact_config(self.config.to_dict()),  # no secret is written (URL passwords, keys)
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
        self._resumed = resume
        if resume:
            store = RunStore.open(root)
            stored = store.manifest.get("fingerprint")
            legacy = hashlib.sha256(self.config.fingerprint().encode()).hexdigest()  # runs made before redaction
            if stored not in (config_digest(self.config), legacy):
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
        """Run every stage not yet done (from ``from_stage`` on when given) and write the summary.

        ``from_stage``: that stage and every later one run again, their previous outputs set aside in
        ``<run>/.rerun/`` (:meth:`~synthagent.core.store.RunStore.begin_rerun`). They are replaced only when the
        rerun succeeds; a rerun that raises, is interrupted, or records infrastructure failures
        (:func:`rerun_failures`) puts them back and the error says so."""
        store = self._store()
        names = [stage.name for stage in PIPELINE]
        if store.recovered:
            log.warning("%s", store.recovered)
        rerun: tuple[Any, ...] = ()
        if from_stage is not None:
            if from_stage not in names:
                raise UsageError(f"unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
            rerun = PIPELINE[names.index(from_stage):]
            store.begin_rerun([stage.name for stage in rerun], [p for stage in rerun for p in stage.outputs(store)])
            for stage in rerun:
                stage.reset(store)
            log.info("--from %s: the previous outputs are set aside in %s until the rerun succeeds", from_stage,
                     store.root / RERUN)
        if self._resumed:
            self._report_unaccounted(store)
        counts = CountLog(store.root, self.runtime.stats)  # counts.jsonl: what this process counts, by stage

        def progress(stage: str, advance: int, total: int | None) -> None:
            self.progress(stage, advance, total)
            if advance > 0:
                counts.tick(stage, advance)

        ctx = StageContext(self.runtime, store, progress, counts)
        timings: dict[str, float] = dict(store.manifest.get("timings", {}))
        try:
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
                failed = rerun_failures(store, [stage.name for stage in rerun]) if store.rerunning else ""
                if failed:
                    raise StageError(f"--from {from_stage}: {failed}")
                store.manifest["timings"] = timings
                store.save_manifest()
                summary = self.write_summary()
            except BaseException as exc:
                if not store.rerunning:
                    raise
                restored = store.undo_rerun()
                kept = (f"the previous outputs of --from {from_stage} were kept ({', '.join(restored) or 'none'}); "
                        "fix the cause and run it again")
                log.error("rerun --from %s failed (%s: %s); %s", from_stage, type(exc).__name__, exc, kept)
                if isinstance(exc, SynthError):
                    try:
                        again = type(exc)(f"{exc}; {kept}")
                    except TypeError:  # pragma: no cover - a SynthError subclass with another signature
                        raise exc from None
                    raise again from exc
                raise
            store.finish_rerun()
            return summary
        finally:
            store.close()
            await self.runtime.aclose()

    def _report_unaccounted(self, store: RunStore) -> None:
        """On resume, say in run.log how many model requests earlier processes made but never counted (a kill
        before their count line; with worker processes, the interrupted stage's workers' counts), as far as
        the records tell (:func:`~synthagent.core.counts.unaccounted_calls`). Only for a backend that counts
        its requests (``llm.requests``)."""
        llm = self.runtime.components.llm
        if not isinstance(getattr(llm, "stats", None), Mapping):
            return
        recorded = {"simulate": sum(t.usage.calls for t in store.trajectories if t.policy == llm.name)}
        if self.runtime.demonstrator is llm:
            simulated = store.trajectories.ids
            recorded["rubric"] = sum(t.usage.calls for t in store.demonstrations if t.id not in simulated)
        for stage, n in unaccounted_calls(read_counts(store.root), recorded).items():
            log.warning("resume: at least %d model requests of the %s stage are not in counts.jsonl (its records "
                        "hold %d model calls): a process was killed before it wrote their counts; the summary's "
                        "stats leave them out", n, stage, recorded[stage])

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
