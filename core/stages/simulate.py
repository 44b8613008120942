"""simulate: ``simulate.samples`` rollouts of the run's model per task (``trajectories.jsonl``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from synthagent.core.engine import JobRunner, LoopLagMonitor
from synthagent.core.stages.base import RecordStage, StageContext, collect_rollouts, store_rollout

__all__ = ["SimulateStage"]


class SimulateStage(RecordStage):
    """Rolls out every (task, sample) not yet recorded through the executor; a rollout that fails for
    infrastructure reasons is recorded as such (never scored as 0); one whose record cannot be stored (model
    output nested deeper than :data:`~synthagent.core.models.MAX_DEPTH`) is dropped as ``unstorable_trajectory``
    (:func:`~synthagent.core.stages.base.store_rollout`)."""

    name = "simulate"
    file: str | None = "trajectories"

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Roll out what is missing; return counts, failures, merged stats and engine figures."""
        store, runtime = ctx.store, ctx.runtime
        samples = ctx.config.simulate.samples
        tasks = store.tasks.load()
        jobs = [(task, sample) for task in tasks for sample in range(samples)
                if runtime.trajectory_id(task.id, sample) not in store.trajectories]
        total = len(tasks) * samples
        ctx.progress(self.name, total - len(jobs), total)
        failures: Counter[str] = Counter()
        # picklable: worker processes rebuild the runtime; items name tasks by id (tasks travel once per worker)
        runner = JobRunner(runtime.worker_spec(), "rollout", runtime=runtime, tasks={t.id: t for t, _ in jobs})
        concurrency = runtime.concurrency()
        lag = LoopLagMonitor().start()  # how late the loop wakes: anything blocking it shows here
        results = runtime.components.executor.map(runner, [(t.id, s) for t, s in jobs], concurrency=concurrency)
        dropped: Counter[str] = Counter()
        async for trajectory in collect_rollouts(results, what="rollout", failures=failures,
                                                 on_failure=runtime.infra_failure):
            store_rollout(ctx, "trajectories", trajectory, stage=self.name, what="rollout", dropped=dropped)
            ctx.progress(self.name, 1, total)
        await lag.stop()
        engine = Counter(runner.stats)
        engine.update(runtime.worker_stats().get("engine", {}))
        return {"count": len(store.trajectories), "rollout_exceptions": dict(failures), "dropped": dict(dropped),
                "stats": runtime.stats(),
                "engine": {"executor": ctx.config.executor, "concurrency": concurrency,
                           **dict(sorted(engine.items())), "driver_loop_lag_ms": lag.summary()}}
