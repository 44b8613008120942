"""generate: tasks from the run's generator, written as they come (``tasks.jsonl``)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

from synthagent.core.engine import JobRunner
from synthagent.core.models import Task, nesting_problem
from synthagent.core.protocols import GenerationContext
from synthagent.core.stages.base import RecordStage, StageContext, log
from synthagent.core.taskcheck import check_task, needs_a_question

__all__ = ["GenerateStage", "missing_evidence"]


def missing_evidence(task: Task) -> str | None:
    """Why ``task`` carries no positive evidence a policy must produce (None when it does).

    Positive evidence is a required write (a workflow step that writes, or a gold state with changed rows)
    or a required answer (answer values); in an environment without a database state (no ``gold_state``,
    e.g. an external benchmark checked by its own checker), the workflow's required tool calls. A task with
    none of them lets a policy that does nothing pass: the generate stage drops it, whatever plugin made it,
    and counts the reason (``no_positive_evidence``).
    """
    if task.answer or any(step.writes for step in task.workflow):
        return None
    if task.gold_state is not None and any(task.gold_state.changes.values()):
        return None
    if task.gold_state is None and any(step.tool for step in task.workflow):
        return None
    return "no_positive_evidence: the workflow makes no write and the task asks for no answer"


class GenerateStage(RecordStage):
    """Asks the generator for ``tasks`` tasks; slot-by-slot generators run in the executor's workers when
    those are other processes. Every task is checked (:func:`synthagent.core.taskcheck.check_task`) before it is
    stored; one that fails is dropped with its first problem as the reason (``invalid_task: ...``), and one
    without positive evidence (:func:`missing_evidence`) as ``no_positive_evidence``. A task that hides no fact
    the agent needs (:func:`synthagent.core.taskcheck.needs_a_question`) is kept and counted (``no_question``):
    it cannot teach asking the user."""

    name = "generate"
    file: str | None = "tasks"

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Generate until the run has ``config.tasks`` tasks (tasks already written are kept)."""
        store, runtime = ctx.store, ctx.runtime
        target = ctx.config.tasks
        ctx.progress(self.name, len(store.tasks), target)
        gen_ctx = GenerationContext(count=target, seed=ctx.config.seed, llm=runtime.components.llm,
                                    done_slots=frozenset(t.provenance.slot for t in store.tasks))
        written = no_question = 0
        invalid: Counter[str] = Counter()
        async with contextlib.aclosing(self._generated(ctx, gen_ctx)) as generated:
            async for task in generated:
                deep = nesting_problem(task)  # before anything walks it: model output can nest without bound
                problems = [f"the record is {deep.split(' at ')[0]}"] if deep else check_task(task)
                if problems:  # whatever plugin made it: dropped with the reason, never stored
                    invalid[f"invalid_task: {problems[0]}"] += 1
                    log.warning("generated task %s dropped: %s", task.id, "; ".join(problems))
                    continue
                reason = missing_evidence(task)
                if reason is not None:  # no reward for nothing: a do-nothing policy could pass it
                    invalid[reason.split(":")[0]] += 1
                    log.warning("generated task %s dropped: %s", task.id, reason)
                    continue
                if not needs_a_question(task):  # kept, but said: it cannot teach asking the user
                    no_question += 1
                    log.info("generated task %s hides no fact the agent needs (%s)", task.id,
                             "nothing hidden" if not task.user_context else "every hidden fact is unneeded")
                if store.tasks.append(task):
                    written += 1
                    ctx.progress(self.name, 1, target)
                if len(store.tasks) >= target:
                    break
        stats = Counter(runtime.stats().get("generator", {}))
        stats.update(invalid)
        if ctx.counts is not None and invalid:  # kept with the generator's counts, across resumes
            ctx.counts.add(self.name, "generator", invalid)
        return {"count": len(store.tasks), "written": written, "dropped": dict(stats), "no_question": no_question}

    async def _generated(self, ctx: StageContext, gen_ctx: GenerationContext) -> AsyncGenerator[Task, None]:
        runtime = ctx.runtime
        if not runtime.generates_remotely:
            async for task in runtime.generate(gen_ctx):  # each item checked to be a Task (a PluginError names it)
                yield task
            return
        runner = JobRunner(runtime.worker_spec(), "generate", runtime=runtime)
        generator: Any = runtime.components.generator
        results: Any = runtime.components.executor.map(runner, generator.slots(gen_ctx),
                                                       concurrency=runtime.concurrency())
        async with contextlib.aclosing(results):
            async for _slot, task in results:
                if isinstance(task, BaseException):
                    raise task  # as when the generator runs here: the stage stops, --resume continues it
                if task is not None:
                    yield task
