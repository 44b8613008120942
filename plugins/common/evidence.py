"""What a trajectory shows: executed tool calls, values in an answer, questions for facts, confirmations.

Shared by the ``rule`` user simulator, the rubric builders and scorers (:mod:`synthagent.plugins.rubrics`)
and the ``oracle`` backend. Deterministic and dependency-free (core models only).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from synthagent.core.matching import mentions_value
from synthagent.core.models import Fact, Message, Task, ToolCall

__all__ = ["CONFIRM", "CLOSING", "DETAIL_WORDS", "BLANKET", "Asks", "question_asks", "asked_facts", "asked_one_fact", "needless_questions", "values_match", "executed_calls",
           "report_values", "mentions_value", "confirmed_before", "call_outputs", "binding_sources",
           "bound_values_match"]

#: A request for confirmation in an agent's question ("shall I go ahead?").
CONFIRM = re.compile(r"\b(confirm|proceed|go ahead|shall i|should i|do you want me to)\b", re.I)


#: A closing question ("anything else I can help with?"): not a question to the user about the task.
CLOSING = re.compile(r"\b(anything else|something else)\b", re.I)


def _mentions(text: str, keyword: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(keyword.lower()) + r"(?![a-z0-9])", text.lower()) is not None


def asked_facts(text: str, facts: Sequence[Fact]) -> list[Fact]:
    """The facts whose keywords appear in ``text`` (a question from the agent)."""
    return [f for f in facts if any(_mentions(text, k) for k in f.keywords)]


#: Nouns of the details a question may ask for, whatever the task: a question is judged by what *it* asks,
#: not only by the task's own fact keywords, so "tell me the date, branch, day, code and seat" asks for five
#: things even on a task whose one hidden fact is the branch. Extend it for a domain with
#: ``DETAIL_WORDS | {...}`` passed as ``vocabulary``.
DETAIL_WORDS = frozenset({
    "account", "address", "age", "airport", "amount", "appointment", "arrival", "bag", "balance", "barcode",
    "birth", "birthday", "booking", "branch", "budget", "card", "category", "city", "class", "code", "color",
    "colour", "company", "confirmation", "country", "date", "day", "deadline", "delivery", "department",
    "departure", "description", "destination", "device", "digits", "doctor", "duration", "email", "e-mail",
    "employee", "flight", "gender", "hotel", "hour", "id", "identifier", "invoice", "item", "language", "level",
    "license", "licence", "location", "membership", "model", "month", "name", "nationality", "number", "order",
    "passport", "password", "payment", "phone", "pin", "plan", "postcode", "preference", "price", "priority",
    "product", "quantity", "reason", "reference", "reservation", "room", "route", "salary", "schedule", "seat",
    "serial", "size", "ssn", "station", "status", "street", "surname", "telephone", "ticket", "time", "title",
    "type", "user", "username", "week", "weight", "year", "zip",
})

#: A question that asks for everything at once ("tell me all the details").
BLANKET = re.compile(r"\b(everything|every detail|all (?:of )?(?:the |your )?(?:details|information|info|facts|data)"
                     r"|whatever you (?:know|have))\b", re.I)

#: Where one request of a question ends and the next begins (a list of details).
_SEPARATORS = re.compile(r"[,;/&+]|\b(?:and|or|plus|also|as well as)\b", re.I)


@attrs.frozen
class Asks:
    """What one question asks for (:func:`question_asks`).

    :ivar facts: the task's facts it asks for (their keywords appear in it).
    :ivar extras: the other details it asks for: a detail noun (:data:`DETAIL_WORDS`) in a part of the
        question that names no fact of the task, or ``"everything"`` for a blanket request (:data:`BLANKET`).
    """

    facts: tuple[Fact, ...]
    extras: tuple[str, ...]

    @property
    def count(self) -> int:
        """How many things the question asks for."""
        return len(self.facts) + len(self.extras)


@functools.lru_cache(maxsize=8)
def _ordered(vocabulary: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(vocabulary))  # once per vocabulary, not once per part of every question scored


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower()))


def question_asks(text: str, facts: Sequence[Fact], vocabulary: frozenset[str] = DETAIL_WORDS) -> Asks:
    """What the question ``text`` asks for, judged by the question itself.

    The question is cut into its requests at list separators (commas, "and", "or", slashes). A request that
    mentions a keyword of one of ``facts`` asks for that fact; one that names no fact but a detail noun of
    ``vocabulary`` that no fact's keywords or description use asks for something the task does not hold (an
    *extra*), once a request. A blanket request ("tell me everything") is an extra too.
    """
    found = asked_facts(text, facts)
    known = set().union(*(_words(" ".join((f.description, f.name.replace("_", " "), *f.keywords))) for f in facts)) \
        if facts else set()
    extras: list[str] = []
    for part in _SEPARATORS.split(text):
        if not part or asked_facts(part, facts):
            continue
        hit = next((w for w in _ordered(vocabulary) if _mentions(part, w) and not _words(w) <= known), None)
        if hit is not None:
            extras.append(hit)
    if BLANKET.search(text):
        extras.append("everything")
    return Asks(tuple(found), tuple(extras))


def asked_one_fact(text: str, facts: Sequence[Fact]) -> Fact | None:
    """The one fact a question asks about, or None when it asks about none or about several things.

    A question that asks for more than one thing (:func:`question_asks`: the keywords of several of
    ``facts``, or one fact beside other details, or "everything") asks about no fact in particular: the
    ``rule`` user answers none of it and the rubric credits none of it.
    """
    asks = question_asks(text, facts)
    return asks.facts[0] if len(asks.facts) == 1 and not asks.extras else None


def needless_questions(messages: Sequence[Message], task: Task, spec: Mapping[str, Any]) -> tuple[list[str], str]:
    """The user-query term of the SYNTHAGENT paper: questions the task did not need, and asking too often.

    A question (an assistant message without tool calls, with a ``?``) is needed when it asks for exactly
    one thing and that thing is a fact named in ``spec["needed"]`` (:func:`question_asks` over every fact of
    the task), or asks for a confirmation (:data:`CONFIRM`) naming at most one fact and one other detail; a
    closing ("anything else?") that mentions no fact is not counted. Every other question is needless: a
    blanket one, a list of details (even one whose single task fact is needed), one about a fact the task
    does not need, one the user cannot answer. Asking too often: more questions than
    ``len(needed) + spec["confirmations"] + spec["slack"]`` (default slack 1).

    :returns: (the needless questions, a description of asking too often or ``""``).
    """
    needed = set(spec.get("needed", ()))
    facts = [*task.user_context, *task.visible_facts]
    needless: list[str] = []
    count = 0
    for m in messages:
        if m.role != "assistant" or m.tool_calls or not m.content or "?" not in m.content:
            continue
        text = m.content
        if CLOSING.search(text) and not asked_facts(text, facts):
            continue
        count += 1
        asks = question_asks(text, facts)
        if (asks.count == 1 and asks.facts and asks.facts[0].name in needed) or \
                (CONFIRM.search(text) and len(asks.facts) <= 1 and len(asks.extras) <= 1
                 and "everything" not in asks.extras):
            continue
        needless.append(text)
    limit = len(needed) + int(spec.get("confirmations", 0)) + int(spec.get("slack", 1))
    return needless, (f"{count} questions, more than the {limit} the task needs" if count > limit else "")


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


def confirmed_before(messages: Sequence[Message], tool: str) -> bool | None:
    """Whether the agent asked for confirmation (a question, answered by the user) before its first
    successful call of ``tool``; None when there was no such call."""
    ok = {c.id for c, success in executed_calls(messages) if success}
    asked = False
    for m in messages:
        if m.role == "assistant" and not m.tool_calls and m.content and "?" in m.content and CONFIRM.search(m.content):
            asked = True
        if m.role == "assistant" and any(c.name == tool and c.id in ok for c in m.tool_calls):
            return asked
    return None


def call_outputs(messages: Sequence[Message]) -> list[tuple[ToolCall, Any]]:
    """Every successful tool call with its decoded observation (JSON, or the raw text)."""
    raw = {m.tool_call_id: m.content for m in messages if m.role == "tool" and m.tool_call_id is not None}
    out = []
    for call, ok in executed_calls(messages):
        if ok:
            try:
                out.append((call, json.loads(raw.get(call.id) or "null")))
            except ValueError:
                out.append((call, raw.get(call.id)))
    return out


def binding_sources(task: Task, step: Any) -> dict[str, dict[str, Any]]:
    """For a step's arguments bound to an earlier step's output (``step:N:$.path``): ``{arg: {"tool": the
    earlier step's tool, "path": [...]}}`` (empty for every other binding, so offline rubrics are unchanged)."""
    from synthagent.core.bindings import BindingError, parse_binding

    out: dict[str, dict[str, Any]] = {}
    for arg, text in step.bindings.items():
        try:
            b = parse_binding(text)
        except BindingError:
            continue
        if b.kind == "step_path" and b.step is not None and 0 <= b.step < len(task.workflow):
            out[arg] = {"tool": task.workflow[b.step].tool, "path": list(b.path)}
    return out


def bound_values_match(expected: Mapping[str, Any], sources: Mapping[str, Any], call: ToolCall,
                       outputs: Sequence[tuple[ToolCall, Any]]) -> bool:
    """Like :func:`values_match`, but an argument bound to an earlier step's output also matches the value
    at its path in what a successful call of that step's tool returned in this trajectory (the bindings, not
    the teacher's literal, decide)."""
    from synthagent.core.bindings import MISSING, get_path

    for k, v in expected.items():
        if k not in call.arguments:
            return False
        if _norm(call.arguments[k]) == _norm(v):
            continue
        src = sources.get(k) if isinstance(sources, Mapping) else None
        if not isinstance(src, Mapping):
            return False
        found = [get_path(out, src.get("path") or []) for c, out in outputs
                 if c.name == src.get("tool") and c.id != call.id]
        if not any(f is not MISSING and _norm(f) == _norm(call.arguments[k]) for f in found):
            return False
    return True
