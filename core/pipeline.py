"""The pipeline: generate -> simulate -> rubric -> score -> export, each stage resumable on its own.

Every stage reads its inputs from the run store and appends records keyed by stable ids, so a stage that is
interrupted continues where it stopped (``--resume``), a finished stage is a no-op, and ``--from STAGE``
re-runs one stage and those after it. All setup (plugins, implementations, options) happens in
:meth:`Pipeline.prepare`, before any directory is created, so bad input fails with nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from synthagent.core import __version__
from synthagent.core.agent_loop import episode_seed, initial_messages, run_episode
from synthagent.core.config import STAGES, RunConfig
from synthagent.core.engine import JobRunner, LoopLagMonitor, WorkerSpec, resolve_concurrency
from synthagent.core.errors import RunDirectoryError, StageError, UsageError
from synthagent.core.models import Score, Task, Trajectory, stable_id
from synthagent.core.protocols import (
    Executor,
    RunContext,
    GenerationContext,
    LLMBackend,
    RewardScorer,
    RubricBuilder,
    TaskGenerator,
    ToolSimulator,
    UserSimulator,
)
from synthagent.core.registry import Plugins
from synthagent.core.store import RunStore, write_json_atomic, write_jsonl_atomic

__all__ = ["Pipeline", "ProgressHook", "Components", "sft_row", "rl_row"]

log = logging.getLogger("synthagent")

#: The record file each stage writes.
STAGE_FILES = {"generate": "tasks", "simulate": "trajectories", "rubric": "rubrics", "score": "scores"}

#: ``progress(stage, advance, total)``: called as records are produced (``total`` may be None).
ProgressHook = Callable[[str, int, "int | None"], None]


@attrs.define
class Components:
    """The implementations a run uses, built from the config before anything is written."""

    generator: TaskGenerator
    user: UserSimulator
    tools: ToolSimulator
    rubric: RubricBuilder
    scorer: RewardScorer
    executor: Executor
    llm: LLMBackend
    mapping: Any


def _accepted(factory: Callable[..., Any]) -> set[str] | None:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def build_components(config: RunConfig, plugins: Plugins) -> Components:
    """Look up and build every implementation the config names (unknown names and options fail here)."""

    def make(kind: str, name: str, base: Mapping[str, Any] | None = None) -> Any:
        impl = plugins.registry(kind).get(name)
        options = dict(base or {})
        accepted = _accepted(impl.factory)
        if accepted is not None:  # generic settings ([llm]) are offered; an implementation takes what it knows
            options = {k: v for k, v in options.items() if k in accepted}
        options.update(config.options_for(name, kind))
        return impl.create(options)

    llm_base = attrs.asdict(config.llm)
    llm_base.pop("backend")
    return Components(
        generator=make("generator", config.generator),
        user=make("user", config.user),
        tools=make("tools", config.tools),
        rubric=make("rubric", config.rubric),
        scorer=make("scorer", config.scorer),
        executor=make("executor", config.executor),
        llm=make("llm", config.llm.backend, llm_base),
        mapping=make("mapping", config.mapping),
    )


def sft_row(task: Task, trajectory: Trajectory, score: Score) -> dict[str, Any]:
    """An SFT export row: OpenAI messages and tools (arguments as dicts, as chat templates expect)."""
    return {
        "messages": [m.openai() for m in trajectory.messages],
        "tools": [t.openai_schema() for t in task.tools],
        "task_id": task.id,
        "trajectory_id": trajectory.id,
        "domain": task.domain,
        "score": score.total,
    }


def rl_row(task: Task) -> dict[str, Any]:
    """An RL export row: the opening prompt, the tools and the task reference (the environment is rebuilt
    from ``tasks.jsonl`` by id)."""
    return {
        "prompt": [m.openai() for m in initial_messages(task)],
        "tools": [t.openai_schema() for t in task.tools],
        "task_id": task.id,
        "domain": task.domain,
    }


class Pipeline:
    """Runs the stages of one run directory.

    :param config: the validated run configuration.
    :param plugins: loaded plugins (their registries supply the implementations).
    :param progress: optional progress callback (the CLI draws rich progress bars with it).
    """

    def __init__(self, config: RunConfig, plugins: Plugins, progress: ProgressHook | None = None) -> None:
        self.config = config
        self.plugins = plugins
        self.progress = progress or (lambda stage, advance, total: None)
        self.components = build_components(config, plugins)
        name = str(getattr(self.components.rubric, "demonstrator", "") or "")
        #: the backend that plays rubric demonstrations (the run's model unless the builder names another)
        self.demonstrator: LLMBackend = plugins.registry("llm").get(name).create(
            dict(getattr(self.components.rubric, "demonstrator_options", {}) or {})) if name else self.components.llm
        self.store: RunStore | None = None

    # -- run directory ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest of a new run: config, plugins with versions, prompt hashes, seed, environment."""
        return {
            "synthagent": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "fingerprint": hashlib.sha256(self.config.fingerprint().encode()).hexdigest(),
            "plugins": self.plugins.loaded,
            "implementations": {
                kind: {"name": name, "plugin": self.plugins.registry(kind).get(name).plugin,
                       "version": self.plugins.registry(kind).get(name).version}
                for kind, name in self._selected().items()
            },
            "prompt_hashes": self._prompt_hashes(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "stages": {stage: {"status": "pending"} for stage in STAGES},
        }

    def _selected(self) -> dict[str, str]:
        c = self.config
        return {"generator": c.generator, "user": c.user, "tools": c.tools, "mapping": c.mapping,
                "rubric": c.rubric, "scorer": c.scorer, "executor": c.executor, "llm": c.llm.backend}

    def _prompt_hashes(self) -> dict[str, str]:
        hashes: dict[str, str] = {}
        for comp in attrs.astuple(self.components, recurse=False):
            get = getattr(comp, "prompt_hashes", None)
            if callable(get):
                hashes.update(get())
        return hashes

    def open_store(self, root: Path, *, resume: bool) -> RunStore:
        """Create (or, with ``resume``, reopen) the run directory."""
        ctx = RunContext(llm=self.components.llm, mapping=self.components.mapping, run_dir=str(root),
                         seed=self.config.seed)
        for comp in attrs.astuple(self.components, recurse=False):
            setup = getattr(comp, "setup", None)
            if callable(setup):  # before the directory exists: a setup error leaves nothing behind
                setup(ctx)
        if resume:
            store = RunStore.open(root)
            old = store.manifest.get("fingerprint")
            new = hashlib.sha256(self.config.fingerprint().encode()).hexdigest()
            if old != new:
                store.close()  # releases the lock
                raise RunDirectoryError(
                    f"{str(root)!r} was started with a different configuration; resume it with the same config, "
                    "or start a new run with another --name"
                )
        else:
            store = RunStore.create(root.parent, root.name, self.manifest())
        self.store = store
        return store

    # -- stages ----------------------------------------------------------------------------------
    async def run(self, *, from_stage: str | None = None) -> dict[str, Any]:
        """Run every stage not yet done (from ``from_stage`` on when given) and write the summary."""
        store = self._store()
        if from_stage is not None:
            if from_stage not in STAGES:
                raise UsageError(f"unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
            for stage in STAGES[STAGES.index(from_stage):]:
                self._reset(stage)
        timings: dict[str, float] = dict(store.manifest.get("timings", {}))
        try:
            for stage in STAGES:
                if store.stage_done(stage):
                    continue
                store.mark_stage(stage, "running")
                log.info("stage %s started", stage)
                start = time.perf_counter()
                info = await getattr(self, f"_stage_{stage}")()
                timings[stage] = round(time.perf_counter() - start, 3)
                log.info("stage %s done in %.3f s: %s", stage, timings[stage], info)
                if stage in STAGE_FILES:
                    store.files[STAGE_FILES[stage]].touch()  # present even when the stage produced nothing
                    store.files[STAGE_FILES[stage]].sync()
                store.mark_stage(stage, "done", **info)
            store.manifest["timings"] = timings
            store.save_manifest()
            return self.write_summary()
        finally:
            store.close()
            for comp in attrs.astuple(self.components, recurse=False):
                close = getattr(comp, "aclose", None)
                if close is not None and inspect.iscoroutinefunction(close):
                    await close()

    def _store(self) -> RunStore:
        if self.store is None:
            raise StageError("open_store() must be called before run()")
        return self.store

    def _reset(self, stage: str) -> None:
        store = self._store()
        if stage in STAGE_FILES:
            store.files[STAGE_FILES[stage]].reset()
        elif stage == "export":
            for name in ("sft.jsonl", "rl.jsonl", "curriculum/general.jsonl", "curriculum/vertical.jsonl"):
                (store.exports / name).unlink(missing_ok=True)
        store.mark_stage(stage, "pending")

    async def _stage_generate(self) -> dict[str, Any]:
        store = self._store()
        target = self.config.tasks
        already = len(store.tasks)
        self.progress("generate", already, target)
        ctx = GenerationContext(count=target, seed=self.config.seed, llm=self.components.llm,
                                done_slots=frozenset(t.provenance.slot for t in store.tasks))
        written = 0
        async with contextlib.aclosing(self._generated(ctx)) as generated:
            async for task in generated:
                if store.tasks.append(task):
                    written += 1
                    self.progress("generate", 1, target)
                if len(store.tasks) >= target:
                    break
        stats = Counter(getattr(self.components.generator, "stats", {}) or {})
        worker_stats = getattr(self.components.executor, "worker_stats", None)
        if callable(worker_stats) and self._generate_remotely():
            stats.update(worker_stats().get("generator", {}))
        return {"count": len(store.tasks), "written": written, "dropped": dict(stats)}

    def _generate_remotely(self) -> bool:
        """Generation is spread over the executor's workers when the executor runs jobs in other processes
        (``remote``) and the generator works slot by slot (``slots(ctx)`` and ``synthesize(llm, slot, seed)``)."""
        gen = self.components.generator
        return bool(getattr(self.components.executor, "remote", False)) and all(
            callable(getattr(gen, name, None)) for name in ("slots", "synthesize"))

    async def _generated(self, ctx: GenerationContext) -> AsyncGenerator[Task, None]:
        if not self._generate_remotely():
            async for task in self.components.generator.generate(ctx):
                yield task
            return
        runner = JobRunner(self.worker_spec(), "generate", components=self.components)
        results: Any = self.components.executor.map(runner, self.components.generator.slots(ctx),
                                               concurrency=resolve_concurrency(self.config, self.components.llm))
        async with contextlib.aclosing(results):
            async for _slot, task in results:
                if isinstance(task, BaseException):
                    raise task  # as when the generator runs here: the stage stops, --resume continues it
                if task is not None:
                    yield task

    async def _stage_simulate(self) -> dict[str, Any]:
        store = self._store()
        c = self.components
        samples = self.config.simulate.samples
        tasks = store.tasks.load()
        jobs = []
        for task in tasks:
            for sample in range(samples):
                if stable_id("traj", task.id, c.llm.name, sample, self.config.seed) not in store.trajectories:
                    jobs.append((task, sample))
        total = len(tasks) * samples
        self.progress("simulate", total - len(jobs), total)
        failures: Counter[str] = Counter()
        # picklable: worker processes rebuild the components; items name tasks by id (tasks travel once per worker)
        runner = JobRunner(self.worker_spec(), "rollout", components=c, tasks={t.id: t for t, _ in jobs})
        concurrency = resolve_concurrency(self.config, c.llm)
        lag = LoopLagMonitor().start()  # how late the loop wakes: anything blocking it shows here
        items = [(task.id, sample) for task, sample in jobs]
        async for (task_id, sample), result in c.executor.map(runner, items, concurrency=concurrency):
            if isinstance(result, BaseException):
                if isinstance(result, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
                    raise result
                failures[type(result).__name__] += 1
                log.error("rollout of task %s sample %d failed: %s: %s", task_id, sample, type(result).__name__,
                          result, exc_info=result)
                result = self._infra_failure(task_id, sample, result)
            store.trajectories.append(result)
            self.progress("simulate", 1, total)
        await lag.stop()
        return {"count": len(store.trajectories), "rollout_exceptions": dict(failures),
                "stats": self.component_stats(), "engine": self._engine_info(runner, concurrency, lag)}

    async def _demonstrations(self, tasks: list[Task], k: int) -> dict[str, list[Trajectory]]:
        """K teacher demonstrations per task: sample ``i`` of the run's teacher, reused from the simulate
        stage when it has that sample (same policy, seed and sample give the same trajectory), otherwise
        rolled out now and kept in ``demonstrations.jsonl`` (resumable like every record file)."""
        store = self._store()
        c = self.components
        teacher = self.demonstrator
        simulated = {t.id: t for t in store.trajectories}
        have = {t.id: t for t in store.demonstrations}
        jobs = []
        for task in tasks:
            for sample in range(k):
                tid = stable_id("traj", task.id, teacher.name, sample, self.config.seed)
                if tid in simulated and tid not in have:
                    store.demonstrations.append(simulated[tid])
                elif tid not in have:
                    jobs.append((task, sample))
        failures: Counter[str] = Counter()
        concurrency = resolve_concurrency(self.config, teacher)
        if teacher is c.llm:  # the run's model: through the executor, like the simulate stage
            runner: Any = JobRunner(self.worker_spec(), "rollout", components=c, tasks={t.id: t for t, _ in jobs})
            results = c.executor.map(runner, [(t.id, s) for t, s in jobs], concurrency=concurrency)
        else:  # another backend plays the demonstrations: here, on this event loop
            async def demo(job: tuple[str, int]) -> Trajectory:
                return await self._rollout((by_id[job[0]], job[1]), teacher)

            by_id = {t.id: t for t, _ in jobs}
            local = self.plugins.registry("executor").get("local").create({})
            results = local.map(demo, [(t.id, s) for t, s in jobs], concurrency=concurrency)
        async for (task_id, sample), result in results:
            if isinstance(result, BaseException):
                if isinstance(result, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
                    raise result
                failures[type(result).__name__] += 1
                log.error("demonstration %d of task %s failed: %s: %s", sample, task_id, type(result).__name__, result)
                result = self._infra_failure(task_id, sample, result, teacher.name)
            store.demonstrations.append(result)
        if failures:
            log.warning("demonstration rollouts failed: %s", dict(failures))
        out: dict[str, list[Trajectory]] = {}
        for demo in store.demonstrations:
            out.setdefault(demo.task_id, []).append(demo)
        for demos in out.values():
            demos.sort(key=lambda t: t.sample)
        return out

    async def _rollout(self, job: tuple[Task, int], policy: LLMBackend | None = None) -> Trajectory:
        """One episode of the run's policy (or ``policy``) on a task (a fresh tool session and user per rollout)."""
        task, sample = job
        c = self.components
        policy = policy or c.llm
        seed = episode_seed(task.id, sample, self.config.seed)
        tool_session = await c.tools.start(task, seed)
        try:
            user = await c.user.start(task, seed)
            return await run_episode(
                task, policy=policy, tools=tool_session, user=user,
                max_turns=self.config.simulate.max_turns, sample=sample, seed=self.config.seed,
                params={"temperature": self.config.llm.temperature, "max_tokens": self.config.llm.max_tokens},
            )
        finally:
            await tool_session.aclose()

    def _infra_failure(self, task_id: str, sample: int, error: BaseException, policy: str | None = None) -> Trajectory:
        """The record of a rollout that failed for infrastructure reasons (never scored as 0)."""
        policy = policy or self.components.llm.name
        return Trajectory(
            id=stable_id("traj", task_id, policy, sample, self.config.seed), task_id=task_id,
            policy=policy, sample=sample, seed=0, messages=(), termination="infra_error", turns=0,
            error=f"{type(error).__name__}: {error}",
        )

    async def _stage_rubric(self) -> dict[str, Any]:
        store = self._store()
        tasks = store.tasks.load()
        builder = self.components.rubric
        k = int(getattr(builder, "demonstrations", 0) or 0)
        if k > 0:
            by_task = await self._demonstrations(tasks, k)
        else:  # a builder that asks for no demonstrations gets the simulate stage's trajectories
            by_task = {}
            for traj in store.trajectories:
                by_task.setdefault(traj.task_id, []).append(traj)
        self.progress("rubric", 0, len(tasks))
        done_tasks = {r.task_id for r in store.rubrics}
        asked: list[Any] = []  # builders that ask a teacher return awaitables: run them concurrently, bounded
        for task in tasks:
            if task.id in done_tasks:
                self.progress("rubric", 1, len(tasks))
                continue
            rubric = builder.build(task, by_task.get(task.id, []))
            if inspect.isawaitable(rubric):
                asked.append(rubric)
            else:
                store.rubrics.append(rubric)
                self.progress("rubric", 1, len(tasks))
        if asked:
            limit = asyncio.Semaphore(resolve_concurrency(self.config, self.components.llm))

            async def bounded(pending: Any) -> Any:
                async with limit:
                    return await pending

            running = [asyncio.ensure_future(bounded(a)) for a in asked]
            try:
                for finished in asyncio.as_completed(running):
                    store.rubrics.append(await finished)
                    self.progress("rubric", 1, len(tasks))
            finally:
                for fut in running:
                    fut.cancel()
        rubrics = list(store.rubrics)
        dropped = Counter(str(r.dropped).split(":")[0] for r in rubrics if r.dropped)
        checkers: Counter[str] = Counter()
        for r in rubrics:
            checkers.update(r.provenance.get("checkers", {}))
        info: dict[str, Any] = {"count": len(rubrics), "dropped": dict(sorted(dropped.items())),
                                "demonstrations": len(store.demonstrations) if k else 0}
        if checkers:
            info["checkers"] = dict(sorted(checkers.items()))
        return info

    async def _stage_score(self) -> dict[str, Any]:
        store = self._store()
        tasks = {t.id: t for t in store.tasks}
        rubrics = {r.task_id: r for r in store.rubrics}
        done = {s.trajectory_id for s in store.scores}
        trajectories = store.trajectories.load()
        self.progress("score", 0, len(trajectories))
        self.progress("score", sum(1 for t in trajectories if t.id in done), len(trajectories))
        jobs = []
        for t in trajectories:
            if t.id in done:
                continue
            rubric = rubrics[t.task_id]
            if rubric.dropped and t.error is None:  # never scored: the rubric says why
                store.scores.append(Score(stable_id("score", t.id, rubric.id, "dropped"), t.id, t.task_id, rubric.id,
                                          self.config.scorer, "dropped", None, False, (), {}))
                self.progress("score", 1, len(trajectories))
            else:
                jobs.append((t.task_id, rubric, t))
        runner = JobRunner(self.worker_spec(), "score", components=self.components, tasks=tasks)
        async for _job, result in self.components.executor.map(
                runner, jobs, concurrency=resolve_concurrency(self.config, self.components.llm)):
            if isinstance(result, BaseException):
                raise result  # a scorer records judge failures itself; anything else stops the stage (--resume)
            store.scores.append(result)
            self.progress("score", 1, len(trajectories))
        return {"count": len(store.scores)}

    async def _stage_export(self) -> dict[str, Any]:
        store = self._store()
        tasks = {t.id: t for t in store.tasks}
        scores = {s.trajectory_id: s for s in store.scores}
        rubrics = {r.task_id: r for r in store.rubrics}
        trajectories = sorted(store.trajectories, key=lambda t: (t.task_id, t.sample))
        min_score = self.config.export.min_score
        sft, rejected = [], []
        for t in trajectories:
            reason = _rejection(t, scores.get(t.id), rubrics.get(t.task_id), min_score)
            if reason is None:
                sft.append(sft_row(tasks[t.task_id], t, scores[t.id]))
            else:
                s = scores.get(t.id)
                rejected.append({"trajectory_id": t.id, "task_id": t.task_id, "domain": tasks[t.task_id].domain,
                                 "score": s.total if s else None, "reason": reason[0], "detail": reason[1]})
        rl = [rl_row(tasks[tid]) for tid in sorted(tasks) if not (rubrics.get(tid) and rubrics[tid].dropped)]
        write_jsonl_atomic(store.exports / "sft.jsonl", sft)
        write_jsonl_atomic(store.exports / "sft_rejected.jsonl", rejected)
        write_jsonl_atomic(store.exports / "rl.jsonl", rl)
        info: dict[str, Any] = {"sft": len(sft), "rl": len(rl),
                                "rejected": dict(sorted(Counter(r["reason"] for r in rejected).items()))}
        vertical = set(self.config.export.vertical)
        if vertical:  # the two-stage curriculum: general (all domains) first, then the vertical domains
            unknown = vertical - {t.domain for t in tasks.values()}
            if unknown:
                raise StageError(f"export.vertical names domains with no tasks: {sorted(unknown)}; "
                                 f"domains: {sorted({t.domain for t in tasks.values()})}")
            write_jsonl_atomic(store.exports / "curriculum" / "general.jsonl", sft)
            write_jsonl_atomic(store.exports / "curriculum" / "vertical.jsonl",
                               [r for r in sft if r["domain"] in vertical])
            info["curriculum"] = {"general": len(sft), "vertical": sum(1 for r in sft if r["domain"] in vertical)}
        self.progress("export", 1, 1)
        return info

    def _engine_info(self, runner: JobRunner, concurrency: int, lag: LoopLagMonitor) -> dict[str, Any]:
        counts = Counter(runner.stats)
        worker_stats = getattr(self.components.executor, "worker_stats", None)
        if callable(worker_stats):
            counts.update(worker_stats().get("engine", {}))
        return {"executor": self.config.executor, "concurrency": concurrency, **dict(sorted(counts.items())),
                "driver_loop_lag_ms": lag.summary()}

    def worker_spec(self) -> WorkerSpec:
        """What an executor's worker processes need to rebuild this run's components."""
        extra = tuple(p["name"] for p in self.plugins.loaded if p.get("source") != "builtin")
        environ = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SYNTHAGENT_")))
        run_dir = str(self.store.root) if self.store is not None else ""
        return WorkerSpec(self.config, extra, environ, run_dir)

    def component_stats(self) -> dict[str, dict[str, int]]:
        """Counters the implementations keep (``stats``), by kind: failures by kind, guard firings, hits.
        With worker processes (an executor with ``worker_stats()``), the workers' counters are added in."""
        out: dict[str, dict[str, int]] = {}
        for kind in ("llm", "user", "tools", "mapping", "generator", "scorer"):
            stats = getattr(getattr(self.components, kind), "stats", None)
            if stats:
                out[kind] = dict(sorted(stats.items()))
        worker_stats = getattr(self.components.executor, "worker_stats", None)
        if callable(worker_stats):
            for kind, counts in worker_stats().items():
                if kind == "engine":
                    continue
                merged = Counter(out.get(kind, {}))
                merged.update(counts)
                out[kind] = dict(sorted(merged.items()))
        return out

    # -- summary ---------------------------------------------------------------------------------
    def write_summary(self) -> dict[str, Any]:
        """Compute ``summary.json`` from the records and write it."""
        store = self._store()
        return summarize(store)


def _rejection(traj: Trajectory, score: Score | None, rubric: Any, min_score: float) -> tuple[str, str] | None:
    """Why a trajectory is left out of the SFT export: ``(reason, detail)``, or None to keep it."""
    if traj.error is not None:
        return "infra_error", traj.error[:300]
    if rubric is not None and rubric.dropped:
        return "task_dropped", str(rubric.dropped)[:300]
    if score is None:
        return "unscored", "no score record"
    if score.status != "ok" or score.total is None:
        return score.status, "; ".join(r.evidence for r in score.breakdown if not r.passed)[:300]
    if score.total < min_score:
        failed = [f"{r.criterion_id}: {r.evidence}" for r in score.breakdown if not r.passed]
        return "below_min_score", f"{score.total} < {min_score}; failed " + "; ".join(failed)[:300]
    return None


def _hit_rate(stats: dict[str, int]) -> float | None:
    hits, misses = stats.get("hits", 0), stats.get("misses", 0)
    return round(hits / (hits + misses), 4) if hits + misses else None


def summarize(store: RunStore) -> dict[str, Any]:
    """Counts, rates and means of a run directory (also what ``synth show`` prints); writes summary.json
    unless the store was opened read-only."""
    tasks = store.tasks.load()
    trajectories = store.trajectories.load()
    scores = [s for s in store.scores]
    ok_scores = [s.total for s in scores if s.status == "ok" and s.total is not None]
    per_domain: dict[str, list[float]] = {}
    task_domain = {t.id: t.domain for t in tasks}
    for s in scores:
        if s.status == "ok" and s.total is not None:
            per_domain.setdefault(task_domain.get(s.task_id, "?"), []).append(s.total)
    stages = store.manifest.get("stages", {})
    summary = {
        "run": store.root.name,
        "tasks": len(tasks),
        "trajectories": len(trajectories),
        "rubrics": len(store.rubrics),
        "scores": len(scores),
        "exports": {"sft": stages.get("export", {}).get("sft"), "rl": stages.get("export", {}).get("rl")},
        "domains": dict(sorted(Counter(t.domain for t in tasks).items())),
        "tool_calls_per_task": round(statistics.fmean(
            sum(len(m.tool_calls) for m in t.messages) for t in trajectories), 3) if trajectories else 0.0,
        "hidden_facts_per_task": round(statistics.fmean(len(t.user_context) for t in tasks), 3) if tasks else 0.0,
        "terminations": dict(sorted(Counter(t.termination for t in trajectories).items())),
        "infra_errors": sum(1 for t in trajectories if t.error is not None),
        "judge_errors": sum(1 for s in scores if s.status == "judge_error"),
        "tool_errors": sum(t.tool_errors for t in trajectories),
        "malformed_tool_calls": sum(t.malformed_tool_calls for t in trajectories),
        "score_mean": round(statistics.fmean(ok_scores), 4) if ok_scores else None,
        "success_rate": round(sum(1 for s in scores if s.success) / len(scores), 4) if scores else None,
        "score_by_domain": {d: round(statistics.fmean(v), 4) for d, v in sorted(per_domain.items())},
        "criteria_failed": dict(sorted(Counter(r.checker for s in scores for r in s.breakdown if not r.passed).items())),
        "dropped": stages.get("generate", {}).get("dropped", {}),
        "rubrics_dropped": stages.get("rubric", {}).get("dropped", {}),
        "checkers": stages.get("rubric", {}).get("checkers", {}),
        "sft_rejected": stages.get("export", {}).get("rejected", {}),
        "stats": stages.get("simulate", {}).get("stats", {}),
        "mapping_hit_rate": _hit_rate(stages.get("simulate", {}).get("stats", {}).get("tools", {})),
        "timings_s": store.manifest.get("timings", {}),
    }
    if not store.readonly:  # a reader (synth show) computes it and writes nothing
        write_json_atomic(store.root / "summary.json", summary)
    return summary
