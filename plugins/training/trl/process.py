"""Process metrics of a local policy: the on-policy rates (:mod:`synthagent.core.process`, re-exported here) and
the teacher-forced next-action accuracy, which needs the model itself.

* **Teacher-forced next action** (:func:`next_action_accuracy`): at every assistant turn of the oracle's own
  trajectory, the policy decodes greedily from the gold prefix (the same chat template and per-turn cap as its
  episodes); the turn is scored for the action type (``ask`` / ``call`` / ``answer``), the first tool, the exact
  arguments, and, at the turns where the oracle asked the user for a hidden fact, whether the policy asked too.
* **On-policy** (:func:`~synthagent.core.process.episode_process`): valid call syntax, every gold tool called, a
  question before the first write, exact-argument calls, answer values, full success.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from synthagent.core.models import Message
from synthagent.core.process import (
    ON_POLICY_METRICS,
    TEACHER_FORCED_METRICS,
    action_of,
    canon,
    episode_process,
    rates,
)

__all__ = ["action_of", "episode_process", "next_action_accuracy", "rates", "ON_POLICY_METRICS",
           "TEACHER_FORCED_METRICS"]


def next_action_accuracy(model: Any, tokenizer: Any, env: Any, task_ids: Sequence[str], *, max_turn_tokens: int,
                         batch_size: int = 8, bf16_autocast: bool = False, mode: str = "state") -> dict[str, Any]:
    """Teacher-forced next-action accuracy on the oracle trajectories of ``task_ids`` (module docstring).

    :returns: ``turns`` (per-turn records: task, turn index, gold and predicted action, the four booleans),
        ``rates`` (:func:`rates` over the turns), ``per_task`` (the share of a task's turns whose action type,
        tool and arguments all match) and ``tasks`` (how many had an oracle trajectory).
    """
    from transformers import GenerationConfig

    from synthagent.core.toolcalls import parse_assistant
    from synthagent.plugins.training.trl.ceiling import oracle_trajectories
    from synthagent.plugins.training.trl.rollout import TemplateRenderer, decode_turn, model_generate_fn

    renderer = TemplateRenderer(tokenizer)
    eos = [int(tokenizer.eos_token_id)]
    config = GenerationConfig(do_sample=False, max_new_tokens=max_turn_tokens, eos_token_id=eos,
                              pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0])
    generate = model_generate_fn(model, tokenizer, config, eos, bf16_autocast=bf16_autocast)
    gold = oracle_trajectories(env, task_ids, mode)
    points: list[tuple[str, int, list[int], Message]] = []
    for tid in task_ids:
        traj = gold.get(tid)
        if traj is None:
            continue
        tools = env.tools_schema(env.tasks[tid])
        msgs = [m.openai() for m in traj.messages]
        turn = 0
        for i, m in enumerate(traj.messages):
            if m.role == "assistant" and i > 0:
                points.append((tid, turn, renderer.prompt_ids(msgs[:i], tools), m))
                turn += 1
    records: list[dict[str, Any]] = []
    for lo in range(0, len(points), batch_size):
        chunk = points[lo:lo + batch_size]
        outs = generate([p[2] for p in chunk], [max_turn_tokens] * len(chunk))
        for (tid, turn, _, want), ids in zip(chunk, outs, strict=True):
            got = parse_assistant(decode_turn(tokenizer, ids), id_prefix="call_tf")
            gk, gt, ga = action_of(want)
            pk, pt, pa = action_of(got)
            records.append({"task": tid, "turn": turn, "gold": [gk, gt], "predicted": [pk, pt],
                            "action_type": pk == gk,
                            "tool": (pt == gt) if gk == "call" else None,
                            "arguments": (pt == gt and canon(pa) == canon(ga)) if gk == "call" else None,
                            "asks_when_needed": (pk == "ask") if gk == "ask" else None})
    per_task: dict[str, float] = {}
    for tid in {r["task"] for r in records}:
        mine = [r for r in records if r["task"] == tid]
        per_task[tid] = round(sum(bool(r["action_type"] and r["arguments"] is not False) for r in mine) / len(mine), 4)
    return {"tasks": len(gold), "turns": records, "rates": rates(records, TEACHER_FORCED_METRICS),
            "per_task": dict(sorted(per_task.items()))}
