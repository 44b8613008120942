"""The ``workflow`` rubric builder and the ``rubric`` reward scorer (deterministic, offline).

The rubric comes from the task's gold workflow:

* **subgoals**: each workflow step as a successful tool call with the gold arguments; the answer values in
  the agent's final message (so a read-only task needs positive evidence and doing nothing never passes);
* **required interactions**: asking the user for each hidden fact;
* **forbidden behaviours** (gates, reward 0): a successful write that is not in the workflow; calling a tool
  the task does not offer;
* **checks**: the final database state equals the gold state (canonical digest).

The score is ``gate * (w_subgoal * subgoal_fraction + w_interaction * interaction_fraction
+ w_success * success) / sum(w)``, where ``success`` means every subgoal, interaction and check passed.
Defaults ``0.25 / 0.25 / 0.5`` make any single failure cost at least half the reward.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import (
    Criterion,
    CriterionResult,
    Message,
    Rubric,
    Score,
    Task,
    ToolCall,
    Trajectory,
    stable_id,
)
from synthagent.plugins.rule_user import asked_facts

__all__ = ["WorkflowRubricBuilder", "VerifiedRubricBuilder", "RubricScorer", "combine", "DEFAULT_WEIGHTS",
           "executed_calls", "values_match", "report_values", "mentions_value"]

DEFAULT_WEIGHTS = {"subgoal": 0.25, "interaction": 0.25, "success": 0.5}


class _NoTool:
    writes = False


_NO_TOOL = _NoTool()


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 6)
    if isinstance(value, str):
        return " ".join(value.strip().lower().split())
    if isinstance(value, (list, tuple)):  # nested JSON values compare element by element
        return [_norm(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _norm(v) for k, v in value.items()}
    return value


def values_match(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """True when every expected argument is present in ``actual`` with an equal (normalized) value."""
    return all(k in actual and _norm(actual[k]) == _norm(v) for k, v in expected.items())


def executed_calls(messages: Sequence[Message]) -> list[tuple[ToolCall, bool]]:
    """Every tool call of the trajectory with whether its observation was a success (no ``error``)."""
    results: dict[str, bool] = {}
    for m in messages:
        if m.role == "tool" and m.tool_call_id is not None:
            ok = True
            try:
                content = json.loads(m.content or "null")
                ok = not (isinstance(content, Mapping) and "error" in content)
            except ValueError:
                ok = True
            results[m.tool_call_id] = ok
    return [(c, results.get(c.id, False)) for m in messages if m.role == "assistant" for c in m.tool_calls]


def report_values(task: Task) -> tuple[Any, ...]:
    """What the final answer must report: the task's answer values, or for a task without any, the keys of
    the rows its workflow changes (the confirmation numbers of what was done)."""
    if task.answer:
        return tuple(task.answer)
    if task.gold_state is None:
        return ()
    return tuple(key for table in sorted(task.gold_state.changes) for key in sorted(task.gold_state.changes[table]))


def mentions_value(text: str, value: Any) -> bool:
    """Whether ``text`` mentions ``value`` as a whole token (numbers in their usual renderings, text
    case-insensitively): ``T0058`` is not mentioned by ``T00581`` or ``T0058-x``."""
    if isinstance(value, bool):
        forms = {str(value)}
    elif isinstance(value, float):
        forms = {str(value), f"{value:.2f}", f"{value:,.2f}"} | ({str(int(value))} if value.is_integer() else set())
    else:
        forms = {str(value)}
    return any(re.search(r"(?<![\w-])" + re.escape(f.lower()) + r"(?![\w-]|\.\d)", text.lower()) for f in forms if f)


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


@functools.lru_cache(maxsize=64)
def _default_reward(weights: tuple[tuple[str, float], ...]) -> Any:
    from synthagent.plugins.rewards.compose import Reward, default_reward

    return Reward(default_reward(dict(weights)))


def combine(results: Sequence[CriterionResult], weights: Mapping[str, float],
            reward: Any = None, checks: Mapping[str, str] | None = None) -> tuple[float, bool, dict[str, float]]:
    """Total, success and components of criterion results.

    The total is the ``reward`` composition (:mod:`synthagent.plugins.rewards.compose`), by default a gate on
    the forbidden criteria over the weighted ``subgoal`` and ``interaction`` fractions and ``success`` (every
    subgoal, interaction and check passed). ``success`` also requires the gate.
    """
    from synthagent.plugins.rewards.compose import Reward, evaluate

    if isinstance(reward, Reward):
        rw = reward
    elif reward is None:  # validated once per weighting, not once per score
        rw = _default_reward(tuple(sorted({**DEFAULT_WEIGHTS, **weights}.items())))
    else:
        rw = Reward(reward)
    components = {
        "subgoal": evaluate("kind:subgoal", results),
        "interaction": evaluate({"min": ["kind:interaction", "kind:penalty"]}, results),
        "success": float(all(r.passed for r in results if r.kind in ("subgoal", "interaction", "penalty", "check"))),
        "gate": float(all(r.passed for r in results if r.kind == "forbidden")),
    }
    total = rw(results, checks)
    return total, bool(components["success"] and components["gate"]), components


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


class RubricScorer:
    """Scores a trajectory against a rubric programmatically (no judge).

    :param reward: a reward composition (:mod:`synthagent.plugins.rewards.compose`), e.g. from
        ``[plugins.rubric.scorer.reward]``; by default the gate over the weighted sum of the module docstring.
    """

    name = "rubric"

    def __init__(self, reward: Any = None) -> None:
        from synthagent.plugins.rewards.compose import compile_reward

        self.reward = compile_reward(reward) if reward is not None else None

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """Evaluate every criterion and combine them (module docstring)."""
        score_id = stable_id("score", trajectory.id, rubric.id, self.name)
        if trajectory.error is not None:
            return Score(score_id, trajectory.id, task.id, rubric.id, self.name, "infra_error", None, False, (), {})
        if rubric.dropped:
            return Score(score_id, trajectory.id, task.id, rubric.id, self.name, "dropped", None, False, (), {})
        calls = executed_calls(trajectory.messages)
        results = [self._evaluate(c, task, trajectory, calls) for c in rubric.criteria]
        total, success, components = combine(results, rubric.weights, self.reward,
                                             {c.id: c.check for c in rubric.criteria})
        return Score(score_id, trajectory.id, task.id, rubric.id, self.name, "ok", total, success,
                     tuple(results), components)

    def _evaluate(self, c: Criterion, task: Task, traj: Trajectory,
                  calls: list[tuple[ToolCall, bool]]) -> CriterionResult:
        passed, evidence = False, ""
        if c.check == "tool_call":
            hits = [call for call, ok in calls if ok and call.name == c.spec["tool"]
                    and values_match(c.spec["arguments"], call.arguments)]
            passed = bool(hits)
            evidence = (f"call {hits[0].id} {c.spec['tool']}({hits[0].arguments})" if hits
                        else f"no successful {c.spec['tool']} call with {c.spec['arguments']}")
        elif c.check == "answer_contains":
            final = next((m.content or "" for m in reversed(traj.messages)
                          if m.role == "assistant" and not m.tool_calls), "")
            missing = [v for v in c.spec["values"] if not mentions_value(final, v)]
            passed = not missing
            evidence = "final answer has every value" if passed else f"final answer lacks {missing}"
        elif c.check == "asked_for_fact":
            fact = next((f for f in task.user_context if f.name == c.spec["fact"]), None)
            asks = [m for m in traj.messages if m.role == "assistant" and not m.tool_calls and m.content
                    and "?" in m.content and fact is not None and asked_facts(m.content, [fact])]
            passed = bool(asks)
            evidence = f"asked: {asks[0].content!r}" if asks else f"never asked for {c.spec['fact']}"
        elif c.check == "unexpected_write":
            remaining = list(c.spec["gold_writes"])
            unexpected = []
            for call, ok in calls:
                spec = task.tool(call.name)
                if not ok or spec is None or not spec.writes:
                    continue
                match = next((g for g in remaining if g["tool"] == call.name
                              and values_match(g["arguments"], call.arguments)), None)
                if match is None:
                    unexpected.append(call)
                else:
                    remaining.remove(match)
            passed = not unexpected
            evidence = "every write is in the workflow" if passed else \
                f"unexpected write(s): {[(u.name, u.arguments) for u in unexpected]}"
        elif c.check == "no_redundant_question":
            given = [f for f in task.visible_facts if f.name in set(c.spec.get("facts", []))]
            asks = [m.content for m in traj.messages if m.role == "assistant" and not m.tool_calls and m.content
                    and "?" in m.content and asked_facts(m.content, given)]
            passed = not asks
            evidence = "never asked for what the user already gave" if passed else f"asked again: {asks[0]!r}"
        elif c.check == "forbidden_tool_called":
            banned = set(c.spec.get("tools", []))
            hits = [call.name for call, _ in calls if call.name in banned]
            passed = not hits
            evidence = "no forbidden tool called" if passed else f"called forbidden tool(s): {hits}"
        elif c.check == "write_without_confirmation":
            from synthagent.plugins.rewards import confirmed_before

            confirmed = confirmed_before(traj.messages, c.spec["tool"])
            passed = confirmed is not False
            evidence = {None: f"{c.spec['tool']} not executed", True: "confirmed before the irreversible write",
                        False: f"{c.spec['tool']} executed without asking for confirmation"}[confirmed]
        elif c.check == "checker":
            from synthagent.plugins.rewards.checkers import evaluate as run_checker

            passed, evidence = run_checker(c.spec["checker"], task, traj)
        elif c.check == "tool_outside_task":
            allowed = set(c.spec["tools"])
            foreign = [call.name for call, _ in calls if call.name not in allowed]
            passed = not foreign
            evidence = "only task tools" if passed else f"called tools outside the task: {foreign}"
        elif c.check == "valid_calls":
            bad = [call.name for call, ok in calls if not ok] + [f"malformed:{traj.malformed_tool_calls}"] * bool(
                traj.malformed_tool_calls)
            passed = not bad
            evidence = "every call was well-formed and executed" if passed else f"failed calls: {bad[:5]}"
        elif c.check == "write_sequence":
            done = [(call.name, call.arguments) for call, ok in calls if ok and (task.tool(call.name) or
                                                                               _NO_TOOL).writes]
            gold = [(g["tool"], g["arguments"]) for g in c.spec["gold_writes"]]
            passed = len(done) == len(gold) and all(a == g[0] and values_match(g[1], b) for (a, b), g in zip(done, gold))
            evidence = "writes match the gold sequence" if passed else f"writes {done} != gold {gold}"
        elif c.check == "final_state":
            passed = traj.final_state_digest == c.spec["digest"]
            evidence = "final state matches gold" if passed else \
                f"final state differs from gold (changed rows: {traj.final_state_changes})"
        elif c.check == "judge":
            evidence = "needs an LLM judge: use the 'judged' scorer"
        else:
            evidence = f"unknown check {c.check!r}"
        return CriterionResult(c.id, c.kind, passed, 1.0 if passed else 0.0, evidence[:500], f"{self.name}:{c.check}")


@hookimpl
def synth_register_rubric_builders(register: Any) -> None:
    """Register the ``workflow`` and ``verified`` rubric builders."""
    register("workflow", WorkflowRubricBuilder, description="subgoals, interactions, gates and state check from the workflow")
    register("verified", VerifiedRubricBuilder,
             description="workflow + AgentScaler verification: validity, state alignment, optional exact writes")


@hookimpl
def synth_register_reward_scorers(register: Any) -> None:
    """Register the ``rubric`` scorer."""
    register("rubric", RubricScorer, description="programmatic scoring of a rubric with per-criterion evidence")
