"""On-policy process metrics of an episode: what the policy did at each step, beside whether the task succeeded.

Full task success is rare for a small model and a low-powered outcome on a few dozen tasks; these count many
decisions a task and show learning long before success does. None of them is a training reward:

valid call syntax, every gold tool called, a question to the user before the first write (tasks with hidden
facts), the share of gold calls made with exactly the gold arguments, the answer values present, and full
independent success (:func:`episode_process`); :func:`rates` pools records into rates with 95% Wilson
intervals. ``synth eval`` reports them for any policy (``results.json`` key ``process``); the teacher-forced
next-action accuracy of a local model is in ``synthagent.plugins.training.trl.process``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.models import Message, Task, Trajectory

__all__ = ["action_of", "canon", "episode_process", "rates", "ON_POLICY_METRICS", "TEACHER_FORCED_METRICS"]

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


def canon(value: Any) -> str:
    """A canonical JSON text of ``value`` (keys sorted), for exact argument comparison."""
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
    made = {(c.name, canon(c.arguments)) for c in calls}
    exact = sum((s.tool, canon(s.arguments)) in made for s in gold)
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


