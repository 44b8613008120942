"""Process metrics of a policy: what it does at each step, beside whether the whole task succeeded.

Full task success is rare for a small model and a low-powered outcome on a few dozen tasks; these metrics count
many decisions per task and show learning long before success does. None of them is the rubric reward GRPO
trains on.

* **Teacher-forced next action** (:func:`next_action_accuracy`): at every assistant turn of the oracle's own
  trajectory, the policy decodes greedily from the gold prefix (the same chat template and per-turn cap as its
  episodes); the turn is scored for the action type (``ask`` / ``call`` / ``answer``), the first tool, the exact
  arguments, and, at the turns where the oracle asked the user for a hidden fact, whether the policy asked too.
* **On-policy** (:func:`episode_process`): from the policy's own episodes: valid call syntax, every gold tool
  called, a question to the user before the first write (tasks with hidden facts), the share of gold calls made
  with exactly the gold arguments, the answer values present, and full independent success.

:func:`rates` pools per-task records into rates with 95% Wilson intervals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.models import Message, Task, Trajectory

__all__ = ["action_of", "episode_process", "next_action_accuracy", "rates", "ON_POLICY_METRICS",
           "TEACHER_FORCED_METRICS"]

#: Per-episode booleans of :func:`episode_process` (``exact_args`` is a count pair, pooled over gold calls).
ON_POLICY_METRICS = ("valid_calls", "gold_tools_called", "asked_before_first_write", "exact_args", "answer_values",
                     "success")
#: Per-turn booleans of :func:`next_action_accuracy`.
TEACHER_FORCED_METRICS = ("action_type", "tool", "arguments", "asks_when_needed")


def action_of(message: Message) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(kind, first tool, its arguments)`` of an assistant message: ``call`` when it calls a tool, ``ask`` when
    its text asks something (a question mark), else ``answer``."""
    if message.tool_calls:
        call = message.tool_calls[0]
        return "call", call.name, dict(call.arguments)
    return ("ask" if "?" in (message.content or "") else "answer"), None, None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def episode_process(task: Task, trajectory: Trajectory, success: bool | None,
                    answer_ok: bool | None) -> dict[str, Any]:
    """The on-policy process record of one episode (module docstring); ``None`` where a metric does not apply
    (no tool call made, no hidden fact to ask for, no gold call)."""
    calls = [c for m in trajectory.messages if m.role == "assistant" for c in m.tool_calls]
    attempted = len(calls) + int(trajectory.malformed_tool_calls)
    gold = [s for s in task.workflow if s.tool]
    write_tools = {s.tool for s in gold if s.writes}
    asked = None
    if task.user_context:
        asked = False
        for m in trajectory.messages:
            if m.role != "assistant":
                continue
            if any(c.name in write_tools for c in m.tool_calls):
                break
            if action_of(m)[0] == "ask":
                asked = True
                break
    made = {(c.name, _canon(c.arguments)) for c in calls}
    exact = sum((s.tool, _canon(s.arguments)) in made for s in gold)
    called = {c.name for c in calls}
    return {"valid_calls": (not trajectory.malformed_tool_calls and all(c.error is None for c in calls))
            if attempted else None,
            "gold_tools_called": all(s.tool in called for s in gold) if gold else None,
            "asked_before_first_write": asked,
            "exact_args": [exact, len(gold)],
            "answer_values": answer_ok,
            "success": success}


def rates(records: Sequence[Mapping[str, Any]], names: Sequence[str] = ON_POLICY_METRICS) -> dict[str, Any]:
    """Pool per-task (or per-turn) process records into ``{metric: {k, n, rate, ci95}}`` (95% Wilson). A record's
    ``None`` is left out of that metric's ``n``; a ``[k, n]`` pair (``exact_args``) adds its counts (an interval
    over calls, which are clustered in tasks: read it as descriptive)."""
    from synthagent.core.evaluation import wilson

    out: dict[str, Any] = {}
    for name in names:
        k = n = 0
        for rec in records:
            value = rec.get(name)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                k += int(value[0])
                n += int(value[1])
            else:
                k += int(bool(value))
                n += 1
        lo, hi = wilson(k, n)
        out[name] = {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}
    return out


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
                            "arguments": (pt == gt and _canon(pa) == _canon(ga)) if gk == "call" else None,
                            "asks_when_needed": (pk == "ask") if gk == "ask" else None})
    per_task: dict[str, float] = {}
    for tid in {r["task"] for r in records}:
        mine = [r for r in records if r["task"] == tid]
        per_task[tid] = round(sum(bool(r["action_type"] and r["arguments"] is not False) for r in mine) / len(mine), 4)
    return {"tasks": len(gold), "turns": records, "rates": rates(records, TEACHER_FORCED_METRICS),
            "per_task": dict(sorted(per_task.items()))}
