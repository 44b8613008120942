"""rubric: each task's rubric from K teacher demonstrations (``demonstrations.jsonl``, ``rubrics.jsonl``)."""

from __future__ import annotations

import inspect
from collections import Counter
from typing import Any

from synthagent.core.engine import JobRunner, local_map
from synthagent.core.models import Task, Trajectory
from synthagent.core.stages.base import RecordStage, StageContext, collect_rollouts

__all__ = ["RubricStage"]


class RubricStage(RecordStage):
    """Rolls out the demonstrations a builder asks for (``demonstrations = K``), reusing the simulate stage's
    trajectories of the same policy, then builds every missing rubric (concurrently, bounded, for builders
    that ask a teacher). ``--from rubric`` empties ``rubrics.jsonl`` and keeps the demonstrations."""

    name = "rubric"
    file = "rubrics"

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Build the rubrics not built yet."""
        store, runtime = ctx.store, ctx.runtime
        tasks = store.tasks.load()
        builder = runtime.components.rubric
        k = runtime.demonstrations
        if k > 0:
            by_task = await self._demonstrations(ctx, tasks, k)
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
            rubric = builder.build(task, by_task.get(task.id, []))
            if inspect.isawaitable(rubric):
                asked[task.id] = rubric
            else:
                store.rubrics.append(rubric)
                ctx.progress(self.name, 1, len(tasks))

        async def wait(task_id: str) -> Any:
            return await asked[task_id]

        async for _task_id, rubric in local_map(wait, list(asked), concurrency=runtime.concurrency()):
            if isinstance(rubric, BaseException):
                raise rubric
            store.rubrics.append(rubric)
            ctx.progress(self.name, 1, len(tasks))
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

    async def _demonstrations(self, ctx: StageContext, tasks: list[Task], k: int) -> dict[str, list[Trajectory]]:
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
                    store.demonstrations.append(simulated[tid])
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
            store.demonstrations.append(demo_traj)
            if ctx.counts is not None:  # no progress is reported per demonstration: count them here
                ctx.counts.tick(self.name)
        out: dict[str, list[Trajectory]] = {}
        for demo_traj in store.demonstrations:
            out.setdefault(demo_traj.task_id, []).append(demo_traj)
        for demos in out.values():
            demos.sort(key=lambda t: t.sample)
        return out
