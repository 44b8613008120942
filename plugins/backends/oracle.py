"""The ``oracle`` LLM backend: the built-in offline teacher.

It plays the agent with privileged access to the task (``ChatRequest.task``): it follows the gold workflow
one message at a time, asks the user for each hidden fact (one fact per question) before the first step that
needs it, and closes with a final answer that reports the answer values. It needs no model, network or GPU, and is deterministic.

For validating rewards it can also act out a *corruption* of the oracle (option ``corruption``):

==================  ============================================================================
``none``            the oracle itself (default)
``skip_step``       skips one workflow step (the last write, or the last step)
``never_ask``       never asks the user; uses hidden values it should not know
``ask_given``       also asks for a fact the instruction already gave
``extra_write``     performs one write that is not in the workflow
``wrong_argument``  changes one argument of a write (or of the last step)
``wrong_row``       applies the first write to another row of the same table
``wrong_answer``    reports wrong values in the final answer
``nothing``         answers at once without doing anything
``forbidden_tool``  also calls a write tool the workflow never uses (or, if none, a tool the task lacks)
==================  ============================================================================

The oracle asks for confirmation before an irreversible write (a ``delete``) and closes with the answer
values, or for a task without any, the keys of the rows it changed (the confirmation numbers).

It words each move (ask for facts, confirm, report the result, close) with a phrase from a bank of
paraphrases (:data:`ASK_PHRASES`, :data:`CONFIRM_PHRASES`, :data:`DONE_PHRASES`, :data:`LOOKUP_PHRASES`,
:data:`VALUE_PHRASES`, :data:`CLOSINGS`), picked by a stable hash of the task id, the request's seed and the
move: the same seed gives the same words, so the data does not all sound alike and runs stay reproducible.

Demonstrations for rubrics (``docs/rewards.md``) come from a teacher that is not always the same and not
always right; two options make the oracle such a teacher, both seeded by the request's seed:

* ``vary``: harmless variation between demonstrations (ask every hidden fact up front or just in time,
  repeat a read);
* ``mistakes``: the probability that a demonstration plays ``skip_step``, ``wrong_argument`` or
  ``never_ask`` instead of the oracle.

**Listening** (option ``listen``). By default the oracle reads every value from the task, so its reward does
not depend on what the user says. With ``listen = true`` an argument bound to a *hidden* fact (``fact:NAME`` or
``step:N+fact:NAME`` in the step's bindings) comes from the user's answer to the oracle's question for that fact
(the user's next message after the ask; the oracle asks one fact a question):

* the answer mentions the gold value (:func:`~synthagent.core.matching.mentions_value`): the gold argument;
* otherwise, for ``fact:NAME``: the first token of the answer in the gold value's shape (a number for a
  number, typed like it; an e-mail, id-like ``A0008``/``LC-123`` or number token for a one-token value), else
  the answer's stripped text (:func:`heard_value`);
  for ``step:N+fact:NAME``: the row of step N's result (as the conversation shows it) whose fact column the
  answer mentions, if exactly one does, and that row's value of the gold argument's column; else as for
  ``fact:NAME``;
* the user never answered (no message after the ask, or the fact was never asked): the argument is left out.

Visible facts, literals and values taken from earlier steps keep their gold values, and the final answer
reports the gold answer values. It is deterministic given the conversation. Use it as a fixed policy whose
reward depends on the user (measuring a user simulator's effect on reward, ``docs/eigendata.md``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from synthagent.core.bindings import BindingError, parse_binding
from synthagent.core.errors import ConfigError, UsageError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.matching import mentions_value
from synthagent.core.models import Fact, Message, Task, ToolCall, Usage, WorkflowStep
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.plugins.common.corruptions import default_for, extra_write, perturb_value, wrong_value
from synthagent.plugins.common.evidence import report_values
from synthagent.plugins.common.values import in_person

__all__ = ["OracleBackend", "CORRUPTIONS", "MISTAKES", "CONFIRM_TEXT", "ASK_PHRASES", "CONFIRM_PHRASES", "DONE_PHRASES",
           "LOOKUP_PHRASES", "VALUE_PHRASES", "CLOSINGS", "pick", "plan_for", "wrong_value", "heard_value",
           "listened_arguments", "oracle_reply"]

CORRUPTIONS = ("none", "skip_step", "never_ask", "ask_given", "extra_write", "wrong_argument", "wrong_row",
               "wrong_answer", "nothing", "forbidden_tool")

#: The question the oracle asks before an irreversible write (the rule user answers it with a yes).
CONFIRM_TEXT = "This cannot be undone. Shall I go ahead?"

#: The corruptions a ``mistakes`` demonstration plays.
MISTAKES = ("skip_step", "wrong_argument", "never_ask")


@attrs.frozen
class Action:
    """One assistant message of the plan: ask for facts, call a tool, or give the final answer."""

    kind: str
    facts: tuple[Fact, ...] = ()
    tool: str = ""
    arguments: dict[str, Any] = attrs.field(factory=dict)
    text: str = ""
    step: int = -1  # the workflow step a call plays (-1: none)


#: Ways to ask for facts; ``{facts}`` is each fact's description (with a keyword the user recognizes).
#: None may contain a confirmation phrase (rule_user ``_CONFIRM``) or a fact keyword of the built-in domains.
ASK_PHRASES = (
    "To help with that, could you please tell me {facts}?",
    "Happy to help. Could you give me {facts}?",
    "Could you let me know {facts}, please?",
    "One thing first: what is {facts}?",
    "Thanks. Can you tell me {facts}?",
    "I can take care of that. What is {facts}?",
    "Let me get on it. Could you provide {facts}?",
    "Could you send me {facts} so I can continue?",
    "May I have {facts}?",
    "I need a detail from you first: {facts}. Could you share it?",
    "Sure. What's {facts}?",
    "Can you share {facts} with me?",
    "Okay! Could you tell me {facts} so I can look into this?",
    "I'm on it. First, what is {facts}?",
    "Sure thing. I'll just need {facts}. What is it?",
    "Glad to help with this. Could you tell me {facts}?",
    "To look this up, I need {facts}. Could you share that?",
    "Thanks for reaching out! What is {facts}?",
    "Got it. Could you please give me {facts}?",
    "Certainly. Would you mind telling me {facts}?",
    "Let me check that for you. Can you give me {facts}?",
    "Of course. I'll need {facts} to continue. What is it?",
)

#: Ways to ask for confirmation before an irreversible write; each is a question that rule_user's
#: ``_CONFIRM`` (and so ``rewards.confirmed_before``) recognizes.
CONFIRM_PHRASES = (
    CONFIRM_TEXT,
    "Just to be safe: this is permanent. Do you want me to go ahead?",
    "Deleting this can't be reversed. Should I proceed?",
    "Heads up, this step is irreversible. Can you confirm I should continue?",
    "Once removed, it's gone for good. Shall I proceed?",
    "This will permanently delete it. Do you want me to proceed?",
    "Before I delete anything, could you confirm that this is what you want?",
    "That removal is final. Should I go ahead with it?",
    "I won't be able to restore it afterwards. Shall I go ahead?",
    "This is a permanent change. Could you confirm before I continue?",
    "Removing it cannot be reverted. Do you want me to go ahead and do it?",
    "Please note this is irreversible. Should I go ahead?",
)

#: Openings of the final answer after writes; ``{done}`` lists the completed workflow steps.
DONE_PHRASES = (
    "All done. Steps completed: {done}.",
    "I have finished: {done}.",
    "That's taken care of: {done}.",
    "Done! Here's what I did: {done}.",
    "Everything went through: {done}.",
    "Finished. I've completed the following: {done}.",
    "All set: {done}.",
    "Good news, it's done: {done}.",
    "I've wrapped this up: {done}.",
    "Completed for you: {done}.",
    "Here's a summary of what I did: {done}.",
)

#: Openings of the final answer of a task without writes.
LOOKUP_PHRASES = (
    "Your request is complete.",
    "Everything is taken care of.",
    "Here you go.",
    "I've looked into it.",
    "I checked for you.",
    "That's sorted.",
    "Thanks for waiting.",
    "Here's the information you asked for.",
    "I found it.",
)

#: How the final answer introduces the reported values; ``{values}`` lists them.
VALUE_PHRASES = (
    " Here is what I found: {values}.",
    " For your records: {values}.",
    " The outcome: {values}.",
    " Result: {values}.",
    " Here is what you need: {values}.",
    " Please note: {values}.",
    " The relevant values are {values}.",
    " For reference: {values}.",
    " Key information: {values}.",
)

#: Optional last sentences of the final answer.
CLOSINGS = ("", "", "", " All the best.", " Glad I could help.", " Happy to help.", " Take care.",
            " Thanks for your patience.")


def pick(bank: Sequence[str], *key: Any) -> str:
    """A phrase of ``bank`` chosen by a stable hash of ``key`` (the same key always gets the same phrase)."""
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return bank[int.from_bytes(digest[:8], "big") % len(bank)]


def _question(facts: Sequence[Fact], voice: tuple[Any, ...] = ()) -> str:
    """Ask for ``facts`` in words the user recognizes (each fact's description, plus a keyword if absent),
    in the wording of :data:`ASK_PHRASES` that ``voice`` (task id and seed) picks."""
    parts = []
    for f in facts:
        said = any(k in f.description.lower() for k in f.keywords)
        parts.append(f.description if said or not f.keywords else f"{f.description} (your {f.keywords[0]})")
    return pick(ASK_PHRASES, *voice, "ask", *(f.name for f in facts)).format(facts=" and ".join(parts))


def _final(task: Task, values: Sequence[Any], voice: tuple[Any, ...] = ()) -> str:
    done = "; ".join(in_person(s.description[:1].lower() + s.description[1:], "second")
                     for s in task.workflow if s.writes)
    text = pick(DONE_PHRASES, *voice, "done").format(done=done) if done else pick(LOOKUP_PHRASES, *voice, "done")
    if values:
        sep = pick(("; ", ", "), *voice, "sep")
        text += pick(VALUE_PHRASES, *voice, "values").format(values=sep.join(str(v) for v in values))
    return text + pick(CLOSINGS, *voice, "closing")


def _extra_write(task: Task) -> Action | None:
    """A write that succeeds on the initial database and is not part of the workflow, as a call action."""
    found = extra_write(task)
    return None if found is None else Action("call", tool=found[0], arguments=found[1])


def _other_row(task: Task, step: WorkflowStep) -> dict[str, Any] | None:
    """The step's arguments pointed at a different row of its table (same columns, another row's values)."""
    spec = task.tool(step.tool or "")
    if spec is None or spec.effect is None or task.initial_state is None or not spec.effect.where:
        return None
    rows = task.initial_state.rows.get(spec.effect.table, ())
    for row in rows:
        if all(row.get(col) != step.arguments.get(param) for param, col in spec.effect.where.items()
               if param in step.arguments):
            args = dict(step.arguments)
            args.update({param: row[col] for param, col in spec.effect.where.items() if param in args})
            return args
    return None


def _forbidden_call(task: Task) -> Action:
    """A write tool the workflow never uses, with arguments that execute if any do; else a foreign tool."""
    gold = {s.tool for s in task.workflow if s.tool}
    spare = [t for t in task.tools if t.writes and t.name not in gold]
    if not spare:
        return Action("call", tool="admin_override", arguments={"confirm": True})
    extra = _extra_write(attrs.evolve(task, tools=tuple(spare) + tuple(t for t in task.tools if not t.writes)))
    if extra is not None:
        return extra
    spec = spare[0]
    props = spec.parameters.get("properties", {})
    return Action("call", tool=spec.name, arguments={p: default_for(props.get(p, {}))
                                                     for p in spec.parameters.get("required", [])})


def oracle_reply(tasks: Sequence[Task], first: Any = None) -> Any:
    """A reply function for :class:`synthagent.core.testing.ScriptedOpenAIServer` that plays the oracle over
    HTTP, so the ``openai`` backend's whole path (requests, retries, faults) can be exercised offline.

    The task is found by the request's opening messages (system prompt and instruction) and, where several
    tasks open alike, by the hidden facts the user has revealed so far (their plans agree until then); the
    reply is the oracle's plan for this turn. ``first(body)``, when given, answers the very first request
    instead (a pathological reply, say).

    Example: ``ScriptedOpenAIServer(oracle_reply(tasks))``.
    """
    by_opening: dict[tuple[str, str], list[Task]] = {}
    for t in tasks:
        by_opening.setdefault((t.system_prompt, t.instruction), []).append(t)
    seen = {"n": 0}

    def reply(body: dict[str, Any]) -> Any:
        seen["n"] += 1
        if first is not None and seen["n"] == 1:
            return first(body)
        messages = body["messages"]
        said = " ".join(m["content"] for m in messages[2:] if m["role"] == "user")
        task = max(by_opening[(messages[0]["content"], messages[1]["content"])],
                   key=lambda t: sum(f.statement in said for f in t.user_context))
        position = sum(1 for m in messages if m["role"] == "assistant")
        plan = plan_for(task)
        action = plan[min(position, len(plan) - 1)]
        if action.kind == "call":
            return {"content": None, "tool_calls": [{"id": f"call_{position}", "type": "function", "function": {
                "name": action.tool, "arguments": json.dumps(action.arguments)}}]}
        return action.text

    return reply


def plan_for(task: Task, corruption: str = "none", *, rng: random.Random | None = None,
             seed: int = 0) -> list[Action]:
    """The sequence of assistant messages the oracle (or a corruption of it) sends for ``task``.

    :param rng: with a generator, harmless variation (see ``vary`` in the module docstring).
    :param seed: picks the wording from the phrase banks (with the task id): the same seed, the same words.
    """
    if corruption == "nothing":
        return [Action("final", text="I'm sorry, I can't help with that.")]
    voice = (task.id, seed)
    hidden = {f.name: f for f in task.user_context}
    steps: list[WorkflowStep] = [s for s in task.workflow if s.tool]
    if corruption == "skip_step" and steps:
        writes = [s for s in steps if s.writes]
        victim = writes[-1] if writes else steps[-1]
        steps = [s for s in steps if s is not victim]
    plan: list[Action] = []
    asked: set[str] = set()
    upfront = rng is not None and rng.random() < 0.5
    repeat = rng.randrange(len(steps)) if rng is not None and steps and rng.random() < 0.3 else -1
    if upfront and corruption != "never_ask":
        names = [n for s in steps for b in s.bindings.values() for n in re.findall(r"fact:([a-z0-9_]+)", b)]
        need = [hidden[n] for n in dict.fromkeys(names) if n in hidden]
        if need:
            plan.extend(Action("ask", facts=(f,), text=_question([f], voice)) for f in need)  # one fact a question
            asked.update(f.name for f in need)
    if corruption == "ask_given" and task.visible_facts:
        plan.append(Action("ask", facts=(task.visible_facts[0],), text=_question([task.visible_facts[0]], voice)))
    wrong_target = None
    if corruption == "wrong_argument" and steps:
        writes = [s for s in steps if s.writes and s.arguments]
        wrong_target = (writes or [s for s in steps if s.arguments] or [steps[-1]])[0].index
    for step in steps:
        names = [n for b in step.bindings.values() for n in re.findall(r"fact:([a-z0-9_]+)", b)]
        need = [hidden[n] for n in dict.fromkeys(names) if n in hidden and n not in asked]
        if need and corruption != "never_ask":
            plan.extend(Action("ask", facts=(f,), text=_question([f], voice)) for f in need)  # one fact a question
            asked.update(f.name for f in need)
        args = dict(step.arguments)
        if corruption == "wrong_row" and step.writes and wrong_target is None:
            wrong_target = -1  # only the first write
            args = _other_row(task, step) or {k: perturb_value(v) for k, v in args.items()}
        if step.index == wrong_target and args:
            name = sorted(args)[0]
            args[name] = perturb_value(args[name])
        spec = task.tool(step.tool or "")
        if spec is not None and spec.effect is not None and spec.effect.kind == "delete" and corruption != "never_ask":
            plan.append(Action("ask", text=pick(CONFIRM_PHRASES, *voice, "confirm", step.index)))
        plan.append(Action("call", tool=step.tool or "", arguments=args, step=step.index))
        if step.index == repeat and not step.writes:
            plan.append(Action("call", tool=step.tool or "", arguments=dict(args), step=step.index))
    if corruption == "extra_write":
        extra = _extra_write(task)
        if extra is not None:
            plan.append(extra)
    if corruption == "forbidden_tool":
        plan.append(_forbidden_call(task))
    values = list(report_values(task))
    if corruption == "wrong_answer":
        values = [wrong_value(v) for v in values] or ["nothing to report"]
    plan.append(Action("final", text=_final(task, values, voice)))
    return plan


#: What the listening oracle takes from an answer that does not mention the gold value: the first e-mail,
#: time of day (``07:15``), number, or id-like token (a digit after optional letters: ``A0008``, ``LC-48617998``,
#: ``2024-08-12``).
_HEARD = re.compile(r"(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
                    r"|(?<![\w:])(?P<time>\d{1,2}:\d{2}(?::\d{2})?)(?![\w:])"
                    r"|(?<![\w.-])(?P<num>-?\d[\d,]*(?:\.\d+)?)(?![\w-])"
                    r"|(?<![\w-])(?P<id>[A-Za-z]*[-_]?\d[\w-]*)")

_NONE: Any = object()  # no value picked


def _answer_after(messages: Sequence[Message], position: int | None) -> str | None:
    """The text of the first user message after the ``position``-th assistant message (0-based), or None."""
    if position is None:
        return None
    seen = -1
    for i, m in enumerate(messages):
        if m.role == "assistant":
            seen += 1
            if seen == position:
                return next((u.content or "" for u in messages[i + 1:] if u.role == "user"), None)
    return None


def _result_after(messages: Sequence[Message], position: int) -> Any:
    """The parsed tool result answering the ``position``-th assistant message's call, or None."""
    seen = -1
    for i, m in enumerate(messages):
        if m.role == "assistant":
            seen += 1
            if seen == position:
                ids = {c.id for c in m.tool_calls}
                for r in messages[i + 1:]:
                    if r.role == "tool" and r.tool_call_id in ids:
                        try:
                            return json.loads(r.content or "")
                        except ValueError:
                            return None
                    if r.role != "tool":
                        return None
    return None


def heard_value(answer: str, gold: Any) -> Any:
    """The value the listening oracle hears in an ``answer`` that does not mention the gold value, in the
    gold value's shape: for a number, the first number token (an ``int`` or ``float`` like ``gold``); for a
    one-token value (an id such as ``A0008``, an e-mail, a word), the first e-mail, id-like or number token;
    else (or when no such token is there) the answer's stripped text."""
    number = isinstance(gold, (int, float)) and not isinstance(gold, bool)
    if number or (isinstance(gold, str) and gold.strip() and not any(c.isspace() for c in gold.strip())):
        for m in _HEARD.finditer(answer):
            if not number:
                return m.group(0)
            if m.group("num") is not None:
                value = float(m.group("num").replace(",", ""))
                return int(value) if isinstance(gold, int) and value.is_integer() else value
    return answer.strip()


def _picked_row(rows: Any, fact_value: Any, gold: Any, answer: str) -> Any:
    """From step N's result rows: the row whose fact column (the column holding ``fact_value`` in the row
    holding ``gold``) the answer mentions, if exactly one; that row's value in ``gold``'s column. Else MISSING."""
    items = rows.get("items") if isinstance(rows, dict) else rows
    if not isinstance(items, list):
        return _NONE
    for row in items:
        if not isinstance(row, dict):
            continue
        keys = [k for k, v in row.items() if v == gold]
        cols = [k for k, v in row.items() if v == fact_value]
        if keys and cols:
            named = [r for r in items if isinstance(r, dict) and r.get(cols[0]) is not None
                     and mentions_value(answer, r.get(cols[0]))]
            return named[0].get(keys[0], _NONE) if len(named) == 1 else _NONE
    return _NONE


def listened_arguments(task: Task, plan: Sequence[Action], action: Action, messages: Sequence[Message]) -> dict[str, Any]:
    """``action``'s arguments with every argument bound to a hidden fact taken from the user's answer (see
    "Listening" in the module docstring). Arguments a corruption changed are left as they are."""
    step = next((s for s in task.workflow if s.index == action.step), None)
    args = dict(action.arguments)
    if step is None:
        return args
    hidden = {f.name: f for f in task.user_context}
    asks: dict[str, int] = {}
    for i, a in enumerate(plan):
        if a.kind == "ask" and len(a.facts) == 1:
            asks.setdefault(a.facts[0].name, i)
    for param, text in step.bindings.items():
        try:
            b = parse_binding(text)
        except BindingError:
            continue
        if b.kind not in ("fact", "step_fact") or b.fact not in hidden:
            continue
        if param not in args or args[param] != step.arguments.get(param):
            continue  # a corruption's change stays
        answer = _answer_after(messages, asks.get(b.fact or ""))
        if answer is None:
            args.pop(param)
            continue
        gold_fact = hidden[b.fact or ""].value
        if mentions_value(answer, gold_fact):
            continue
        value = _NONE
        if b.kind == "step_fact" and b.step is not None:
            call = next((i for i, a in enumerate(plan) if a.kind == "call" and a.step == b.step), None)
            if call is not None:
                value = _picked_row(_result_after(messages, call), gold_fact, args[param], answer)
        args[param] = heard_value(answer, args[param]) if value is _NONE else value
    return args


class OracleBackend:
    """The offline teacher as an LLM backend (see the module docstring).

    :param corruption: one of :data:`CORRUPTIONS` (default ``none``).
    :param vary: vary harmlessly between episodes (seeded by the request's seed).
    :param mistakes: probability in [0, 1] that an episode plays one of :data:`MISTAKES` instead.
    :param listen: take arguments bound to hidden facts from the user's answers instead of the task (see
        "Listening" in the module docstring), so the reward depends on the user.
    :param model: accepted for symmetry with real backends; only used in the policy id.
    """

    #: It plays the gold workflow and writes no free text (:class:`synthagent.core.capabilities.WorkflowPlayer`):
    #: components that need a teacher refuse it by this trait.
    plays_workflow = True

    def __init__(self, corruption: str = "none", vary: bool = False, mistakes: float = 0.0, model: str = "",
                 listen: bool = False) -> None:
        if corruption not in CORRUPTIONS:
            raise ConfigError(f"unknown oracle corruption {corruption!r}; choose one of {list(CORRUPTIONS)}")
        if not 0.0 <= float(mistakes) <= 1.0:
            raise ConfigError(f"oracle mistakes must be a probability in [0, 1], got {mistakes!r}")
        self.corruption = corruption
        self.vary = bool(vary)
        self.mistakes = float(mistakes)
        self.listen = bool(listen)
        self.name = ("oracle" if corruption == "none" else f"oracle:{corruption}") + ("+listen" if listen else "")
        self._plans: dict[tuple[str, int], list[Action]] = {}

    def incompatible_with(self, selected: Mapping[str, Any], components: Mapping[str, Any]) -> tuple[str, str] | None:
        """Refuse ``user=llm`` playing the user with this backend (its default): the oracle answers only as the
        agent (it reads ChatRequest.task), so every rollout would fail as an infrastructure failure."""
        if selected.get("user") == "llm" and not getattr(components.get("user"), "backend", ""):
            return "user", ("the oracle acts only as the agent and cannot play the user; use user=rule, a model "
                            "backend (llm.backend=openai), or give the llm user its own: "
                            "--set plugins.llm.user.backend=openai")
        return None

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The next assistant message of the plan, given how many the conversation already has."""
        task = request.task
        if task is None:
            raise UsageError("the oracle backend acts only as a teacher: it needs ChatRequest.task")
        key = (task.id, request.seed)
        plan = self._plans.get(key)
        if plan is None:
            rng = random.Random(f"{task.id}|{request.seed}") if (self.vary or self.mistakes) else None
            corruption = self.corruption
            if rng is not None and self.mistakes and corruption == "none" and rng.random() < self.mistakes:
                corruption = rng.choice(MISTAKES)
            plan = self._plans[key] = plan_for(task, corruption, rng=rng if self.vary else None,
                                               seed=request.seed)
            if len(self._plans) > 4096:
                self._plans.pop(next(iter(self._plans)))
        position = sum(1 for m in request.messages if m.role == "assistant")
        action = plan[min(position, len(plan) - 1)]
        if action.kind == "call":
            arguments = listened_arguments(task, plan, action, request.messages) if self.listen else action.arguments
            call = ToolCall(id=f"call_{position}", name=action.tool, arguments=arguments)
            message = Message("assistant", None, (call,))
        else:
            message = Message("assistant", action.text)
        return ChatResponse(message, Usage(calls=1))


@hookimpl
def synth_register_llm_backends(register: Any) -> None:
    """Register the ``oracle`` backend."""
    register("oracle", OracleBackend, description="offline teacher that follows the gold workflow (no model)")
