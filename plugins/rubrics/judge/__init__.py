"""The ``judged`` reward scorer: programmatic evidence first, an LLM judge only for language criteria.

Criteria whose ``check`` is ``judge`` (``spec.question`` states what to decide) go to the run's teacher, one
criterion per call. The verdict is parsed strictly: the reply must be exactly a JSON object with ``verdict``
(``pass`` or ``fail``) and a ``reason`` string. A malformed or incomplete verdict is re-asked (``repairs``
times), then recorded as a judge failure: the criterion result says so, and the score has ``status:
"judge_error"`` and ``total: null``. A judge failure is never turned into a reward. Every other criterion is
scored by the programmatic :class:`~synthagent.plugins.rubrics.scorer.RubricScorer`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import attrs

from synthagent.core.capabilities import has_capability
from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Criterion, CriterionResult, Message, Rubric, Score, Task, Trajectory
from synthagent.core.protocols import ChatRequest, RunContext
from synthagent.core.teacher import load_prompt, render
from synthagent.plugins.rubrics.scorer import RubricScorer, combine

__all__ = ["JudgeScorer", "parse_verdict"]


def parse_verdict(text: str | None) -> tuple[bool, str] | str:
    """``(passed, reason)`` from a strict verdict, or a string saying what is wrong with it."""
    raw = (text or "").strip()
    try:
        value = json.loads(raw)
    except ValueError:
        return "the reply is not exactly one JSON object"
    if not isinstance(value, dict):
        return "the reply must be a JSON object"
    if set(value) != {"verdict", "reason"}:
        return f"the object must have exactly the keys verdict and reason, got {sorted(value)}"
    if value["verdict"] not in ("pass", "fail"):
        return f"verdict must be 'pass' or 'fail', got {value['verdict']!r}"
    if not isinstance(value["reason"], str) or not value["reason"].strip():
        return "reason must be a non-empty string"
    return value["verdict"] == "pass", value["reason"].strip()


def _transcript(trajectory: Trajectory, limit: int = 6000) -> str:
    lines = []
    for m in trajectory.messages:
        if m.role == "system":
            continue
        calls = "; ".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in m.tool_calls)
        lines.append(f"[{m.role}] {(m.content or '')[:600]}{(' CALLS ' + calls) if calls else ''}")
    text = "\n".join(lines)
    return text if len(text) <= limit else text[:limit] + "\n[...]"


class JudgeScorer:
    """Programmatic scoring plus strict LLM judgement of ``judge`` criteria (module docstring).

    :param repairs: re-asks after a malformed verdict before it is recorded as a judge failure.
    """

    name = "judged"

    def __init__(self, repairs: int = 1) -> None:
        self.repairs = int(repairs)
        self.prompt, self.prompt_hash = load_prompt("synthagent.plugins.rubrics.judge", "judge.md")
        self.programmatic = RubricScorer()
        #: judge_calls, judge_reasked, judge_failures, judged_pass, judged_fail.
        self.stats: Counter[str] = Counter()
        self.llm: Any = None

    def setup(self, ctx: RunContext) -> None:
        """The run's teacher is the judge."""
        if has_capability(ctx.llm, "plays_workflow"):
            raise ConfigError("the judged scorer needs a teacher model as the judge (llm.backend), not the oracle")
        self.llm = ctx.llm

    def prompt_hashes(self) -> dict[str, str]:
        """Hash of the judge prompt (recorded in the manifest)."""
        return {"judge/judge.md": self.prompt_hash}

    async def _judge(self, task: Task, criterion: Criterion, trajectory: Trajectory) -> CriterionResult:
        prompt = render(self.prompt, request=task.full_instruction, transcript=_transcript(trajectory),
                        criterion=str(criterion.spec.get("question") or criterion.description))
        convo = [Message("user", prompt)]
        problem = ""
        for attempt in range(self.repairs + 1):
            self.stats["judge_calls"] += 1
            response = await self.llm.chat(ChatRequest(messages=tuple(convo), params={"temperature": 0.0}))
            parsed = parse_verdict(response.message.content)
            if not isinstance(parsed, str):
                passed, reason = parsed
                self.stats["judged_pass" if passed else "judged_fail"] += 1
                return CriterionResult(criterion.id, criterion.kind, passed, float(passed), reason[:500],
                                       f"{self.name}:judge")
            problem = parsed
            if attempt < self.repairs:
                self.stats["judge_reasked"] += 1
                convo += [Message("assistant", (response.message.content or "")[:2000]),
                          Message("user", f"That verdict cannot be used: {problem}. Reply with only "
                                          '{"verdict": "pass" or "fail", "reason": "..."}.')]
        self.stats["judge_failures"] += 1
        return CriterionResult(criterion.id, criterion.kind, False, 0.0, f"judge failure: {problem}",
                               f"{self.name}:judge_failure")

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """Score programmatic criteria, judge the ``judge`` ones; a judge failure voids the total."""
        base = await self.programmatic.score(task, rubric, trajectory)
        judged = [c for c in rubric.criteria if c.check == "judge"]
        if base.status != "ok" or not judged:
            return attrs.evolve(base, scorer=self.name)
        if self.llm is None:
            raise ConfigError("the judged scorer needs setup(RunContext) with a judge model")
        verdicts = {c.id: await self._judge(task, c, trajectory) for c in judged}
        results = tuple(verdicts.get(r.criterion_id, r) for r in base.breakdown)
        if any(v.checker.endswith("judge_failure") for v in verdicts.values()):
            return attrs.evolve(base, scorer=self.name, status="judge_error", total=None, success=False,
                                breakdown=results)
        total, success, components = combine(results, rubric.weights)
        return attrs.evolve(base, scorer=self.name, breakdown=results, total=total, success=success,
                            components=components)


@hookimpl
def synth_register_reward_scorers(register: Any) -> None:
    """Register the ``judged`` scorer."""
    register("judged", JudgeScorer, description="programmatic scoring + strict LLM judge for language criteria")
