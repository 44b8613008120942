"""The run's environment, rebuilt for training and evaluation: tasks, rubrics, simulators and the scorer.

Everything comes from the run directory: ``tasks.jsonl`` (per-task tools, hidden user context, initial
database), ``rubrics.jsonl`` and the manifest's configuration, whose ``user``, ``tools``, ``mapping``, ``llm``
and ``scorer`` implementations are built through the plugin registry exactly as ``synth run`` built them. The
reward of a rollout is ``scorer.score(task, rubric, trajectory).total`` (public interfaces only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.agent_loop import episode_seed, initial_messages, run_episode
from synthagent.core.errors import RunDirectoryError, UsageError
from synthagent.core.models import Message, Rubric, Score, Task, Trajectory
from synthagent.core.protocols import LLMBackend, RunContext, UserTurn

__all__ = ["RunEnvironment", "Rollout", "prompt_key", "run_config_from_manifest"]

log = logging.getLogger("synthagent.train")


def prompt_key(prompt: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """A hashable key of an opening prompt (role and content of each message)."""
    return tuple((str(m.get("role")), str(m.get("content") or "")) for m in prompt)


def run_config_from_manifest(config: Mapping[str, Any]) -> Any:
    """The run's :class:`~synthagent.core.config.RunConfig` from ``manifest["config"]`` (unknown keys ignored)."""
    from synthagent.core.config import ExportConfig, LLMConfig, RunConfig, SimulateConfig

    def only(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
        names = {f.name for f in attrs.fields(cls)}
        return {k: v for k, v in dict(data or {}).items() if k in names}

    data = only(RunConfig, config)
    data["llm"] = LLMConfig(**only(LLMConfig, config.get("llm", {})))
    data["simulate"] = SimulateConfig(**only(SimulateConfig, config.get("simulate", {})))
    export = only(ExportConfig, config.get("export", {}))
    if "vertical" in export:
        export["vertical"] = tuple(export["vertical"])
    data["export"] = ExportConfig(**export)
    return RunConfig(**data)


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
        from synthagent.core.pipeline import build_components
        from synthagent.core.registry import load_plugins
        from synthagent.core.store import RunStore

        root = Path(run_dir)
        if not (root / "manifest.json").is_file():
            raise RunDirectoryError(f"run directory {str(run_dir)!r} does not exist or is not a synthagent run "
                                    "(no manifest.json); make one with `synth run`")
        store = RunStore.open(root, readonly=True)
        try:
            self.manifest = store.manifest
            tasks = store.tasks.load()
            rubrics = {r.task_id: r for r in store.rubrics}
        finally:
            store.close()
        self.root = root
        self.config = run_config_from_manifest(self.manifest.get("config", {}))
        # plugins the run loaded with --plugin (a third-party scorer, user or tool simulator) are needed again here
        extra = [p.get("module", "") for p in self.manifest.get("plugins", []) if p.get("source") == "--plugin"]
        self.plugins = plugins or load_plugins([m for m in extra if m])
        self.components = build_components(self.config, self.plugins)
        ctx = RunContext(llm=self.components.llm, mapping=self.components.mapping, run_dir=str(root),
                         seed=self.config.seed)
        for comp in (self.components.mapping, self.components.tools, self.components.user, self.components.scorer):
            setup = getattr(comp, "setup", None)
            if callable(setup):
                setup(ctx)
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
        c = self.components
        ep_seed = episode_seed(task.id, sample, seed)
        session = await c.tools.start(task, ep_seed)
        try:
            user = _StopWhenExhausted(await c.user.start(task, ep_seed), policy)
            trajectory = await run_episode(task, policy=policy, tools=session, user=user, max_turns=self.max_turns,
                                           sample=sample, seed=seed)
        finally:
            await session.aclose()
        return await self.score(task, trajectory)

    async def score(self, task: Task, trajectory: Trajectory) -> Rollout:
        """Score ``trajectory`` with the run's scorer; an unscorable trajectory gets reward 0."""
        try:
            score = await self.components.scorer.score(task, self.rubrics[task.id], trajectory)
        except Exception as exc:  # noqa: BLE001 - a failing judge must not kill training; counted as reward 0
            log.error("scoring task %s failed: %s: %s", task.id, type(exc).__name__, exc)
            return Rollout(task, trajectory, None, 0.0, False)
        total = score.total if score.status == "ok" and score.total is not None else 0.0
        return Rollout(task, trajectory, score, float(total), bool(score.success))

    async def aclose(self) -> None:
        """Close components that hold resources."""
        for comp in (self.components.scorer, self.components.user, self.components.tools, self.components.mapping,
                     self.components.llm):
            close = getattr(comp, "aclose", None)
            if close is not None and asyncio.iscoroutinefunction(close):
                await close()
