"""rubric: each task's rubric from K teacher demonstrations (``demonstrations.jsonl``, ``rubrics.jsonl``)."""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

from synthagent.core.engine import JobRunner, local_map
from synthagent.core.errors import PluginError
from synthagent.core.models import Task, Trajectory
from synthagent.core.stages.base import RecordStage, StageContext, collect_rollouts, store_rollout

__all__ = ["RubricStage"]


class RubricStage(RecordStage):
    """Rolls out the demonstrations a builder asks for (``demonstrations = K``), reusing the simulate stage's
    trajectories of the same policy, then builds every missing rubric (concurrently, bounded, for builders
    that ask a teacher). ``--from rubric`` empties ``rubrics.jsonl`` and keeps the demonstrations."""

    name = "rubric"
    file: str | None = "rubrics"

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Build the rubrics not built yet."""
        store, runtime = ctx.store, ctx.runtime
        tasks = store.tasks.load()
        builder = runtime.components.rubric
        k = runtime.demonstrations
        unstorable: Counter[str] = Counter()  # demonstrations dropped (``unstorable_trajectory``: store_rollout)
        if k > 0:
            by_task = await self._demonstrations(ctx, tasks, k, unstorable)
        else:  # a builder that asks for no demonstrations gets the simulate stage's trajectories
            by_task = {}
            for traj in store.trajectories:
                by_task.setdefault(traj.task_id, []).append(traj)
        ctx.progress(self.name, 0, len(tasks))
        done_tasks = {r.task_id for r in store.rubrics}
        asked: dict[str, Any] = {}  # builders that ask a teacher return awaitables: run them concurrently, bounded
        for task in tasks:
            if task.id in done_tasks:
                ctx.progress(self.name, 1, len(tasks))
                continue
            try:
                rubric = builder.build(task, by_task.get(task.id, []))
            except Exception as exc:  # a programming error is the plugin's (PluginError), named with the task
                raise runtime.rubric_error(task, exc) from exc
            if inspect.isawaitable(rubric):
                asked[task.id] = (task, rubric)
            else:
                store.rubrics.append(runtime.checked_rubric(task, rubric))
                ctx.progress(self.name, 1, len(tasks))

        async def wait(task_id: str) -> Any:
            task, pending = asked[task_id]
            try:
                return runtime.checked_rubric(task, await pending)
            except PluginError:
                raise
            except Exception as exc:
                raise runtime.rubric_error(task, exc) from exc

        async for _task_id, built in local_map(wait, list(asked), concurrency=runtime.concurrency()):
            if isinstance(built, BaseException):
                raise built
            store.rubrics.append(built)
            ctx.progress(self.name, 1, len(tasks))
        rubrics = list(store.rubrics)
        dropped = Counter(str(r.dropped).split(":")[0] for r in rubrics if r.dropped)
        checkers: Counter[str] = Counter()
        for r in rubrics:
            checkers.update(r.provenance.get("checkers", {}))
        info: dict[str, Any] = {"count": len(rubrics), "dropped": dict(sorted(dropped.items())),
                                "demonstrations": len(store.demonstrations) if k else 0}
        if unstorable:
            info["demonstrations_dropped"] = dict(sorted(unstorable.items()))
        if checkers:
            info["checkers"] = dict(sorted(checkers.items()))
        return info

    async def _demonstrations(self, ctx: StageContext, tasks: list[Task], k: int,
                              dropped: Counter[str]) -> dict[str, list[Trajectory]]:
        """K teacher demonstrations per task: sample ``i`` of the teacher, reused from the simulate stage when
        it has that sample (same policy, seed and sample give the same trajectory), otherwise rolled out now
        and kept in ``demonstrations.jsonl`` (resumable like every record file)."""
        store, runtime = ctx.store, ctx.runtime
        teacher = runtime.demonstrator
        simulated = {t.id: t for t in store.trajectories}
        have = {t.id: t for t in store.demonstrations}
        jobs = []
        for task in tasks:
            for sample in range(k):
                tid = runtime.trajectory_id(task.id, sample, teacher.name)
                if tid in simulated and tid not in have:
                    store_rollout(ctx, "demonstrations", simulated[tid], stage=self.name, what="demonstration",
                                  dropped=dropped)
                elif tid not in have:
                    jobs.append((task, sample))
        failures: Counter[str] = Counter()
        concurrency = runtime.concurrency(teacher)
        items = [(t.id, s) for t, s in jobs]
        if teacher is runtime.components.llm:  # the run's model: through the executor, like the simulate stage
            runner = JobRunner(runtime.worker_spec(), "rollout", runtime=runtime, tasks={t.id: t for t, _ in jobs})
            results: Any = runtime.components.executor.map(runner, items, concurrency=concurrency)
        else:  # another backend plays the demonstrations: here, on this event loop
            by_id = {t.id: t for t, _ in jobs}

            async def demo(job: tuple[str, int]) -> Trajectory:
                return await runtime.rollout(by_id[job[0]], job[1], teacher)

            results = local_map(demo, items, concurrency=concurrency)

        def failed(task_id: str, sample: int, error: BaseException) -> Trajectory:
            return runtime.infra_failure(task_id, sample, error, teacher.name)

        async for demo_traj in collect_rollouts(results, what="demonstration", failures=failures, on_failure=failed):
            store_rollout(ctx, "demonstrations", demo_traj, stage=self.name, what="demonstration", dropped=dropped)
            if ctx.counts is not None:  # no progress is reported per demonstration: count them here
                ctx.counts.tick(self.name)
        out: dict[str, list[Trajectory]] = {}
        for demo_traj in store.demonstrations:
            out.setdefault(demo_traj.task_id, []).append(demo_traj)
        for demos in out.values():
            demos.sort(key=lambda t: t.sample)
        return out
