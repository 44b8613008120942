"""Greedy evaluation of a local model in a run's environment, behind its oracle ceiling, with process metrics.

:func:`evaluate_policy` plays one episode per task with the token harness of :mod:`.rollout` (the same one
training uses), after :mod:`.ceiling` has replayed the oracle through it under the same limits; it reports the
reward-independent success, the rubric's score, the failed criteria and the process metrics of :mod:`.process`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

from synthagent.plugins.training.trl.environment import Rollout, RunEnvironment
from synthagent.plugins.training.trl.rollout import TemplateRenderer, model_generate_fn, run_batch

__all__ = ["evaluate_policy"]

log = logging.getLogger("synthagent.train")


def evaluate_policy(model_dir: str, env: RunEnvironment, task_ids: Sequence[str], *, max_turn_tokens: int = 256,
                    budget: int = 2048, batch_size: int = 8, seed: int = 0, bf16_autocast: bool = False,
                    success_mode: str = "state", transcripts: int = 0, policy_budget: int = 0,
                    ceiling_min: float | None = None, teacher_forced: bool = False,
                    teacher_forced_tasks: int = 0) -> dict[str, Any]:
    """Greedy evaluation of a local model on ``task_ids``: the independent success rate
    (:func:`synthagent.core.evaluation.independent_success`: final state equals the gold state and the required
    answer values are reported, or a benchmark's own checker), the rubric's success and mean score, and the
    failed criteria (counted by kind, and listed per task).

    The model plays the agent in the same environment as in training (one episode per task).

    :param bf16_autocast: generate under bfloat16 autocast (see :func:`model_generate_fn`).
    :param success_mode: ``state`` or ``scorer`` (passed to ``independent_success``).
    :param transcripts: keep the full conversation of the first this-many episodes (``transcripts``).
    :param policy_budget: ids the policy may sample per episode (0 = only ``budget``).
    :param ceiling_min: before the model plays, the run's oracle trajectories are replayed through this very
        harness and these limits (:func:`~.ceiling.oracle_ceiling`); the result carries that ``ceiling``, and a
        ceiling below ``ceiling_min`` raises :class:`~.ceiling.CeilingError` (default
        :data:`~.ceiling.MIN_CEILING`; 0 reports the ceiling without refusing).
    :param teacher_forced: also measure teacher-forced next-action accuracy on the oracle's trajectories
        (:func:`~.process.next_action_accuracy`, result key ``teacher_forced``), on the first
        ``teacher_forced_tasks`` of ``task_ids`` (0 = all).

    The result's ``process`` holds the on-policy process rates (:func:`~.process.episode_process`), each
    task's record under ``per_task[...]["process"]``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from synthagent.core.evaluation import episode_of

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if torch.cuda.is_available():  # generation follows the model's device (model_generate_fn)
        model.to("cuda")
    eos_ids = [tokenizer.eos_token_id]
    config = GenerationConfig(do_sample=False, max_new_tokens=max_turn_tokens, eos_token_id=eos_ids,
                              pad_token_id=tokenizer.pad_token_id)
    from synthagent.plugins.training.trl.ceiling import MIN_CEILING, EpisodeLimits, oracle_ceiling, require_ceiling

    limits = EpisodeLimits(budget=budget, max_turns=env.max_turns, max_turn_tokens=max_turn_tokens,
                           policy_budget=policy_budget)
    ids = list(task_ids)
    ceiling = oracle_ceiling(env, tokenizer, ids, limits, mode=success_mode)
    log.info("ceiling: the oracle's replay solves %d/%d tasks under %s", ceiling["k"], ceiling["n"], limits)
    require_ceiling(ceiling, MIN_CEILING if ceiling_min is None else ceiling_min,
                    what=f"evaluation of {model_dir} on {env.root.name}")
    generate_fn = model_generate_fn(model, tokenizer, config, eos_ids, bf16_autocast=bf16_autocast)
    renderer = TemplateRenderer(tokenizer)
    results: list[Rollout] = []
    start = time.perf_counter()
    for lo in range(0, len(ids), batch_size):
        jobs = [(env.tasks[t], 0) for t in ids[lo:lo + batch_size]]
        rollouts, _, _ = asyncio.run(run_batch(env, jobs, generate_fn, renderer, budget=budget,
                                               policy_budget=policy_budget, max_turn_tokens=max_turn_tokens,
                                               eos_ids=eos_ids, seed=seed))
        results.extend(rollouts)
        log.info("evaluated %d/%d tasks in %.0f s", len(results), len(ids), time.perf_counter() - start)
    # the criteria each episode failed (none when it was not scored)
    failed = [[c for c in r.score.breakdown if not c.passed] if r.score is not None else [] for r in results]
    episodes = [episode_of(r.task, r.trajectory, r.score, success_mode) for r in results]
    finished = [e for e in episodes if e.success is not None]
    from synthagent.plugins.training.trl.process import episode_process, next_action_accuracy, rates

    process = [episode_process(r.task, r.trajectory, e.success, e.answer_ok) for r, e in zip(results, episodes,
                                                                                               strict=True)]
    forced: dict[str, Any] | None = None
    if teacher_forced:
        t0 = time.perf_counter()
        forced = next_action_accuracy(model, tokenizer, env, ids[:teacher_forced_tasks] if teacher_forced_tasks
                                      else ids, max_turn_tokens=max_turn_tokens,
                                      batch_size=batch_size, bf16_autocast=bf16_autocast, mode=success_mode)
        forced["seconds"] = round(time.perf_counter() - t0, 1)
    return {
        "process": rates([p for p, e in zip(process, episodes, strict=True) if e.success is not None]),
        "teacher_forced": forced,
        "ceiling": {k: v for k, v in ceiling.items() if k != "per_task"}
        | {"per_task": {t: r["success"] for t, r in ceiling["per_task"].items()}},
        "tasks": len(results),
        "independent_successes": sum(bool(e.success) for e in finished),
        "finished": len(finished),
        "independent_success_rate": round(sum(bool(e.success) for e in finished) / len(finished), 4)
        if finished else None,
        "success_rate": round(sum(r.success for r in results) / len(results), 4) if results else None,
        "score_mean": round(statistics.fmean(r.reward for r in results), 4) if results else None,
        "tool_calls_per_task": round(statistics.fmean(
            sum(len(m.tool_calls) for m in r.trajectory.messages) for r in results), 3) if results else None,
        "seconds": round(time.perf_counter() - start, 1),
        "failed_by_kind": dict(sorted(collections.Counter(c.kind for cs in failed for c in cs).items())),
        "failures": dict(sorted(collections.Counter(e.failure for e in finished if not e.success).items())),
        "per_task": {r.task.id: {"independent": e.success, "failure": e.failure, "reward": r.reward,
                                 "success": r.success, "termination": r.trajectory.termination,
                                 "turns": r.trajectory.turns, "failed": [c.criterion_id for c in cs],
                                 "process": pr}
                     for r, cs, e, pr in zip(results, failed, episodes, process, strict=True)},
        "transcripts": {r.task.id: [m.openai() for m in r.trajectory.messages] for r in results[:transcripts]},
    }
