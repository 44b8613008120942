"""Where a workflow argument comes from: the one parser and resolver of ``WorkflowStep.bindings``.

A binding is a short string (used by generators, the task checker, the tool simulator and the scorer):

* ``literal``: the value written in the workflow;
* ``fact:NAME``: a hidden (or visible) fact of the user;
* ``step:N``: step N's output as a whole (legacy form, never resolved to a value);
* ``step:N+fact:NAME``: a value picked from step N's result by a fact (the offline packs' form);
* ``step:N:$.path.to[0].field``: the value at a JSON path in step N's output (N earlier than the step).

:func:`parse_binding` turns text into a :class:`Binding` (or raises :class:`BindingError`, one line);
:func:`binding_problems` checks a whole step's bindings (never raises); :func:`resolve` finds the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["Binding", "BindingError", "parse_binding", "parse_path", "get_path", "resolve", "binding_problems",
           "MISSING"]

#: What :func:`get_path` and :func:`resolve` return when there is no value.
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()

_FACT = re.compile(r"^fact:([A-Za-z_][A-Za-z0-9_]{0,63})$")
_STEP = re.compile(r"^step:(\d{1,3})$")
_STEP_FACT = re.compile(r"^step:(\d{1,3})\+fact:([A-Za-z_][A-Za-z0-9_]{0,63})$")
_STEP_PATH = re.compile(r"^step:(\d{1,3}):(\$.*)$", re.S)
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]{0,63})|\[(\d{1,4})\]|\[\"([^\"]{1,64})\"\]")


class BindingError(ValueError):
    """A binding that does not parse; the message says why in one line."""


@attrs.frozen
class Binding:
    """A parsed binding: ``kind`` is ``literal``, ``fact``, ``step``, ``step_fact`` or ``step_path``."""

    kind: str
    step: int | None = None
    fact: str | None = None
    path: tuple[str | int, ...] = ()

    @property
    def text(self) -> str:
        """The binding written back as text."""
        if self.kind == "literal":
            return "literal"
        if self.kind == "fact":
            return f"fact:{self.fact}"
        if self.kind == "step":
            return f"step:{self.step}"
        if self.kind == "step_fact":
            return f"step:{self.step}+fact:{self.fact}"
        return f"step:{self.step}:$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)


def parse_path(text: str) -> tuple[str | int, ...]:
    """``$.a.b[0]`` -> ``("a", "b", 0)``. :raises BindingError: not a simple JSON path."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise BindingError(f"a JSON path starts with '$', got {str(text)[:60]!r}")
    out: list[str | int] = []
    pos = 1
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None:
            raise BindingError(f"malformed JSON path {text[:80]!r} at position {pos} (use $.field, [0] or [\"key\"])")
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)) if m.group(2) is not None else m.group(3))
        pos = m.end()
    if not out:
        raise BindingError(f"the JSON path {text!r} names no field")
    return tuple(out)


def parse_binding(text: Any) -> Binding:
    """Parse one binding. :raises BindingError: the text is not a binding (one line)."""
    if not isinstance(text, str):
        raise BindingError(f"a binding must be a string, got {type(text).__name__}")
    t = text.strip()
    if t == "literal":
        return Binding("literal")
    if m := _FACT.match(t):
        return Binding("fact", fact=m.group(1))
    if m := _STEP.match(t):
        return Binding("step", step=int(m.group(1)))
    if m := _STEP_FACT.match(t):
        return Binding("step_fact", step=int(m.group(1)), fact=m.group(2))
    if m := _STEP_PATH.match(t):
        return Binding("step_path", step=int(m.group(1)), path=parse_path(m.group(2)))
    raise BindingError(f"unknown binding {t[:80]!r}: use literal, fact:NAME, step:N:$.path or step:N+fact:NAME")


def get_path(value: Any, path: Sequence[str | int]) -> Any:
    """The value at ``path`` in a JSON value, or :data:`MISSING` (never raises)."""
    for key in path:
        if isinstance(key, int) and isinstance(value, list) and not isinstance(key, bool):
            if not -len(value) <= key < len(value):
                return MISSING
            value = value[key]
        elif isinstance(key, str) and isinstance(value, Mapping):
            if key not in value:
                return MISSING
            value = value[key]
        else:
            return MISSING
    return value


def resolve(binding: Binding | str, step_outputs: Mapping[int, Any] | Sequence[Any], facts: Mapping[str, Any],
            literal: Any = MISSING) -> Any:
    """The value a binding stands for: a fact's value, the value at a path in an earlier step's output, or
    ``literal``; :data:`MISSING` when it cannot be found (never raises on data)."""
    b = parse_binding(binding) if isinstance(binding, str) else binding
    if b.kind == "fact":
        return facts.get(b.fact, MISSING) if b.fact is not None else MISSING
    if b.kind == "step_path":
        outputs = step_outputs if isinstance(step_outputs, Mapping) else dict(enumerate(step_outputs))
        if b.step not in outputs:
            return MISSING
        return get_path(outputs[b.step], b.path)
    return literal


def binding_problems(bindings: Any, index: int, facts: Sequence[str] = (), arguments: Any = None) -> list[str]:
    """What is wrong with one step's bindings (never raises): not a mapping, unparseable entries, a step
    reference that is not earlier than ``index``, a fact not in ``facts`` (when given), a binding for an
    argument the step does not have (when ``arguments`` is given)."""
    if bindings is None:
        return []
    if not isinstance(bindings, Mapping):
        return [f"bindings must be an object of argument -> binding, got {type(bindings).__name__}"]
    problems = []
    for arg, text in bindings.items():
        try:
            b = parse_binding(text)
        except BindingError as exc:
            problems.append(f"binding of {str(arg)[:40]!r}: {exc}")
            continue
        if b.step is not None and not 0 <= b.step < index:
            problems.append(f"binding of {str(arg)[:40]!r} refers to step {b.step}, which is not an earlier step "
                            f"(this is step {index})")
        if b.fact is not None and facts and b.fact not in facts:
            problems.append(f"binding of {str(arg)[:40]!r} names an unknown fact {b.fact!r}")
        if isinstance(arguments, Mapping) and arg not in arguments:
            problems.append(f"binding for {str(arg)[:40]!r}, which is not an argument of this step")
    return problems
