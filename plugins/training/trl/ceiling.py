"""The ceiling of a learning evaluation: the oracle's own episodes replayed through the identical harness.

A rate means nothing when a perfect policy could not reach it under the same limits. Before a policy is
scored, :func:`oracle_ceiling` replays, for every evaluated task, the assistant turns of the run's own oracle
(teacher) trajectory through exactly the harness the policy gets: :func:`~.rollout.run_batch` with a
:class:`~.rollout.TokenPolicy` (the same chat template, token budget, per-turn cap and turn limit; the replayed
turn is tokenized, cut at the same limits and parsed back by the same parser), the same simulated user and
tools, and the same success check (:func:`synthagent.core.evaluation.independent_success`). The share of tasks
the replay solves is the ceiling; :func:`require_ceiling` refuses (:class:`CeilingError`) a ceiling below the
minimum (95% by default), so a benchmark never reports rates an oracle could not have reached.

:func:`derive_limits` goes the other way: it replays the oracle without limits, measures each episode's
completion tokens (policy and environment separately), agent turns and longest turn, and returns the p99 of
each plus a margin as :class:`EpisodeLimits`, the budgets evaluation and GRPO then use.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from synthagent.core.errors import SynthError
from synthagent.core.models import Message, Trajectory
from synthagent.plugins.training.trl.environment import RunEnvironment
from synthagent.plugins.training.trl.rollout import TemplateRenderer, run_batch

__all__ = ["EpisodeLimits", "CeilingError", "oracle_turns", "oracle_trajectories", "replay_oracle", "oracle_ceiling", "derive_limits",
           "require_ceiling", "MIN_CEILING"]

#: The least share of tasks the oracle's replay must solve before a rate under the same limits is reported.
MIN_CEILING = 0.95

#: Limits large enough not to bind (used to measure the oracle's own needs).
_UNLIMITED = 1 << 30


class CeilingError(SynthError):
    """The oracle's own episodes, replayed under the evaluation's limits, solve too few tasks."""


@attrs.frozen
class EpisodeLimits:
    """The limits of one episode in the token harness.

    :param budget: completion ids per episode, policy and environment together.
    :param policy_budget: ids the policy may sample per episode (0 = only ``budget``).
    :param max_turns: agent turns per episode.
    :param max_turn_tokens: ids one policy turn may sample.
    :param source: how the limits were chosen (``given``, or what they were derived from).
    """

    budget: int
    max_turns: int
    max_turn_tokens: int
    policy_budget: int = 0
    source: str = "given"

    def as_dict(self) -> dict[str, Any]:
        """The limits as a JSON-ready dict."""
        return attrs.asdict(self)


def oracle_turns(env: RunEnvironment, task_ids: Sequence[str], mode: str = "state") -> dict[str, list[Message]]:
    """The assistant messages of each task's oracle trajectory (:func:`oracle_trajectories`)."""
    return {tid: [m for m in traj.messages if m.role == "assistant"]
            for tid, traj in oracle_trajectories(env, task_ids, mode).items()}


def oracle_trajectories(env: RunEnvironment, task_ids: Sequence[str], mode: str = "state") -> dict[str, Trajectory]:
    """Each task's oracle trajectory in the run (``trajectories.jsonl``).

    Per task, the lowest-sample trajectory that succeeded (independent success in ``mode``; for ``scorer`` the
    run's stored score) is taken; a task with none gets no entry (its replay then fails, lowering the ceiling).
    """
    from synthagent.core.evaluation import independent_success
    from synthagent.core.store import RunStore

    store = RunStore.open(env.root, readonly=True)
    try:
        trajectories: list[Trajectory] = store.trajectories.load()
        scores = {s.trajectory_id: s for s in store.scores.load()} if mode == "scorer" else {}
    finally:
        store.close()
    wanted = set(task_ids)
    out: dict[str, Trajectory] = {}
    for traj in sorted(trajectories, key=lambda t: (t.task_id, t.sample)):
        if traj.task_id not in wanted or traj.task_id in out or traj.task_id not in env.tasks:
            continue
        ok, _, _, _ = independent_success(env.tasks[traj.task_id], traj, scores.get(traj.id), mode)
        if ok:
            out[traj.task_id] = traj
    return out


def _turn_ids(renderer: TemplateRenderer, message: Message) -> list[int]:
    """The ids a policy would have sampled to write ``message``: what the chat template adds for it after the
    assistant generation prompt, through the end-of-turn token (text the template puts after it is the
    environment's, as in :meth:`~.rollout.TemplateRenderer.suffix_ids`)."""
    opening = [{"role": "user", "content": "x"}]
    before = renderer.render(opening, None, add_generation_prompt=True)
    after = renderer.render([*opening, message.openai()], None, add_generation_prompt=False)
    if not after.startswith(before):
        raise CeilingError("the chat template renders the opening differently once an assistant turn follows; "
                           "the oracle cannot be replayed token-in/token-out")
    text = after[len(before):]
    eot = renderer.tokenizer.eos_token or ""
    cut = text.rfind(eot) if eot else -1
    return renderer.encode(text[: cut + len(eot)] if cut >= 0 else text)


def replay_oracle(env: RunEnvironment, tokenizer: Any, task_ids: Sequence[str], limits: EpisodeLimits, *,
                  mode: str = "state", seed: int = 0,
                  turns: Mapping[str, list[Message]] | None = None) -> dict[str, dict[str, Any]]:
    """Replay each task's oracle turns through the token harness under ``limits``; per task: ``success``
    (``None`` for an infrastructure failure), ``failure``, ``termination``, ``turns`` (agent turns),
    ``policy_tokens``, ``env_tokens``, ``max_turn_tokens`` (the longest policy turn in ids), ``cut``
    (whether a limit ended the episode early), ``prompt_tokens``, and the forward tokens a model would process
    playing the same turns without (``forward_no_reuse``) and with (``forward_reuse``) a KV cache kept across
    turns."""
    from synthagent.core.evaluation import episode_of

    renderer = TemplateRenderer(tokenizer)
    gold = dict(turns) if turns is not None else oracle_turns(env, task_ids, mode)
    eos = [int(tokenizer.eos_token_id)]
    results: dict[str, dict[str, Any]] = {}
    saved_turns = env.max_turns
    env.max_turns = limits.max_turns
    try:
        for tid in task_ids:
            script = [_turn_ids(renderer, m) for m in gold.get(tid, [])]
            state = {"i": 0}

            def replay(batch: list[list[int]], max_new: list[int], script: list[list[int]] = script,
                       state: dict[str, int] = state) -> list[list[int]]:
                outs = []
                for limit in max_new:
                    ids = script[state["i"]] if state["i"] < len(script) else renderer.encode("")
                    state["i"] += 1
                    outs.append(list(ids)[:limit])
                return outs

            (rollout,), (tokens,), _ = asyncio.run(run_batch(
                env, [(env.tasks[tid], 0)], replay, renderer, budget=limits.budget,
                policy_budget=limits.policy_budget, max_turn_tokens=limits.max_turn_tokens, eos_ids=eos, seed=seed))
            episode = episode_of(rollout.task, rollout.trajectory, rollout.score, mode)
            policy_spans = [e - s for s, e, src in tokens.turns if src == "policy"]
            # forward tokens: re-prefilling the whole context at every policy turn (HF generate without a cache
            # carried across turns) against each token passing through the model once (a cache kept per episode)
            prompt = len(tokens.prompt_ids)
            no_reuse = sum(prompt + e for s, e, src in tokens.turns if src == "policy")
            results[tid] = {"success": episode.success,
                            "failure": episode.failure or ("" if tid in gold else "no_oracle_trajectory"),
                            "termination": rollout.trajectory.termination, "turns": rollout.trajectory.turns,
                            "policy_tokens": sum(tokens.mask), "env_tokens": len(tokens.mask) - sum(tokens.mask),
                            "max_turn_tokens": max(policy_spans, default=0), "prompt_tokens": prompt,
                            "forward_no_reuse": no_reuse, "forward_reuse": prompt + len(tokens.completion_ids),
                            "cut": state["i"] < len(script) or rollout.trajectory.termination == "max_turns"}
    finally:
        env.max_turns = saved_turns
    return results


def _p99(values: Sequence[int]) -> int:
    """Nearest-rank 99th percentile (the maximum below 100 values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else 0


def derive_limits(env: RunEnvironment, tokenizer: Any, task_ids: Sequence[str], *, margin: float = 0.25,
                  mode: str = "state", round_to: int = 16) -> EpisodeLimits:
    """Limits from the data: the oracle replayed without limits; each limit is the p99 over episodes (policy
    tokens, environment tokens, agent turns, longest turn) times ``1 + margin``, token limits rounded up to a
    multiple of ``round_to``, turns plus at least 2. Raises :class:`CeilingError` when no oracle episode
    succeeds at all (nothing to derive from)."""
    free = EpisodeLimits(_UNLIMITED, 10_000, _UNLIMITED)
    runs = [r for r in replay_oracle(env, tokenizer, task_ids, free, mode=mode).values() if r["success"]]
    if not runs:
        raise CeilingError(f"no oracle trajectory of run {str(env.root)!r} succeeds on the {len(task_ids)} tasks "
                           "even without limits: there is nothing to derive episode limits from")

    def up(value: float) -> int:
        return int(math.ceil(value * (1 + margin) / round_to) * round_to)

    policy = up(_p99([r["policy_tokens"] for r in runs]))
    env_tokens = up(_p99([r["env_tokens"] for r in runs]))
    turns = _p99([r["turns"] for r in runs])
    return EpisodeLimits(budget=policy + env_tokens, policy_budget=policy,
                         max_turns=max(turns + 2, math.ceil(turns * (1 + margin))),
                         max_turn_tokens=up(_p99([r["max_turn_tokens"] for r in runs])),
                         source=f"derived: p99 of {len(runs)} oracle episodes + {round(100 * margin)}% "
                                f"({len(task_ids) - len(runs)} of {len(task_ids)} without a successful oracle)")


def oracle_ceiling(env: RunEnvironment, tokenizer: Any, task_ids: Sequence[str], limits: EpisodeLimits, *,
                   mode: str = "state") -> dict[str, Any]:
    """The share of ``task_ids`` the oracle's replay solves under ``limits``: ``k``, ``n``, ``rate``, ``ci95``
    (Wilson), the limits, failures by kind and the per-task replay results."""
    from synthagent.core.evaluation import wilson

    per_task = replay_oracle(env, tokenizer, task_ids, limits, mode=mode)
    k = sum(bool(r["success"]) for r in per_task.values())
    n = len(per_task)
    lo, hi = wilson(k, n)
    failures = collections.Counter(r["failure"] for r in per_task.values() if not r["success"])
    return {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)],
            "limits": limits.as_dict(), "cut": sum(bool(r["cut"]) for r in per_task.values()),
            "failures": dict(sorted(failures.items())), "per_task": per_task}


def require_ceiling(ceiling: Mapping[str, Any], minimum: float = MIN_CEILING, *, what: str = "evaluation") -> None:
    """Raise :class:`CeilingError` when ``ceiling['rate']`` is below ``minimum`` (saying by how much, which limits
    cut how many oracle episodes, and what to change)."""
    rate = ceiling.get("rate")
    if rate is not None and rate >= minimum:
        return
    lim = ceiling.get("limits", {})
    raise CeilingError(
        f"{what}: the oracle's own episodes solve {ceiling.get('k')}/{ceiling.get('n')} tasks under these limits "
        f"(budget {lim.get('budget')}, policy budget {lim.get('policy_budget')}, max_turns {lim.get('max_turns')}, "
        f"max_turn_tokens {lim.get('max_turn_tokens')}; {ceiling.get('cut')} episodes cut by a limit; failures "
        f"{ceiling.get('failures')}): the ceiling {rate} is below {minimum}, so no rate measured under them could "
        "show what a policy learned. Raise the limits, or derive them from the data (budget=auto)")
