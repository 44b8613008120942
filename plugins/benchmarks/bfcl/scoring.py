"""BFCL's own multi-turn checker as a synthagent scorer, and the rubric it is scored against.

:class:`BfclScorer` (``bfcl``) splits the trajectory into the user's turns (turn k starts at the k-th user
message), takes each assistant message's tool calls as one step, renders them as call strings
(:func:`~synthagent.plugins.benchmarks.bfcl.data.render_call`: validated names, literal arguments) and calls
``bfcl_eval``'s ``multi_turn_checker``, which replays them and the ground truth on fresh API instances and
compares state and responses after every turn. The score is 1 when BFCL says valid, else 0 with BFCL's error.

:class:`BfclRubric` (``bfcl``) records the ground truth as the rubric's one check; the scorer does not need
anything else from it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from synthagent.core.models import Criterion, CriterionResult, Message, Rubric, Score, Task, Trajectory, stable_id
from synthagent.plugins.benchmarks.bfcl import data
from synthagent.plugins.benchmarks.bfcl.environment import task_entry

__all__ = ["BfclRubric", "BfclScorer", "turn_calls", "check"]

CHECKER = "bfcl_eval.multi_turn_checker"


def turn_calls(messages: Sequence[Message]) -> list[list[list[str]]]:
    """The calls per turn and per step, as BFCL's checker takes them (``[turn][step][call string]``).

    A step with a call that cannot be rendered safely is left out whole, as BFCL leaves out a step it cannot
    decode; calls the policy emitted malformed are not calls."""
    turns: list[list[list[str]]] = []
    for message in messages:
        if message.role == "user":
            turns.append([])
        elif message.role == "assistant" and message.tool_calls and turns:
            step = [data.render_call(c.name, c.arguments) if c.error is None else None for c in message.tool_calls]
            if step and all(s is not None for s in step):
                turns[-1].append([s for s in step if s is not None])
    return turns


def check(row: dict[str, Any], decoded: list[list[list[str]]]) -> dict[str, Any]:
    """Run BFCL's ``multi_turn_checker`` on ``decoded`` for the entry ``row``; BFCL's result dict."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_checker as checker_module
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    ground_truth = row["ground_truth"]
    if len(decoded) < len(ground_truth):
        return {"valid": False, "error_type": "multi_turn:force_terminated",
                "error_message": f"the episode reached {len(decoded)} of {len(ground_truth)} turns"}
    # BFCL caches the instances it builds in its module's globals under the model name and entry id: a
    # fresh name per check keeps checks independent; the names are removed afterwards.
    model_name = f"synth_{uuid.uuid4().hex}"
    try:
        return dict(checker_module.multi_turn_checker(decoded[: len(ground_truth)], ground_truth, row,
                                                      f"multi_turn_{data.category_of(row['id'])}", model_name))
    finally:
        cache = vars(multi_turn_utils)
        for key in [k for k in cache if k.startswith(re.sub(r"[-./:]", "_", model_name))]:
            del cache[key]


class BfclRubric:
    """A rubric whose one criterion is BFCL's checker; it records the entry's ground truth."""

    name = "bfcl"

    def build(self, task: Task, demonstrations: Sequence[Trajectory]) -> Rubric:
        """The rubric of ``task`` (no demonstrations needed)."""
        row = task_entry(task)
        criterion = Criterion(id="bfcl_checker", kind="check", check="bfcl_multi_turn_checker",
                              description="BFCL's multi-turn checker: state and responses match the ground truth "
                                          "after every turn",
                              spec={"entry": row["id"], "ground_truth": row["ground_truth"]})
        return Rubric(id=stable_id("rubric", task.id, "bfcl"), task_id=task.id, builder="bfcl",
                      criteria=(criterion,), weights={"check": 1.0}, provenance={"bfcl_entry": row["id"]})


class BfclScorer:
    """Scores a trajectory with BFCL's own multi-turn checker (1 valid, 0 not)."""

    name = "bfcl"

    def __init__(self) -> None:
        data.require_bfcl()

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """BFCL's verdict on the trajectory's calls, turn by turn."""
        sid = stable_id("score", trajectory.id, rubric.id, "bfcl")
        if trajectory.error is not None or trajectory.termination == "infra_error":
            return Score(id=sid, trajectory_id=trajectory.id, task_id=task.id, rubric_id=rubric.id, scorer="bfcl",
                         status="infra_error", total=None, success=False, breakdown=())
        row = task_entry(task)
        try:
            result = check(row, turn_calls(trajectory.messages))
        except Exception as exc:  # noqa: BLE001 - a checker failure is a judge error, never a 0
            return Score(id=sid, trajectory_id=trajectory.id, task_id=task.id, rubric_id=rubric.id, scorer="bfcl",
                         status="judge_error", total=None, success=False,
                         breakdown=(CriterionResult("bfcl_checker", "check", False, 0.0,
                                                    f"{type(exc).__name__}: {exc}", CHECKER),))
        valid = bool(result.get("valid"))
        evidence = "valid" if valid else f"{result.get('error_type', '')}: {result.get('error_message', '')}"
        total = 1.0 if valid else 0.0
        return Score(id=sid, trajectory_id=trajectory.id, task_id=task.id, rubric_id=rubric.id, scorer="bfcl",
                     status="ok", total=total, success=valid,
                     breakdown=(CriterionResult("bfcl_checker", "check", valid, total, evidence, CHECKER),),
                     components={"bfcl": total})
