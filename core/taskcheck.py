"""Checks every generated task must pass, whatever plugin made it: :func:`check_task`.

A task is a promise that its hidden facts matter: the agent has to ask the user for each one, because some
workflow step needs it. :func:`check_task` verifies what can be verified without running anything:

- each hidden fact (``task.user_context``) is bound by some workflow step, through a ``fact:NAME`` or
  ``step:N+fact:NAME`` binding (a hidden fact no step uses teaches nothing: the agent never needs to ask);
- each binding is well formed (:func:`synthagent.core.bindings.parse_binding`): it names an argument of its
  step, an existing fact, and only an earlier step;
- an argument bound to ``fact:NAME`` has that fact's value;
- each workflow tool is offered in ``task.tools``, tool names and fact names are unique, and step indexes are
  ``0, 1, 2, ...`` in order;
- no hidden fact's value shows in the visible instruction.

:func:`unneeded_facts` goes one step further where the task carries its database (``initial_state`` and
declarative tool effects): a hidden fact is *needed* only if the agent cannot reach the gold without it. A fact
whose value is written (an ``insert``'s or ``update``'s value) is needed; a fact that only filters a lookup is
needed only when the lookup without it finds more than one row (so the agent could not tell which); a fact that
picks a row out of an earlier step's result (``step:N+fact:NAME``) is needed only when that result has several
rows. Where the task has no database to look at (tools simulated by an LLM), every bound fact counts as needed.

The binding syntax (``WorkflowStep.bindings``, argument name -> where its value comes from):

==========================  =================================================================================
``literal``                  a constant of the task (an enum value, a fixed amount)
``fact:NAME``                the value of fact NAME (hidden in ``user_context`` or visible in ``visible_facts``)
``step:N``                   read from the result of the earlier step N (an id a lookup returned)
``step:N:$.path``            the value at a JSON path in step N's result, e.g. ``step:0:$.orders[0].id``
``step:N+fact:NAME``         picked from step N's result rows by fact NAME (the row whose column equals the
                             fact's value), e.g. the order id of the order the user describes by its date
==========================  =================================================================================
"""

from __future__ import annotations

import re
from typing import Any

from synthagent.core.bindings import BindingError, parse_binding
from synthagent.core.models import Task

__all__ = ["check_task", "unneeded_facts", "needs_a_question"]


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).lower()


def check_task(task: Task) -> list[str]:
    """The problems of ``task``, each a short sentence naming what is wrong; empty when the task is fine.

    Pure: reads only the task (no database, no model). See the module docstring for what is checked.
    """
    problems: list[str] = []
    hidden = {f.name: f for f in task.user_context}
    visible = {f.name: f for f in task.visible_facts}
    facts = {**visible, **hidden}
    names = [f.name for f in (*task.user_context, *task.visible_facts)]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"fact {name!r} is defined more than once")
    tool_names = [t.name for t in task.tools]
    for name in sorted({n for n in tool_names if tool_names.count(n) > 1}):
        problems.append(f"tool {name!r} is offered more than once")
    offered = set(tool_names)
    bound: set[str] = set()
    for position, step in enumerate(task.workflow):
        where = f"workflow step {position}"
        if step.index != position:
            problems.append(f"{where} has index {step.index}; steps are numbered 0, 1, 2, ... in order")
        if step.tool is not None and step.tool not in offered:
            problems.append(f"{where} calls tool {step.tool!r}, which the task does not offer")
        for arg, binding in step.bindings.items():
            if arg not in step.arguments:
                problems.append(f"{where} binds {arg!r}, which is not one of its arguments")
            try:
                parsed = parse_binding(binding)
            except BindingError as exc:
                problems.append(f"{where} argument {arg!r} has a malformed binding: {exc}")
                continue
            fact = parsed.fact
            if fact is not None:
                if fact not in facts:
                    problems.append(f"{where} argument {arg!r} is bound to unknown fact {fact!r}")
                else:
                    bound.add(fact)
            if parsed.step is not None and parsed.step >= position:
                problems.append(f"{where} argument {arg!r} reads step {parsed.step}, which is not an earlier step")
            if parsed.kind == "fact" and fact in facts and arg in step.arguments \
                    and _norm(step.arguments[arg]) != _norm(facts[fact].value):
                problems.append(f"{where} argument {arg!r} is {step.arguments[arg]!r}, but fact {fact!r} is "
                                f"{facts[fact].value!r}")
    for name in hidden:
        if name not in bound:
            problems.append(f"hidden fact {name!r} is not bound by any workflow step (no fact:{name} or "
                            f"step:N+fact:{name} binding): the agent never needs to ask for it")
    instruction = _norm(task.instruction)
    for name, hidden_fact in hidden.items():
        value = _norm(hidden_fact.value)
        if len(value) >= 3 and re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", instruction):
            problems.append(f"hidden fact {name!r} shows in the instruction ({hidden_fact.value!r})")
    return problems


def _matching(rows: Any, conditions: dict[str, Any]) -> int:
    return sum(1 for r in rows if all(_norm(r.get(col)) == _norm(v) for col, v in conditions.items()))


def _lookup_rows(task: Task, position: int, without: str | None = None) -> int | None:
    """Rows of the initial database that step ``position``'s lookup matches (ignoring argument ``without``),
    or None when the step has no declarative effect to evaluate."""
    step = task.workflow[position]
    spec = task.tool(step.tool or "")
    if spec is None or spec.effect is None or task.initial_state is None:
        return None
    effect = spec.effect
    conditions = {col: step.arguments[param] for param, col in effect.where.items()
                  if param != without and param in step.arguments}
    conditions.update({col: v for col, v in effect.const.items() if effect.kind == "read"})
    return _matching(task.initial_state.rows.get(effect.table, ()), conditions)


def unneeded_facts(task: Task) -> dict[str, str]:
    """The hidden facts of ``task`` that the agent does not need to reach the gold, each with the reason
    (module docstring); empty when every hidden fact is needed or the task has no database to decide by."""
    out: dict[str, str] = {}
    for fact in task.user_context:
        reasons: list[str] = []
        needed = False
        for position, step in enumerate(task.workflow):
            for arg, text in step.bindings.items():
                try:
                    b = parse_binding(text)
                except BindingError:
                    continue
                if b.fact != fact.name:
                    continue
                spec = task.tool(step.tool or "")
                if spec is None or spec.effect is None or task.initial_state is None:
                    needed = True  # nothing to decide by: assume the tool needs it
                elif b.kind == "step_fact" and b.step is not None and 0 <= b.step < position:
                    rows = _lookup_rows(task, b.step)
                    if rows is None or rows > 1:
                        needed = True
                    else:
                        reasons.append(f"step {b.step}'s lookup returns {rows} row, so step {position} needs no "
                                       f"{fact.name} to pick it")
                elif arg in spec.effect.set or arg in spec.effect.values or arg not in spec.effect.where:
                    needed = True  # its value is written, or passed on as it is
                else:
                    rows = _lookup_rows(task, position, without=arg)
                    if rows is None or rows > 1:
                        needed = True
                    else:
                        reasons.append(f"step {position} ({step.tool}) finds {rows} row without {arg!r}")
        if not needed and reasons:
            out[fact.name] = "; ".join(reasons)
    return out


def needs_a_question(task: Task) -> bool:
    """True when the task hides at least one fact the agent needs (:func:`unneeded_facts`): it teaches asking."""
    unneeded = unneeded_facts(task)
    return any(f.name not in unneeded for f in task.user_context)
