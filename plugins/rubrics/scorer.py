"""The ``rubric`` reward scorer: programmatic scoring of a rubric, with per-criterion evidence.

The score is ``gate * (w_subgoal * subgoal_fraction + w_interaction * interaction_fraction
+ w_success * success) / sum(w)``, where ``success`` means every subgoal, interaction and check passed.
Defaults ``0.25 / 0.25 / 0.5`` (:data:`~synthagent.plugins.rubrics.workflow.DEFAULT_WEIGHTS`) make any single
failure cost at least half the reward. Another composition can be given (:mod:`synthagent.plugins.rubrics.compose`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Criterion, CriterionResult, Rubric, Score, Task, ToolCall, Trajectory, stable_id
from synthagent.plugins.common.evidence import (
    asked_facts,
    asked_one_fact,
    bound_values_match,
    call_outputs,
    confirmed_before,
    executed_calls,
    mentions_value,
    needless_questions,
    values_match,
)
from synthagent.plugins.rubrics.checkers import evaluate as run_checker
from synthagent.plugins.rubrics.compose import Reward, compile_reward, default_reward, evaluate
from synthagent.plugins.rubrics.workflow import DEFAULT_WEIGHTS

__all__ = ["RubricScorer", "combine"]


class _NoTool:
    writes = False


_NO_TOOL = _NoTool()


@functools.lru_cache(maxsize=64)
def _default_reward(weights: tuple[tuple[str, float], ...]) -> Any:
    return Reward(default_reward(dict(weights)))


def combine(results: Sequence[CriterionResult], weights: Mapping[str, float],
            reward: Any = None, checks: Mapping[str, str] | None = None) -> tuple[float, bool, dict[str, float]]:
    """Total, success and components of criterion results.

    The total is the ``reward`` composition (:mod:`synthagent.plugins.rubrics.compose`), by default a gate on
    the forbidden criteria over the weighted ``subgoal`` and ``interaction`` fractions and ``success`` (every
    subgoal, interaction and check passed). ``success`` also requires the gate and at least one subgoal (a
    rubric with nothing positive to check never succeeds); a term with nothing to check is left out of
    ``components``.
    """
    if isinstance(reward, Reward):
        rw = reward
    elif reward is None:  # validated once per weighting, not once per score
        rw = _default_reward(tuple(sorted({**DEFAULT_WEIGHTS, **weights}.items())))
    else:
        rw = Reward(reward)
    parts = {
        "subgoal": evaluate("kind:subgoal", results),
        "interaction": evaluate({"gate": {"all_of": ["kind:penalty"]}, "then": "kind:interaction"}, results),
    }
    components = {k: v for k, v in parts.items() if v is not None}  # a term with nothing to check is absent
    components["success"] = float(any(r.kind == "subgoal" for r in results) and all(
        r.passed for r in results if r.kind in ("subgoal", "interaction", "penalty", "check")))
    components["gate"] = float(all(r.passed for r in results if r.kind == "forbidden"))
    total = rw(results, checks)
    return total, bool(components["success"] and components["gate"]), components


class RubricScorer:
    """Scores a trajectory against a rubric programmatically (no judge).

    :param reward: a reward composition (:mod:`synthagent.plugins.rubrics.compose`), e.g. from
        ``[plugins.rubric.scorer.reward]``; by default the gate over the weighted sum of the module docstring.
    """

    name = "rubric"

    def __init__(self, reward: Any = None) -> None:
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
            sources = c.spec.get("sources")
            outputs = call_outputs(traj.messages) if sources else []
            hits = [call for call, ok in calls if ok and call.name == c.spec["tool"]
                    and (values_match(c.spec["arguments"], call.arguments) or
                         (sources and bound_values_match(c.spec["arguments"], sources, call, outputs)))]
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
            facts = [*task.user_context, *task.visible_facts]  # one fact per question: a blanket one counts for none
            asks = [m for m in traj.messages if m.role == "assistant" and not m.tool_calls and m.content
                    and "?" in m.content and fact is not None and asked_one_fact(m.content, facts) == fact]
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
            repeat_asks = [m.content for m in traj.messages if m.role == "assistant" and not m.tool_calls
                           and m.content and "?" in m.content and asked_facts(m.content, given)]
            passed = not repeat_asks
            evidence = ("never asked for what the user already gave" if passed else
                        f"asked again: {repeat_asks[0]!r}")
        elif c.check == "no_needless_question":
            needless, too_many = needless_questions(traj.messages, task, c.spec)
            passed = not needless and not too_many
            evidence = ("every question asked for a needed fact or a confirmation" if passed else
                        f"needless question: {needless[0]!r}" if needless else f"too many questions: {too_many}")
        elif c.check == "forbidden_tool_called":
            banned = set(c.spec.get("tools", []))
            banned_hits = [call.name for call, _ in calls if call.name in banned]
            passed = not banned_hits
            evidence = "no forbidden tool called" if passed else f"called forbidden tool(s): {banned_hits}"
        elif c.check == "write_without_confirmation":
            confirmed = confirmed_before(traj.messages, c.spec["tool"])
            passed = confirmed is not False
            evidence = {None: f"{c.spec['tool']} not executed", True: "confirmed before the irreversible write",
                        False: f"{c.spec['tool']} executed without asking for confirmation"}[confirmed]
        elif c.check == "checker":
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
def synth_register_reward_scorers(register: Any) -> None:
    """Register the ``rubric`` scorer."""
    register("rubric", RubricScorer, description="programmatic scoring of a rubric with per-criterion evidence")
