"""The run's environment, rebuilt for training and evaluation: tasks, rubrics, simulators and the scorer.

Everything comes from the run directory: ``tasks.jsonl`` (per-task tools, hidden user context, initial
database), ``rubrics.jsonl`` and the manifest's configuration, whose ``user``, ``tools``, ``mapping``, ``llm``
and ``scorer`` implementations are built through the plugin registry exactly as ``synth run`` built them. The
reward of a rollout is ``scorer.score(task, rubric, trajectory).total`` (public interfaces only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.agent_loop import initial_messages
from synthagent.core.errors import UsageError
from synthagent.core.models import Message, Rubric, Score, Task, Trajectory
from synthagent.core.protocols import LLMBackend, UserTurn

__all__ = ["RunEnvironment", "Rollout", "prompt_key"]

log = logging.getLogger("synthagent.train")


def prompt_key(prompt: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """A hashable key of an opening prompt (role and content of each message)."""
    return tuple((str(m.get("role")), str(m.get("content") or "")) for m in prompt)


@attrs.define
class Rollout:
    """One finished episode: its trajectory, score and reward (``score.total``, 0 when unscored)."""

    task: Task
    trajectory: Trajectory
    score: Score | None
    reward: float
    success: bool


class _StopWhenExhausted:
    """A user session that ends the episode once the policy has no token budget left."""

    def __init__(self, inner: Any, policy: Any) -> None:
        self.inner = inner
        self.policy = policy

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        if getattr(self.policy, "exhausted", False):
            return UserTurn(Message("user", ""), stop=True)
        return await self.inner.respond(messages)  # type: ignore[no-any-return]


class RunEnvironment:
    """The environment of a run directory.

    :param run_dir: a finished ``synth run`` directory.
    :param max_turns: agent turns per episode (default: the run's ``simulate.max_turns``).
    :param plugins: loaded plugins (default: :func:`~synthagent.core.registry.load_plugins`).
    """

    def __init__(self, run_dir: str | Path, *, max_turns: int = 0, plugins: Any = None) -> None:
        from synthagent.core.runtime import Runtime
        from synthagent.core.store import RunStore

        root = Path(run_dir)
        #: the run's own runtime, rebuilt from its manifest with the strict config parser
        self.runtime = Runtime.from_run_dir(root, plugins=plugins)
        self.runtime.setup(root, kinds=("mapping", "tools", "user", "scorer"))
        store = RunStore.open(root, readonly=True)
        try:
            self.manifest = store.manifest
            tasks = store.tasks.load()
            rubrics = {r.task_id: r for r in store.rubrics}
        finally:
            store.close()
        self.root = root
        self.config = self.runtime.config
        self.components = self.runtime.components
        self.max_turns = int(max_turns or self.config.simulate.max_turns)
        self.skipped = {"no_rubric": 0, "dropped_rubric": 0}
        self.tasks: dict[str, Task] = {}
        self.rubrics: dict[str, Rubric] = {}
        for task in tasks:
            rubric = rubrics.get(task.id)
            if rubric is None:
                self.skipped["no_rubric"] += 1
                continue
            if getattr(rubric, "dropped", None):  # a rubric the run dropped (unverifiable task): never train on it
                self.skipped["dropped_rubric"] += 1
                continue
            self.tasks[task.id] = task
            self.rubrics[task.id] = rubric
        if not self.tasks:
            raise UsageError(f"run {str(root)!r} has no task with a usable rubric to train or evaluate on")

    @property
    def scorer_name(self) -> str:
        """The name of the run's scorer (manifest key ``scorer``)."""
        return str(self.config.scorer)

    def prompt(self, task: Task) -> list[dict[str, Any]]:
        """The opening messages of ``task`` in OpenAI form (what the policy sees first)."""
        return [m.openai() for m in initial_messages(task)]

    def tools_schema(self, task: Task) -> list[dict[str, Any]]:
        """The task's own tools in OpenAI function format."""
        return [t.openai_schema() for t in task.tools]

    async def rollout(self, task: Task, policy: LLMBackend, *, sample: int, seed: int) -> Rollout:
        """Run ``policy`` as the agent on ``task`` (tools, user simulator) and score the trajectory."""
        trajectory = await self.runtime.rollout(task, sample, policy, seed=seed, max_turns=self.max_turns, params={},
                                                wrap_user=lambda user: _StopWhenExhausted(user, policy))
        return await self.score(task, trajectory)

    async def score(self, task: Task, trajectory: Trajectory) -> Rollout:
        """Score ``trajectory`` with the run's scorer; an unscorable trajectory gets reward 0."""
        try:
            score = await self.runtime.score(task, self.rubrics[task.id], trajectory)
        except Exception as exc:  # noqa: BLE001 - a failing judge must not kill training; counted as reward 0
            log.error("scoring task %s failed: %s: %s", task.id, type(exc).__name__, exc)
            return Rollout(task, trajectory, None, 0.0, False)
        total = score.total if score.status == "ok" and score.total is not None else 0.0
        return Rollout(task, trajectory, score, float(total), bool(score.success))

    async def aclose(self) -> None:
        """Close components that hold resources."""
        await self.runtime.aclose()
