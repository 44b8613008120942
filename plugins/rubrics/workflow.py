"""The ``workflow`` and ``verified`` rubric builders (deterministic, offline).

The rubric comes from the task's gold workflow:

* **subgoals**: each workflow step as a successful tool call with the gold arguments; the answer values in
  the agent's final message (so a read-only task needs positive evidence and doing nothing never passes);
* **required interactions**: asking the user for each hidden fact (a question about that fact alone);
* **penalties**: asking again for a fact the instruction gave; asking for what the task does not need or
  too often (the user-query term, :func:`needless_question_criterion`);
* **forbidden behaviours** (gates, reward 0): a successful write that is not in the workflow; calling a tool
  the task does not offer;
* **checks**: the final database state equals the gold state (canonical digest).

The ``rubric`` scorer (:mod:`synthagent.plugins.rubrics.scorer`) scores it; :data:`DEFAULT_WEIGHTS` are
the weights of its default reward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Criterion, Rubric, Task, Trajectory, stable_id
from synthagent.plugins.common.evidence import report_values

__all__ = ["WorkflowRubricBuilder", "VerifiedRubricBuilder", "DEFAULT_WEIGHTS", "needless_question_criterion"]

#: Weights of the default reward: any single failure costs at least half of it.
DEFAULT_WEIGHTS = {"subgoal": 0.25, "interaction": 0.25, "success": 0.5}


def needless_question_criterion(task: Task) -> Criterion:
    """The user-query penalty (SYNTHAGENT): ask only for the hidden facts the task needs, one fact a question,
    plus confirmations before irreversible writes, with a slack of one question
    (:func:`~synthagent.plugins.common.evidence.needless_questions`)."""
    deletes = sum(1 for s in task.workflow if s.writes and (spec := task.tool(s.tool or "")) is not None
                  and spec.effect is not None and spec.effect.kind == "delete")
    return Criterion(id="no-needless-question", kind="penalty",
                     description="ask only for what the task needs, one fact at a time, and not too often",
                     check="no_needless_question",
                     spec={"needed": [f.name for f in task.user_context], "confirmations": deletes, "slack": 1})


class WorkflowRubricBuilder:
    """Builds the rubric from the workflow (see the module docstring).

    :param weights: overrides of ``subgoal``, ``interaction`` and ``success`` weights.
    :param judge: questions for an LLM judge (``check: judge`` subgoals, scored by the ``judged`` scorer).
    """

    name = "workflow"

    def __init__(self, weights: Mapping[str, float] | None = None, judge: Sequence[str] = ()) -> None:
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown weight(s) {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.judge = tuple(str(q) for q in judge)

    def build(self, task: Task, demonstrations: Sequence[Trajectory]) -> Rubric:
        """The rubric of ``task`` (demonstrations are not needed by this deterministic builder)."""
        criteria: list[Criterion] = []
        for step in task.workflow:
            if step.tool:
                criteria.append(Criterion(
                    id=f"step-{step.index}", kind="subgoal", description=step.description, check="tool_call",
                    spec={"tool": step.tool, "arguments": step.arguments, "writes": step.writes},
                ))
        if report_values(task):
            criteria.append(Criterion(
                id="answer", kind="subgoal", description="report the result to the user",
                check="answer_contains", spec={"values": list(report_values(task))},
            ))
        for fact in task.user_context:
            criteria.append(Criterion(
                id=f"ask-{fact.name}", kind="interaction", description=f"ask the user for {fact.description}",
                check="asked_for_fact", spec={"fact": fact.name, "keywords": list(fact.keywords)},
            ))
        if task.visible_facts:
            criteria.append(Criterion(
                id="no-redundant-question", kind="penalty", description="do not ask for what the user already said",
                check="no_redundant_question", spec={"facts": [f.name for f in task.visible_facts]},
            ))
        criteria.append(needless_question_criterion(task))
        gold_writes = [{"tool": s.tool, "arguments": s.arguments} for s in task.workflow if s.writes]
        criteria.append(Criterion(
            id="no-unexpected-write", kind="forbidden", description="no write outside the workflow",
            check="unexpected_write", spec={"gold_writes": gold_writes},
        ))
        criteria.append(Criterion(
            id="no-foreign-tool", kind="forbidden", description="no tool outside the task",
            check="tool_outside_task", spec={"tools": sorted(t.name for t in task.tools)},
        ))
        for i, question in enumerate(self.judge):  # language criteria for the ``judged`` scorer
            criteria.append(Criterion(id=f"judge-{i}", kind="subgoal", description=question, check="judge",
                                      spec={"question": question}))
        if task.gold_state is not None:
            criteria.append(Criterion(
                id="final-state", kind="check", description="the final database equals the gold state",
                check="final_state", spec={"digest": task.gold_state.digest},
            ))
        rubric_id = stable_id("rubric", task.id, self.name, [c.id for c in criteria], self.weights)
        return Rubric(id=rubric_id, task_id=task.id, builder=self.name, criteria=criteria, weights=self.weights)


class VerifiedRubricBuilder(WorkflowRubricBuilder):
    """AgentScaler's three-stage filter on top of the workflow rubric: **validity** (every call well-formed
    and executed), **state alignment** (the final database equals the gold state) and, with ``exact_writes``,
    the exact write-call sequence. A read-only task keeps its answer subgoal, so doing nothing never passes.

    :param exact_writes: also require the successful writes to match the gold writes in order.
    """

    name = "verified"

    def __init__(self, exact_writes: bool = False, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(weights)
        self.exact_writes = bool(exact_writes)

    def build(self, task: Task, demonstrations: Sequence[Trajectory]) -> Rubric:
        """The workflow rubric plus the verification checks."""
        base = super().build(task, demonstrations)
        extra = [Criterion(id="valid-calls", kind="check", description="every call well-formed and executable",
                           check="valid_calls")]
        if self.exact_writes:
            extra.append(Criterion(id="write-sequence", kind="check", description="writes match the gold sequence",
                                   check="write_sequence", spec={"gold_writes": [
                                       {"tool": s.tool, "arguments": s.arguments} for s in task.workflow if s.writes]}))
        criteria = [*base.criteria, *extra]
        rubric_id = stable_id("rubric", task.id, self.name, [c.id for c in criteria], self.weights)
        return Rubric(id=rubric_id, task_id=task.id, builder=self.name, criteria=criteria, weights=self.weights)


@hookimpl
def synth_register_rubric_builders(register: Any) -> None:
    """Register the ``workflow`` and ``verified`` rubric builders."""
    register("workflow", WorkflowRubricBuilder, description="subgoals, interactions, gates and state check from the workflow")
    register("verified", VerifiedRubricBuilder,
             description="workflow + AgentScaler verification: validity, state alignment, optional exact writes")
