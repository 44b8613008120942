"""Honest evaluation: ``synth eval``.

A policy (any registered LLM backend) plays a run's tasks, or a named benchmark's, ``repeats`` times each,
through the :class:`~synthagent.core.runtime.Runtime` (the run's user, tool simulator and scorer). Per-episode
records go to an *eval directory*, resumable like a run::

    manifest.json        kind "eval", the environment config, the policy and its options, repeats, source
    tasks.jsonl          the evaluated tasks        rubrics.jsonl   their rubrics (the training reward)
    trajectories.jsonl   one per episode            scores.jsonl    the rubric score of each episode
    episodes.jsonl       one :class:`Episode` per episode: the independent success and why it failed
    results.json         the metrics (:func:`metrics`)

**The headline is independent of the training reward.** For a database task (``success = "state"``): the
final database equals the gold state (digest) *and* every required answer value is in the final answer as a
whole token. For a benchmark with its own checker (``success = "scorer"``): the scorer's success. The rubric
reward is reported beside it.

Metrics (docs/evaluation.md has the formulas): success rate with a 95% Wilson interval; pass^k (tau2-bench:
the probability that all k i.i.d. trials of a task succeed, estimated per task as C(c, k) / C(n, k) and
averaged over tasks); mean rubric reward; failures by kind. :func:`compare` pairs two evaluations episode by
episode and tests the difference with an exact McNemar test.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.errors import RunDirectoryError, UsageError
from synthagent.core.matching import mentions_value
from synthagent.core.models import Rubric, Score, Task, Trajectory, stable_id
from synthagent.core.store import JsonlFile, RunStore, write_json_atomic

__all__ = ["Episode", "wilson", "pass_hat_k", "mcnemar_exact", "independent_success", "episode_of", "metrics", "eval_id",
           "prepare_tasks",
           "load_episodes", "compare", "evaluate", "process_rates", "EvalSpec", "WILSON_Z", "SUCCESS_MODES"]

#: The normal quantile of a two-sided 95% interval.
WILSON_Z = 1.959963984540054
#: How an episode's headline success is decided (:func:`independent_success`).
SUCCESS_MODES = ("state", "scorer")


@attrs.frozen
class Episode:
    """One evaluated episode: the independent success, why it failed, and the rubric reward beside it.

    ``success`` is None for an infrastructure failure (left out of every rate, counted apart).
    """

    id: str
    task_id: str
    sample: int
    policy: str
    domain: str
    template: str
    success: bool | None
    failure: str
    state_ok: bool | None
    answer_ok: bool | None
    reward: float | None
    rubric_success: bool
    termination: str
    turns: int


# -- statistics ----------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_hat_k(counts: Sequence[tuple[int, int]], k: int) -> float | None:
    """tau2-bench's pass^k: the mean over tasks of C(c, k) / C(n, k), the probability that k trials drawn
    without replacement from a task's n trials (c successful) all succeed. Tasks with fewer than k trials are
    left out; None when none is left."""
    usable = [(c, n) for c, n in counts if n >= k]
    if k < 1 or not usable:
        return None
    return sum(math.comb(c, k) / math.comb(n, k) for c, n in usable) / len(usable)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of ``b`` against ``b + c`` discordant pairs at 1/2
    (scipy's ``binomtest`` when installed, else the same sum with ``math.comb``); 1.0 with no discordant pair."""
    n = b + c
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binomtest
    except ImportError:
        tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    return float(binomtest(b, n, 0.5, alternative="two-sided").pvalue)


# -- one episode -----------------------------------------------------------------------------------
def independent_success(task: Task, trajectory: Trajectory, score: Score | None = None,
                        mode: str = "state") -> tuple[bool | None, str, bool | None, bool | None]:
    """The headline success of an episode, independent of the training reward.

    ``mode="state"`` with a gold state: the final state digest equals the gold digest and every required
    answer value (``task.answer``) is in the final answer as a whole token. Otherwise (``mode="scorer"``, or a
    task without a gold state): the scorer's success (a benchmark's own checker).

    :returns: (success or None for an infrastructure failure, failure kind or "", state ok, answer ok).
    """
    if trajectory.error is not None or trajectory.termination == "infra_error":
        return None, "infra_error", None, None
    if mode == "state" and task.gold_state is not None:
        state_ok = trajectory.final_state_digest == task.gold_state.digest
        final = next((m.content or "" for m in reversed(trajectory.messages)
                      if m.role == "assistant" and not m.tool_calls), "")
        answer_ok = all(mentions_value(final, v) for v in task.answer)
        failure = "" if state_ok and answer_ok else ("wrong_state" if not state_ok else "missing_answer")
        return state_ok and answer_ok, failure, state_ok, answer_ok
    ok = bool(score is not None and score.status == "ok" and score.success)
    return ok, "" if ok else ("not_scored" if score is None or score.status != "ok" else "checker_failed"), None, None


def episode_of(task: Task, trajectory: Trajectory, score: Score | None, mode: str = "state") -> Episode:
    """The :class:`Episode` record of one scored trajectory."""
    success, failure, state_ok, answer_ok = independent_success(task, trajectory, score, mode)
    if failure == "" and success is False:  # pragma: no cover - independent_success always names a failure
        failure = "failed"
    if success is False and trajectory.termination == "max_turns":
        failure = f"{failure}:max_turns"
    reward = score.total if score is not None and score.status == "ok" else None
    return Episode(id=trajectory.id, task_id=task.id, sample=trajectory.sample, policy=trajectory.policy,
                   domain=task.domain, template=task.provenance.template or f"{task.domain}/?", success=success,
                   failure=failure, state_ok=state_ok, answer_ok=answer_ok, reward=reward,
                   rubric_success=bool(score is not None and score.success), termination=trajectory.termination,
                   turns=trajectory.turns)


# -- metrics ---------------------------------------------------------------------------------------
def _rate(successes: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(successes, n)
    return {"successes": successes, "n": n, "rate": round(successes / n, 4) if n else None,
            "ci95": [round(lo, 4), round(hi, 4)]}


def metrics(episodes: Sequence[Episode], repeats: int = 1) -> dict[str, Any]:
    """The results of an evaluation (``results.json``): headline success with its Wilson interval, pass^k
    for k = 1..repeats, rubric reward, failures by kind, terminations, per domain and per task."""
    done = [e for e in episodes if e.success is not None]
    per_task: dict[str, list[Episode]] = defaultdict(list)
    for e in done:
        per_task[e.task_id].append(e)
    counts = [(sum(bool(e.success) for e in eps), len(eps)) for eps in per_task.values()]
    rewards = [e.reward for e in done if e.reward is not None]
    by_domain: dict[str, list[Episode]] = defaultdict(list)
    for e in done:
        by_domain[e.domain].append(e)
    return {
        "episodes": len(episodes),
        "tasks": len({e.task_id for e in episodes}),
        "repeats": repeats,
        "infra_errors": len(episodes) - len(done),
        "success": _rate(sum(bool(e.success) for e in done), len(done)),
        "pass_hat_k": {str(k): (round(v, 4) if (v := pass_hat_k(counts, k)) is not None else None)
                       for k in range(1, max(1, repeats) + 1)},
        "rubric": {"mean_reward": round(sum(rewards) / len(rewards), 4) if rewards else None,
                   "scored": len(rewards), "success": _rate(sum(e.rubric_success for e in done), len(done))},
        "failures": dict(sorted(Counter(e.failure for e in done if not e.success).items())),
        "terminations": dict(sorted(Counter(e.termination for e in episodes).items())),
        "by_domain": {d: _rate(sum(bool(e.success) for e in eps), len(eps)) for d, eps in sorted(by_domain.items())},
        "per_task": {t: {"successes": c, "n": n} for t, (c, n) in zip(per_task, counts)},
    }


def load_episodes(eval_dir: Path) -> list[Episode]:
    """The episodes of an eval directory.

    :raises RunDirectoryError: not an eval directory (no ``episodes.jsonl`` or a manifest of another kind).
    """
    path = Path(eval_dir) / "episodes.jsonl"
    manifest = Path(eval_dir) / "manifest.json"
    if not manifest.is_file() or not path.is_file():
        raise RunDirectoryError(f"{str(eval_dir)!r} is not an eval directory (no manifest.json and episodes.jsonl); "
                                "make one with `synth eval`")
    return JsonlFile(path, Episode).load()


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Paired comparison of two eval directories: episodes paired by (task, sample), the success of each,
    the mean per-task difference (A - B), and the exact McNemar p-value on the discordant pairs.

    :raises UsageError: the two evaluations share no episode (different tasks or repeats).
    """
    ea = {(e.task_id, e.sample): e for e in load_episodes(a) if e.success is not None}
    eb = {(e.task_id, e.sample): e for e in load_episodes(b) if e.success is not None}
    pairs = sorted(set(ea) & set(eb))
    if not pairs:
        raise UsageError(f"{str(a)!r} and {str(b)!r} share no episode (task and sample): evaluate both on the same "
                         "tasks (the same --run or --bench) to compare them")
    only_a = sum(1 for p in pairs if ea[p].success and not eb[p].success)
    only_b = sum(1 for p in pairs if eb[p].success and not ea[p].success)
    tasks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p in pairs:
        tasks[p[0]].append((int(bool(ea[p].success)), int(bool(eb[p].success))))
    diffs = [sum(x - y for x, y in v) / len(v) for v in tasks.values()]
    sa, sb = sum(bool(ea[p].success) for p in pairs), sum(bool(eb[p].success) for p in pairs)
    return {
        "a": str(a), "b": str(b), "pairs": len(pairs), "tasks": len(tasks),
        "a_success": _rate(sa, len(pairs)), "b_success": _rate(sb, len(pairs)),
        "difference": round((sa - sb) / len(pairs), 4),
        "per_task_difference": round(sum(diffs) / len(diffs), 4),
        "only_a": only_a, "only_b": only_b,
        "mcnemar_p": float(f"{mcnemar_exact(only_a, only_b):.4g}"),
        "unpaired": {"a": len(ea) - len(pairs), "b": len(eb) - len(pairs)},
    }


# -- running an evaluation -----------------------------------------------------------------------
@attrs.frozen
class EvalSpec:
    """What ``synth eval`` evaluates (recorded in the eval directory's manifest; ``--resume`` checks it).

    :param policy: the LLM backend name of the policy.
    :param policy_options: its options (``--set llm.*`` and ``[plugins.NAME]``).
    :param source: ``{"run": PATH}`` or ``{"bench": NAME}``.
    :param repeats: episodes per task (k).
    :param success: the headline success mode (:data:`SUCCESS_MODES`).
    """

    policy: str
    policy_options: Mapping[str, Any]
    source: Mapping[str, Any]
    repeats: int = 1
    success: str = "state"


Progress = Callable[[str, int, "int | None"], None]


async def evaluate(runtime: Any, policy: Any, store: RunStore, tasks: Sequence[Task], rubrics: Mapping[str, Rubric],
                   spec: EvalSpec, *, progress: Progress | None = None) -> dict[str, Any]:
    """Play ``repeats`` episodes of ``policy`` on every task with a kept rubric, score them, write the
    episode records (skipping those already written: resume) and ``results.json``; return the results.

    :param runtime: the environment's :class:`~synthagent.core.runtime.Runtime`, set up.
    :param policy: the LLM backend under evaluation.
    """
    import asyncio

    episodes = JsonlFile(store.root / "episodes.jsonl", Episode, readonly=False)
    done_traj = {t.id: t for t in store.trajectories} if len(store.trajectories) else {}
    done_scores = {s.trajectory_id: s for s in store.scores} if len(store.scores) else {}
    jobs = [(t, k) for t in tasks if t.id in rubrics and not rubrics[t.id].dropped for k in range(spec.repeats)]
    total = len(jobs)
    if progress:
        progress("eval", 0, total)
    limit = asyncio.Semaphore(runtime.concurrency(policy))
    params = {"temperature": float(spec.policy_options.get("temperature", runtime.config.llm.temperature)),
              "max_tokens": int(spec.policy_options.get("max_tokens", runtime.config.llm.max_tokens))}

    async def one(task: Task, sample: int) -> None:
        tid = runtime.trajectory_id(task.id, sample, policy.name)
        if tid in episodes:
            if progress:
                progress("eval", 1, None)
            return
        async with limit:
            trajectory = done_traj.get(tid)
            if trajectory is None:
                try:
                    trajectory = await runtime.rollout(task, sample, policy, params=params)
                except Exception as exc:  # noqa: BLE001 - an infrastructure failure is recorded, never scored 0
                    trajectory = runtime.infra_failure(task.id, sample, exc, policy.name)
                store.trajectories.append(trajectory)
            rubric = rubrics[task.id]
            score = done_scores.get(trajectory.id)
            if score is None and trajectory.error is None:
                score = await runtime.score(task, rubric, trajectory)
                store.scores.append(score)
            episodes.append(episode_of(task, trajectory, score, spec.success))
        if progress:
            progress("eval", 1, None)

    try:
        await asyncio.gather(*(one(t, k) for t, k in jobs))
    finally:
        episodes.close()
        store.trajectories.sync()
        store.scores.sync()
    done = JsonlFile(store.root / "episodes.jsonl", Episode).load()
    results = {"policy": spec.policy, "source": dict(spec.source), "success_mode": spec.success,
               **metrics(done, spec.repeats), "process": process_rates(done, tasks, store)}
    write_json_atomic(store.root / "results.json", results)
    return results


def process_rates(episodes: Sequence[Episode], tasks: Sequence[Task], store: RunStore) -> dict[str, Any]:
    """The on-policy process rates (:mod:`synthagent.core.process`) of the finished ``episodes``, from their
    trajectories in ``store``."""
    from synthagent.core.process import episode_process, rates

    by_id = {t.id: t for t in tasks}
    trajectories = {t.id: t for t in store.trajectories}
    records = [episode_process(by_id[e.task_id], trajectories[e.id], e.success, e.answer_ok) for e in episodes
               if e.success is not None and e.task_id in by_id and e.id in trajectories]
    return rates(records)


async def prepare_tasks(runtime: Any, store: RunStore, count: int, seed: int) -> tuple[list[Task], dict[str, Rubric]]:
    """Tasks and rubrics of a benchmark evaluation: generated and built once (kept in the eval directory,
    so a resumed evaluation plays the same tasks). Tasks without positive evidence are dropped."""
    from synthagent.core.protocols import GenerationContext
    from synthagent.core.stages.generate import missing_evidence

    if not len(store.tasks):
        ctx = GenerationContext(count=count, seed=seed, llm=runtime.components.llm, done_slots=frozenset())
        async for task in runtime.components.generator.generate(ctx):
            if missing_evidence(task) is None:
                store.tasks.append(task)
            if len(store.tasks) >= count:
                break
        store.tasks.sync()
    tasks = store.tasks.load()
    rubrics = {r.task_id: r for r in store.rubrics}
    for task in tasks:
        if task.id in rubrics:
            continue
        demos: list[Trajectory] = []
        for k in range(runtime.demonstrations):
            try:
                demos.append(await runtime.rollout(task, k, runtime.demonstrator))
            except Exception as exc:  # noqa: BLE001 - a failed demonstration just does not count
                demos.append(runtime.infra_failure(task.id, k, exc, getattr(runtime.demonstrator, "name", "")))
        rubric = await runtime.build_rubric(task, demos)
        store.rubrics.append(rubric)
        rubrics[task.id] = rubric
    store.rubrics.sync()
    return tasks, rubrics


def eval_id(spec: EvalSpec) -> str:
    """A stable id of what an eval directory evaluates (checked on ``--resume``)."""
    return stable_id("eval", spec.policy, dict(spec.policy_options), dict(spec.source), spec.repeats, spec.success)
