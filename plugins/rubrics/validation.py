"""Reward validation: does the reward separate good trajectories from lazy or hacking ones?

Used by ``benchmarks/bench_rewards.py`` (the table in ``docs/rewards.md``) and by the tests:

* :func:`corruption_table`: mean reward of the oracle and of each corruption of it, rubrics built by the
  given builder from K oracle demonstrations;
* :func:`stability`: rubrics built from the first 2, 3 and 4 demonstrations of a varied, sometimes wrong
  teacher, and how many of their criteria they share;
* checker validation counts come with both (``rubric.provenance["checkers"]``).
"""

from __future__ import annotations

import inspect
import itertools
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from synthagent.core.models import Rubric, Task, Trajectory
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.rubrics.demonstrated import rubric_agreement

__all__ = ["TABLE_CORRUPTIONS", "rollout", "demonstrations", "corruption_table", "stability"]

#: The corruptions of the issue's table, then the extra ones the oracle can play.
TABLE_CORRUPTIONS = ("skip_step", "never_ask", "ask_given", "forbidden_tool", "nothing", "wrong_answer",
                     "extra_write", "wrong_argument", "wrong_row")


_RUNTIME: Any = None


def _runtime() -> Any:
    """The offline environment's runtime (SQLite tools, rule user; built once per process)."""
    global _RUNTIME
    if _RUNTIME is None:
        from synthagent.core.config import RunConfig
        from synthagent.core.registry import load_plugins
        from synthagent.core.runtime import Runtime

        _RUNTIME = Runtime(RunConfig(tools="sqlite", user="rule"),
                           load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    return _RUNTIME


async def rollout(task: Task, policy: Any, sample: int = 0, seed: int = 0, max_turns: int | None = None) -> Trajectory:
    """One episode on the task's SQLite database with the rule-based user (:meth:`Runtime.rollout`)."""
    runtime = _runtime()
    turns = runtime.config.simulate.max_turns if max_turns is None else max_turns  # the default defined once
    trajectory: Trajectory = await runtime.rollout(task, sample, policy, seed=seed, max_turns=turns, params={})
    return trajectory


async def demonstrations(task: Task, k: int, *, vary: bool = True, mistakes: float = 0.0, seed: int = 0) -> list[Trajectory]:
    """``k`` demonstrations of the offline teacher (samples 0..k-1)."""
    teacher = OracleBackend(vary=vary, mistakes=mistakes)
    return [await rollout(task, teacher, sample=i, seed=seed) for i in range(k)]


async def corruption_table(tasks: Sequence[Task], builder: Any, scorer: Any, *, k: int = 3,
                           corruptions: Sequence[str] = TABLE_CORRUPTIONS) -> dict[str, Any]:
    """Mean reward of the oracle and each corruption on ``tasks`` (rubrics from ``k`` varied demonstrations).

    :returns: ``{"oracle": mean, "corruptions": {name: mean}, "lead": {name: oracle - mean},
        "min_task_gap": {name: smallest per-task gap}, "rubrics_dropped": n, "checkers": counts}``.
    """
    rubrics: dict[str, Rubric] = {}
    checkers: Counter[str] = Counter()
    for task in tasks:
        rubric = builder.build(task, await demonstrations(task, k))
        if inspect.isawaitable(rubric):
            rubric = await rubric
        rubrics[task.id] = rubric
        checkers.update(rubric.provenance.get("checkers", {}))
    kept = [t for t in tasks if not rubrics[t.id].dropped]

    async def scores(corruption: str) -> list[tuple[float, tuple[Any, ...]]]:
        policy = OracleBackend(corruption)
        out = []
        for task in kept:
            traj = await rollout(task, policy)
            score = await scorer.score(task, rubrics[task.id], traj)
            out.append((float(score.total or 0.0), traj.messages))
        return out

    oracle = await scores("none")
    result: dict[str, Any] = {"tasks": len(kept), "oracle": round(statistics.fmean(s for s, _ in oracle), 4),
                              "corruptions": {}, "lead": {}, "applicable": {}, "oracle_on_applicable": {},
                              "min_task_gap": {}, "rubrics_dropped": len(tasks) - len(kept),
                              "checkers": dict(checkers)}
    for name in corruptions:
        pairs = [(o, c) for (o, om), (c, cm) in zip(oracle, await scores(name)) if om != cm]
        # a corruption that leaves the conversation identical (asking for a given fact when none was given,
        # another row when the table has one) does not apply to that task: it is left out, and counted
        result["applicable"][name] = len(pairs)
        if not pairs:
            continue
        mean = statistics.fmean(c for _, c in pairs)
        result["corruptions"][name] = round(mean, 4)
        result["oracle_on_applicable"][name] = round(statistics.fmean(o for o, _ in pairs), 4)
        result["lead"][name] = round(result["oracle_on_applicable"][name] - mean, 4)
        result["min_task_gap"][name] = round(min(o - c for o, c in pairs), 4)
    return result


async def stability(tasks: Sequence[Task], builder_factory: Any, *, ks: Sequence[int] = (2, 3, 4),
                    mistakes: float = 0.15, seed: int = 0) -> dict[str, Any]:
    """Agreement of rubrics built from the first K demonstrations of the same varied, imperfect teacher.

    :param builder_factory: ``builder_factory(k)`` returns a builder that uses ``k`` demonstrations.
    :returns: mean agreement per pair of K (criteria shared / criteria in either; tasks where both rubrics
        exist), the overall mean, and tasks dropped per K.
    """
    pairs = list(itertools.combinations(ks, 2))
    agree: dict[str, list[float]] = {f"{a}-{b}": [] for a, b in pairs}
    dropped = Counter[int]()
    for task in tasks:
        demos = await demonstrations(task, max(ks), vary=True, mistakes=mistakes, seed=seed)
        built: dict[int, Rubric] = {}
        for k in ks:
            rubric = builder_factory(k).build(task, demos[:k])
            if inspect.isawaitable(rubric):
                rubric = await rubric
            built[k] = rubric
            dropped[k] += bool(rubric.dropped)
        for a, b in pairs:
            if not built[a].dropped and not built[b].dropped:
                agree[f"{a}-{b}"].append(rubric_agreement(built[a], built[b]))
    per_pair = {p: round(statistics.fmean(v), 4) if v else None for p, v in agree.items()}
    everything = [x for v in agree.values() for x in v]
    return {"tasks": len(tasks), "agreement": per_pair,
            "mean": round(statistics.fmean(everything), 4) if everything else None,
            "dropped": {str(k): dropped[k] for k in ks}, "mistakes": mistakes}
