"""Plausible wrong versions of values and calls.

The ``oracle`` backend plays them as corruptions of its demonstrations; checker validation
(:mod:`synthagent.plugins.rubrics.checkers`) uses them to perturb a demonstration and keep only checkers that
can fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from synthagent.core.models import Task, ToolSpec
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase

__all__ = ["default_for", "perturb_value", "wrong_value", "extra_write"]


def default_for(schema: dict[str, Any]) -> Any:
    """A value that fits a parameter's JSON schema: its first enum value or a type default."""
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    return {"integer": 1, "number": 1.0, "boolean": True}.get(schema.get("type", "string"), "unexpected")


def extra_write(task: Task) -> tuple[str, dict[str, Any]] | None:
    """A write (tool name, arguments) that succeeds on the initial database, changes it, and is not part of
    the workflow; None when there is none (a write of the value already there changes nothing, so it is not
    offered as a corruption)."""
    if task.initial_state is None:
        return None
    gold = {s.tool for s in task.workflow if s.writes}
    candidates: list[tuple[ToolSpec, dict[str, Any]]] = []
    for spec in sorted(task.tools, key=lambda t: (t.name in gold, {"insert": 0, "update": 1, "delete": 2}.get(
            t.effect.kind if t.effect else "", 3))):
        if not spec.writes or spec.effect is None:
            continue
        props = spec.parameters.get("properties", {})
        base = {p: default_for(props[p]) for p in spec.parameters.get("required", []) if p in props}
        if spec.effect.kind == "insert":
            candidates.append((spec, base))
            continue
        rows = task.initial_state.rows.get(spec.effect.table, ())
        touched = set((task.gold_state.changes if task.gold_state else {}).get(spec.effect.table, {}))
        key = task.initial_state.table(spec.effect.table).primary_key
        for row in rows:
            if str(row.get(key)) in touched:
                continue
            args = dict(base)
            args.update({p: row[c] for p, c in spec.effect.where.items()})
            for p, c in spec.effect.set.items():
                if p in args and args[p] == row.get(c):
                    args[p] = default_for(props.get(p, {}))
            candidates.append((spec, args))
    before = task.initial_state.digest()
    for spec, args in candidates:
        db = SQLiteDatabase(task.initial_state)
        try:  # a write that changes nothing (the value it sets is the one there) is no corruption
            if "error" not in db.execute(spec, args) and db.digest() != before:
                return spec.name, args
        finally:
            db.close()
    return None


def perturb_value(value: Any) -> Any:
    """A different value of the same JSON type: the negation, the next number, the text with ``-x``; nested
    values change one element, keeping their shape."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, (list, tuple)):
        return [perturb_value(value[0]), *value[1:]] if value else ["x"]
    if isinstance(value, Mapping):
        if not value:
            return {"x": "x"}
        first = sorted(value)[0]
        return {**value, first: perturb_value(value[first])}
    return f"{value}-x"


def wrong_value(value: Any) -> Any:
    """A plausible but wrong version of a reported value: the next number, the next identifier
    (``T0058`` -> ``T0059``), or for other text a different word."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    text = str(value)
    digits = re.search(r"(\d+)(?!.*\d)", text)
    if digits:
        n = str(int(digits.group(1)) + 1).zfill(len(digits.group(1)))
        return text[:digits.start(1)] + n + text[digits.end(1):]
    return f"{text}-x"
