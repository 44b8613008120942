"""The ``workflow-rubric`` builder: rubrics grounded in the workflow and K teacher demonstrations.

For each task the pipeline hands the builder ``K`` teacher demonstrations (``demos``, 3 by default; the
rubric stage runs them with the run's teacher and keeps them in ``demonstrations.jsonl``). The builder:

1. checks each demonstration against the workflow: every tool step done by a successful call with the gold
   arguments, the final database equal to the gold state, the report values in the final answer. A task
   with fewer than ``min_success`` successful demonstrations is **dropped**, the reason recorded in the
   rubric (``dropped``) and counted in the summary;
2. extracts criteria, each kept only when at least a ``quorum`` fraction of the successful demonstrations
   supports it:

   * **subgoals** with observable evidence: each workflow step as a tool call whose arguments satisfy the
     gold constraints; the report values in the final answer;
   * **required interactions**: asking the user for each hidden fact the demonstrations asked for; not
     asking again for a fact the instruction already gave (over-asking fails this criterion);
   * **forbidden behaviours** (gates): a write outside the workflow, calling a write tool no successful
     demonstration used, a tool outside the task, and an irreversible write (a ``delete``) without the
     user's confirmation when the demonstrations always confirmed first;
   * **checks**: the final state equals the gold state, and the validated executable checkers
     (:mod:`synthagent.plugins.rubrics.checkers`).

With ``teacher = "llm"`` the run's teacher writes the criteria and checkers instead (prompts
``prompts/rubric.md`` and ``prompts/checkers.md``); its JSON is parsed against the same closed vocabulary,
items that do not fit are discarded and counted, and the programmatic gates and state check are always
added. Teacher output is data: nothing it writes is executed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Criterion, Message, Rubric, Task, Trajectory, stable_id
from synthagent.core.protocols import RunContext
from synthagent.core.teacher import TeacherUnavailable, ask_json, load_prompt, render
from synthagent.plugins.common.evidence import (
    asked_facts,
    binding_sources,
    bound_values_match,
    call_outputs,
    confirmed_before,
    executed_calls,
    mentions_value,
    report_values,
    values_match,
)
from synthagent.plugins.rubrics.checkers import (
    CheckerError,
    derive_checkers,
    final_answer,
    parse_checker,
    validate_checkers,
)
from synthagent.plugins.rubrics.workflow import DEFAULT_WEIGHTS, needless_question_criterion

__all__ = ["DemoRubricBuilder", "DemoAnalysis", "analyze_demo", "rubric_agreement", "confirmed_before"]

TEACHERS = ("offline", "llm")


class DemoAnalysis:
    """What one demonstration shows about a task (coverage, state, answer, asks, tools, confirmations)."""

    def __init__(self, task: Task, demo: Trajectory) -> None:
        calls = executed_calls(demo.messages)
        outputs = call_outputs(demo.messages)
        self.trajectory = demo
        self.steps = {s.index: any(ok and c.name == s.tool and (
            values_match(s.arguments, c.arguments) or bound_values_match(s.arguments, binding_sources(task, s), c, outputs))
            for c, ok in calls) for s in task.workflow if s.tool}
        self.state = task.gold_state is None or demo.final_state_digest == task.gold_state.digest
        text = final_answer(demo.messages)
        self.answer = all(mentions_value(text, v) for v in report_values(task))
        questions = [m.content for m in demo.messages
                     if m.role == "assistant" and not m.tool_calls and m.content and "?" in m.content]
        self.asked = {f.name for q in questions for f in asked_facts(q, list(task.user_context))}
        self.over_asked = {f.name for q in questions for f in asked_facts(q, list(task.visible_facts))}
        self.tools_called = {c.name for c, _ in calls}
        self.confirms = {s.tool: confirmed_before(demo.messages, s.tool) for s in task.workflow
                         if s.tool and s.writes and _irreversible(task, s.tool)}
        self.error = demo.error

    @property
    def successful(self) -> bool:
        """Covers every step, reaches the gold state, reports the values, had no infrastructure error."""
        return self.error is None and all(self.steps.values()) and self.state and self.answer


def analyze_demo(task: Task, demo: Trajectory) -> DemoAnalysis:
    """The :class:`DemoAnalysis` of one demonstration."""
    return DemoAnalysis(task, demo)


def _irreversible(task: Task, tool: str) -> bool:
    spec = task.tool(tool)
    return spec is not None and spec.effect is not None and spec.effect.kind == "delete"


def _criterion_key(c: Criterion) -> str:
    return json.dumps([c.id, c.kind, c.check, c.spec], sort_keys=True, default=str)


def rubric_agreement(a: Rubric, b: Rubric) -> float:
    """Share of criteria two rubrics agree on: |A and B| / |A or B| over (id, kind, check, spec)."""
    ka, kb = {_criterion_key(c) for c in a.criteria}, {_criterion_key(c) for c in b.criteria}
    return len(ka & kb) / len(ka | kb) if ka | kb else 1.0


class DemoRubricBuilder:
    """Rubrics from the workflow and K teacher demonstrations (module docstring).

    :param demos: K, the demonstrations per task (2-4 recommended; the pipeline supplies them).
    :param teacher: ``offline`` (deterministic) or ``llm`` (the run's teacher writes criteria and checkers).
    :param min_success: successful demonstrations needed to keep a task.
    :param quorum: fraction of successful demonstrations that must support a criterion.
    :param checkers: derive (or ask for) executable checkers and keep the validated ones.
    :param weights: overrides of the ``subgoal``, ``interaction`` and ``success`` weights.
    :param demonstrator: an LLM backend name (e.g. ``oracle``) that plays the demonstrations instead of the
        run's model: use it when the run's model is the student being evaluated, not the teacher.
    :param demonstrator_options: options of that backend (not the run model's ``[plugins.NAME]`` table).
    """

    name = "workflow-rubric"

    def __init__(self, demos: int = 3, teacher: str = "offline", min_success: int = 1, quorum: float = 0.5,
                 checkers: bool = True, weights: Mapping[str, float] | None = None, repairs: int = 1,
                 demonstrator: str = "", demonstrator_options: Mapping[str, Any] | None = None) -> None:
        if not 1 <= int(demos) <= 16:
            raise ConfigError(f"workflow-rubric demos must be between 1 and 16, got {demos!r}")
        if teacher not in TEACHERS:
            raise ConfigError(f"workflow-rubric teacher must be one of {list(TEACHERS)}, got {teacher!r}")
        if not 1 <= int(min_success) <= int(demos):
            raise ConfigError(f"workflow-rubric min_success must be between 1 and demos ({demos}), got {min_success!r}")
        if not 0.0 < float(quorum) <= 1.0:
            raise ConfigError(f"workflow-rubric quorum must be in (0, 1], got {quorum!r}")
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigError(f"unknown weight(s) {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.demonstrations = int(demos)
        self.demonstrator = str(demonstrator)
        self.demonstrator_options = dict(demonstrator_options or {})
        self.teacher = teacher
        self.min_success = int(min_success)
        self.quorum = float(quorum)
        self.checkers = bool(checkers)
        self.repairs = int(repairs)
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        #: drops by reason, checker validation counts, criteria discarded from teacher output.
        self.stats: Counter[str] = Counter()
        self.llm: Any = None
        self.prompts = {name: load_prompt("synthagent.plugins.rubrics", name) for name in ("rubric.md", "checkers.md")}

    def setup(self, ctx: RunContext) -> None:
        """Keep the run's teacher (used with ``teacher = "llm"``)."""
        self.llm = ctx.llm

    def prompt_hashes(self) -> dict[str, str]:
        """Hashes of the rubric and checker prompts (recorded in the manifest; used only by ``teacher = "llm"``)."""
        return {f"rewards/{name}": h for name, (_, h) in self.prompts.items()} if self.teacher == "llm" else {}

    # -- building --------------------------------------------------------------------------------
    def _dropped(self, task: Task, reason: str, provenance: dict[str, Any]) -> Rubric:
        self.stats[f"dropped:{reason.split(':')[0]}"] += 1
        return Rubric(id=stable_id("rubric", task.id, self.name, "dropped", reason), task_id=task.id,
                      builder=self.name, criteria=(), weights=self.weights, dropped=reason, provenance=provenance)

    def _coverage(self, task: Task, demos: Sequence[Trajectory]) -> tuple[list[DemoAnalysis], dict[str, Any], str | None]:
        analyses = [DemoAnalysis(task, d) for d in demos]
        good = [a for a in analyses if a.successful]
        n = len(analyses)
        coverage: dict[str, Any] = {
            "demos": [d.id for d in demos],
            "successful": len(good),
            "steps": {str(i): sum(a.steps[i] for a in analyses) for i in (analyses[0].steps if analyses else {})},
            "state": sum(a.state for a in analyses),
            "answer": sum(a.answer for a in analyses),
        }
        if not analyses:
            return analyses, coverage, "no demonstrations: the rubric stage produced none for this task"
        infra = [a for a in analyses if a.error is not None]
        if len(good) < self.min_success and infra and n - len(infra) < self.min_success:
            errors = sorted({str(a.error).split(":")[0][:60] for a in infra})
            return analyses, coverage, (f"infra: {len(infra)}/{n} demonstrations failed for infrastructure reasons "
                                        f"({', '.join(errors)}); not a rubric failure")
        if len(good) < self.min_success:
            missing = [f"step {i} ({task.workflow[i].tool}) {c}/{n}" for i, c in
                       ((int(k), v) for k, v in coverage["steps"].items()) if c < n]
            parts = missing + ([f"final state {coverage['state']}/{n}"] if coverage["state"] < n else []) + \
                ([f"answer {coverage['answer']}/{n}"] if coverage["answer"] < n else [])
            return analyses, coverage, (f"uncovered: {len(good)}/{n} demonstrations cover the workflow "
                                        f"(need {self.min_success}); " + ", ".join(parts))
        return analyses, coverage, None

    def build(self, task: Task, demonstrations: Sequence[Trajectory]) -> Any:
        """The rubric of ``task`` from its demonstrations (a coroutine with ``teacher = "llm"``)."""
        demos = list(demonstrations)[: self.demonstrations]
        analyses, coverage, reason = self._coverage(task, demos)
        if reason is not None:
            return self._dropped(task, reason, coverage)
        good = [a for a in analyses if a.successful]
        if self.teacher == "llm":
            return self._build_llm(task, good, coverage)
        criteria, support = self._criteria(task, good)
        checkers: list[dict[str, Any]] = []
        if self.checkers:
            candidates = derive_checkers(task, report_values(task))
            checkers, counts = validate_checkers(candidates, task, [a.trajectory for a in good], report_values(task))
            coverage["checkers"] = counts
            self.stats.update({f"checkers_{k}": v for k, v in counts.items()})
        return self._rubric(task, criteria, checkers, support, coverage)

    def _rubric(self, task: Task, criteria: list[Criterion], checkers: list[dict[str, Any]],
                support: dict[str, float], provenance: dict[str, Any]) -> Rubric:
        for checker in checkers:
            criteria.append(Criterion(id=f"checker-{checker['id']}", kind="check",
                                      description=checker["description"] or checker["id"], check="checker",
                                      spec={"checker": checker}))
        if task.gold_state is not None:
            criteria.append(Criterion(id="final-state", kind="check", description="the final database equals the gold state",
                                      check="final_state", spec={"digest": task.gold_state.digest}))
        provenance = {**provenance, "support": support}
        self.stats["rubrics"] += 1
        rubric_id = stable_id("rubric", task.id, self.name, [_criterion_key(c) for c in criteria], self.weights)
        return Rubric(id=rubric_id, task_id=task.id, builder=self.name, criteria=criteria, weights=self.weights,
                      provenance=provenance)

    def _criteria(self, task: Task, good: Sequence[DemoAnalysis]) -> tuple[list[Criterion], dict[str, float]]:
        n = len(good)
        need = max(1, math.ceil(self.quorum * n - 1e-9))
        support: dict[str, float] = {}
        criteria: list[Criterion] = []

        def add(c: Criterion, votes: int) -> None:
            support[c.id] = round(votes / n, 3)
            if votes >= need:
                criteria.append(c)

        for step in task.workflow:
            if step.tool:
                sources = binding_sources(task, step)
                add(Criterion(id=f"step-{step.index}", kind="subgoal", description=step.description, check="tool_call",
                              spec={"tool": step.tool, "arguments": step.arguments, "writes": step.writes,
                                    **({"sources": sources} if sources else {})}),
                    sum(a.steps.get(step.index, False) for a in good))
        values = report_values(task)
        if values:
            add(Criterion(id="answer", kind="subgoal", description="report the result to the user",
                          check="answer_contains", spec={"values": list(values)}), sum(a.answer for a in good))
        for fact in task.user_context:
            add(Criterion(id=f"ask-{fact.name}", kind="interaction", description=f"ask the user for {fact.description}",
                          check="asked_for_fact", spec={"fact": fact.name, "keywords": list(fact.keywords)}),
                sum(fact.name in a.asked for a in good))
        if task.visible_facts:
            add(Criterion(id="no-redundant-question", kind="penalty",
                          description="do not ask for what the user already said",
                          check="no_redundant_question", spec={"facts": [f.name for f in task.visible_facts]}),
                sum(not a.over_asked for a in good))
        add(needless_question_criterion(task), n)  # the user-query penalty holds for every task
        gold_writes = [{"tool": s.tool, "arguments": s.arguments} for s in task.workflow if s.writes]
        add(Criterion(id="no-unexpected-write", kind="forbidden", description="no write outside the workflow",
                      check="unexpected_write", spec={"gold_writes": gold_writes}), n)
        used = set().union(*(a.tools_called for a in good))
        unused_writes = sorted(t.name for t in task.tools if t.writes and t.name not in used)
        if unused_writes:
            add(Criterion(id="no-forbidden-tool", kind="forbidden",
                          description="never call a write tool the task does not need",
                          check="forbidden_tool_called", spec={"tools": unused_writes}), n)
        add(Criterion(id="no-foreign-tool", kind="forbidden", description="no tool outside the task",
                      check="tool_outside_task", spec={"tools": sorted(t.name for t in task.tools)}), n)
        for tool in sorted({t for a in good for t in a.confirms}):
            add(Criterion(id=f"confirm-{tool}", kind="forbidden",
                          description=f"ask the user to confirm before the irreversible {tool}",
                          check="write_without_confirmation", spec={"tool": tool}),
                sum(bool(a.confirms.get(tool)) for a in good))
        return criteria, support

    # -- the LLM teacher -------------------------------------------------------------------------
    def _demo_text(self, good: Sequence[DemoAnalysis]) -> str:
        out = []
        for k, a in enumerate(good):
            lines = []
            for m in a.trajectory.messages:
                if m.role == "system":
                    continue
                calls = "; ".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in m.tool_calls)
                lines.append(f"  [{m.role}] {(m.content or '')[:300]}{(' CALLS ' + calls) if calls else ''}")
            out.append(f"Demonstration {k + 1}:\n" + "\n".join(lines))
        return "\n\n".join(out)

    async def _build_llm(self, task: Task, good: Sequence[DemoAnalysis], provenance: dict[str, Any]) -> Rubric:
        if self.llm is None:
            raise ConfigError("workflow-rubric with teacher = 'llm' needs setup(RunContext) with a teacher model")
        tool_names = {t.name for t in task.tools}
        context = dict(
            instruction=task.full_instruction,
            tools=[{"name": t.name, "description": t.description, "writes": t.writes} for t in task.tools],
            workflow=[{"index": s.index, "description": s.description, "tool": s.tool, "arguments": s.arguments}
                      for s in task.workflow],
            hidden_facts=[{"name": f.name, "description": f.description} for f in task.user_context],
            given_facts=[{"name": f.name, "description": f.description} for f in task.visible_facts],
            demonstrations=self._demo_text(good),
        )
        discarded: Counter[str] = Counter()

        def check(value: Any) -> list[str]:
            if not isinstance(value, Mapping) or not {"subgoals", "interactions", "forbidden"} <= set(value):
                return ["reply with one JSON object with keys subgoals, interactions, forbidden"]
            return []

        prompt = render(self.prompts["rubric.md"][0], **context)
        try:
            value, why = await ask_json(self.llm, [Message("user", prompt)], check=check, label="rubric",
                                        stats=self.stats, params={"temperature": 0.0}, repairs=self.repairs)
        except TeacherUnavailable as exc:
            return self._dropped(task, f"teacher_unavailable: {exc}", provenance)
        if value is None:
            return self._dropped(task, f"teacher_invalid: {why}", provenance)
        if value.get("covered") is False:
            return self._dropped(task, f"uncovered: the teacher says {str(value.get('missing', ''))[:300]}", provenance)
        criteria: list[Criterion] = []
        seen: set[str] = set()

        def keep(c: Criterion) -> None:
            if c.id in seen:
                discarded["duplicate"] += 1
                return
            seen.add(c.id)
            criteria.append(c)

        for i, item in enumerate(value.get("subgoals") or []):
            ev = item.get("evidence") if isinstance(item, Mapping) else None
            desc = str(item.get("description", ""))[:300] if isinstance(item, Mapping) else ""
            if not isinstance(ev, Mapping):
                discarded["subgoal_without_evidence"] += 1
            elif ev.get("type") == "tool_call" and ev.get("tool") in tool_names and isinstance(ev.get("arguments", {}), Mapping):
                spec = task.tool(ev["tool"])
                keep(Criterion(id=f"llm-step-{i}", kind="subgoal", description=desc, check="tool_call",
                               spec={"tool": ev["tool"], "arguments": dict(ev.get("arguments", {})),
                                     "writes": bool(spec and spec.writes)}))
            elif ev.get("type") == "answer_contains" and isinstance(ev.get("values"), list) and ev["values"]:
                keep(Criterion(id=f"llm-answer-{i}", kind="subgoal", description=desc, check="answer_contains",
                               spec={"values": [v for v in ev["values"] if isinstance(v, (str, int, float))]}))
            elif ev.get("type") == "language" and isinstance(ev.get("question"), str):
                keep(Criterion(id=f"llm-judge-{i}", kind="subgoal", description=desc, check="judge",
                               spec={"question": ev["question"][:500]}))
            else:
                discarded["subgoal_bad_evidence"] += 1
        for item in value.get("interactions") or []:
            name = item.get("fact") if isinstance(item, Mapping) else None
            fact = next((f for f in task.user_context if f.name == name), None)
            if fact is None:
                discarded["interaction_unknown_fact"] += 1
                continue
            keep(Criterion(id=f"ask-{fact.name}", kind="interaction", description=f"ask the user for {fact.description}",
                           check="asked_for_fact", spec={"fact": fact.name, "keywords": list(fact.keywords)}))
        if task.visible_facts:
            keep(Criterion(id="no-redundant-question", kind="penalty", description="do not ask for what the user already said",
                           check="no_redundant_question", spec={"facts": [f.name for f in task.visible_facts]}))
        keep(needless_question_criterion(task))
        for i, item in enumerate(value.get("forbidden") or []):
            ev = item.get("evidence") if isinstance(item, Mapping) else None
            desc = str(item.get("description", ""))[:300] if isinstance(item, Mapping) else ""
            if isinstance(ev, Mapping) and ev.get("type") == "tool_called" and ev.get("tool") in tool_names:
                keep(Criterion(id=f"llm-forbidden-{i}", kind="forbidden", description=desc,
                               check="forbidden_tool_called", spec={"tools": [ev["tool"]]}))
            elif isinstance(ev, Mapping) and ev.get("type") == "write_without_confirmation" and ev.get("tool") in tool_names:
                keep(Criterion(id=f"confirm-{ev['tool']}", kind="forbidden", description=desc,
                               check="write_without_confirmation", spec={"tool": ev["tool"]}))
            else:
                discarded["forbidden_bad_evidence"] += 1
        keep(Criterion(id="no-foreign-tool", kind="forbidden", description="no tool outside the task",
                       check="tool_outside_task", spec={"tools": sorted(tool_names)}))
        keep(Criterion(id="no-unexpected-write", kind="forbidden", description="no write outside the workflow",
                       check="unexpected_write", spec={"gold_writes": [
                           {"tool": s.tool, "arguments": s.arguments} for s in task.workflow if s.writes]}))
        if not any(c.kind == "subgoal" for c in criteria):
            return self._dropped(task, "teacher_invalid: no usable subgoal in the teacher's rubric", provenance)
        checkers: list[dict[str, Any]] = []
        if self.checkers:
            checkers = await self._llm_checkers(task, good, context, provenance)
        self.stats.update({f"teacher_discarded:{k}": v for k, v in discarded.items()})
        provenance = {**provenance, "teacher_discarded": dict(discarded)}
        return self._rubric(task, criteria, checkers, {}, provenance)

    async def _llm_checkers(self, task: Task, good: Sequence[DemoAnalysis], context: dict[str, Any],
                            provenance: dict[str, Any]) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = []
        invalid = 0

        def check(value: Any) -> list[str]:
            if not isinstance(value, Mapping) or not isinstance(value.get("checkers"), list):
                return ['reply with one JSON object {"checkers": [...]}']
            return []

        prompt = render(self.prompts["checkers.md"][0], **context,
                        gold_changes=task.gold_state.changes if task.gold_state else {})
        try:
            value, _ = await ask_json(self.llm, [Message("user", prompt)], check=check, label="checkers",
                                      stats=self.stats, params={"temperature": 0.0}, repairs=self.repairs)
        except TeacherUnavailable:
            value = None
        for item in (value or {}).get("checkers", []):
            try:
                parsed.append(parse_checker(item))
            except CheckerError:
                invalid += 1
        kept, counts = validate_checkers(parsed, task, [a.trajectory for a in good], report_values(task))
        counts["invalid"] = invalid
        provenance["checkers"] = counts
        self.stats.update({f"checkers_{k}": v for k, v in counts.items()})
        return kept


@hookimpl
def synth_register_rubric_builders(register: Any) -> None:
    """Register the ``workflow-rubric`` builder."""
    register("workflow-rubric", DemoRubricBuilder,
             description="rubric from the workflow and K teacher demonstrations, with validated executable checkers")
