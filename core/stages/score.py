"""score: every trajectory judged against its task's rubric (``scores.jsonl``)."""

from __future__ import annotations

from typing import Any

from synthagent.core.engine import JobRunner
from synthagent.core.models import Score, stable_id
from synthagent.core.stages.base import RecordStage, StageContext

__all__ = ["ScoreStage"]


class ScoreStage(RecordStage):
    """Scores through the executor; a trajectory of a dropped task gets a ``dropped`` score (never scored)."""

    name = "score"
    file: str | None = "scores"

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Score what is not scored yet."""
        store, runtime = ctx.store, ctx.runtime
        tasks = {t.id: t for t in store.tasks}
        rubrics = {r.task_id: r for r in store.rubrics}
        done = {s.trajectory_id for s in store.scores}
        trajectories = store.trajectories.load()
        ctx.progress(self.name, 0, len(trajectories))
        ctx.progress(self.name, sum(1 for t in trajectories if t.id in done), len(trajectories))
        jobs = []
        for t in trajectories:
            if t.id in done:
                continue
            rubric = rubrics[t.task_id]
            if rubric.dropped and t.error is None:  # never scored: the rubric says why
                store.scores.append(Score(stable_id("score", t.id, rubric.id, "dropped"), t.id, t.task_id, rubric.id,
                                          ctx.config.scorer, "dropped", None, False, (), {}))
                ctx.progress(self.name, 1, len(trajectories))
            else:
                jobs.append((t.task_id, rubric, t))
        runner = JobRunner(runtime.worker_spec(), "score", runtime=runtime, tasks=tasks)
        async for _job, result in runtime.components.executor.map(runner, jobs, concurrency=runtime.concurrency()):
            if isinstance(result, BaseException):
                raise result  # a scorer records judge failures itself; anything else stops the stage (--resume)
            store.scores.append(result)
            ctx.progress(self.name, 1, len(trajectories))
        return {"count": len(store.scores)}
