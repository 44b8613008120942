"""Executable per-instance checkers: a small declarative language, offline derivation and validation.

A checker is plain data (JSON), never code: teacher-written checkers are parsed against a closed grammar and
evaluated by this module. A checker passes when every assertion in ``all`` holds::

    {"id": "cancel-T0058", "description": "the transfer is cancelled exactly once",
     "all": [{"state": {"table": "transactions", "key": "T0058", "deleted": true}},
             {"call": {"tool": "cancel_pending_transfer", "args": {"transaction_id": "T0058"}, "min": 1, "max": 1}}]}

Assertions:

``{"state": {"table": T, "key": K, "deleted": true}}``            row ``K`` of ``T`` is gone at the end
``{"state": {"table": T, "key": K, "field": F, "equals": V}}``    row ``K`` has ``F == V`` at the end (``V``
                                                                  may be a list or object: compared as a whole)
``{"state": {"table": T, "unchanged": true}}``                    no row of ``T`` changed
``{"call": {"tool": N, "args": {...}, "min": 1, "max": null}}``   number of successful calls of ``N`` whose
                                                                  arguments include ``args`` is in range (an
                                                                  argument's value may be nested JSON)
``{"order": [N1, N2]}``                                           the first successful ``N1`` call precedes
                                                                  the first successful ``N2`` call
``{"answer": {"contains": V}}`` / ``{"answer": {"excludes": V}}`` the final answer mentions (or not) ``V``
``{"not": ASSERTION}``                                            negation

A checker is *kept* only if it passes on every successful teacher demonstration and fails on at least one
perturbed copy of a demonstration (:func:`perturbations`: a call dropped, a write's argument changed, an
extra write, the answer removed or falsified, each re-executed on a fresh copy of the database). A checker
that cannot fail is discarded and counted, as is one the demonstration fails.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from synthagent.core.models import Message, Task, ToolCall, Trajectory, state_digest
from synthagent.plugins.common.corruptions import extra_write, perturb_value, wrong_value
from synthagent.plugins.common.evidence import executed_calls, mentions_value, values_match
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase, compute_changes

__all__ = ["CheckerError", "parse_checker", "evaluate", "derive_checkers", "perturbations", "validate_checkers",
           "final_answer"]


class CheckerError(ValueError):
    """A checker does not follow the grammar (the message says where)."""


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise CheckerError(f"{where}: {what}")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _json_value(value: Any, depth: int = 0) -> bool:
    """A JSON value: a scalar (finite numbers only), or a list / object (string keys) of JSON values."""
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if _scalar(value):
        return True
    if depth >= 32:
        return False
    if isinstance(value, (list, tuple)):
        return all(_json_value(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _json_value(v, depth + 1) for k, v in value.items())
    return False


def _parse_assertion(a: Any, where: str) -> dict[str, Any]:
    _need(isinstance(a, Mapping) and len(a) == 1, where, "an assertion is a table with exactly one key")
    (kind, body), = a.items()
    if kind == "not":
        return {"not": _parse_assertion(body, f"{where}.not")}
    _need(kind in ("state", "call", "order", "answer"), where, f"unknown assertion {kind!r}")
    if kind == "order":
        _need(isinstance(body, list) and len(body) == 2 and all(isinstance(x, str) and x for x in body),
              where, "order takes two tool names")
        return {"order": list(body)}
    _need(isinstance(body, Mapping), where, f"{kind} takes a table")
    if kind == "state":
        _need(isinstance(body.get("table"), str), where, "state needs a table name")
        keys = set(body)
        if body.get("unchanged") is True:
            _need(keys == {"table", "unchanged"}, where, "unchanged takes only table")
        elif body.get("deleted") is True:
            _need(keys == {"table", "key", "deleted"} and _scalar(body["key"]), where, "deleted takes table and key")
        else:
            _need(keys == {"table", "key", "field", "equals"} and isinstance(body["field"], str)
                  and _scalar(body["key"]) and _json_value(body["equals"]), where,
                  "state takes {table, key, field, equals}, {table, key, deleted: true} or {table, unchanged: true}")
        return {"state": dict(body)}
    if kind == "call":
        _need(isinstance(body.get("tool"), str) and set(body) <= {"tool", "args", "min", "max"}, where,
              "call takes tool, args, min, max")
        args = body.get("args", {})
        _need(isinstance(args, Mapping) and all(isinstance(k, str) for k in args)
              and all(_json_value(v) for v in args.values()), where,
              "args maps names to JSON values (scalars, lists or objects)")
        lo, hi = body.get("min", 1), body.get("max")
        _need(isinstance(lo, int) and not isinstance(lo, bool) and lo >= 0, where, "min is an integer >= 0")
        _need(hi is None or (isinstance(hi, int) and not isinstance(hi, bool) and hi >= lo), where, "max >= min or null")
        return {"call": {"tool": body["tool"], "args": dict(args), "min": lo, "max": hi}}
    _need(set(body) in ({"contains"}, {"excludes"}) and _scalar(next(iter(body.values()))), where,
          "answer takes contains or excludes with a value")
    return {"answer": dict(body)}


def parse_checker(data: Any) -> dict[str, Any]:
    """Validate a checker against the grammar and return its normal form (raises :class:`CheckerError`)."""
    _need(isinstance(data, Mapping), "checker", "expected a table")
    where = f"checker {data.get('id', '?')!r}"
    _need(isinstance(data.get("id"), str) and data["id"], where, "needs a non-empty id")
    _need(isinstance(data.get("all"), list) and data["all"], where, "needs a non-empty 'all' list")
    _need(set(data) <= {"id", "description", "all"}, where, f"unknown keys {sorted(set(data) - {'id', 'description', 'all'})}")
    return {"id": data["id"], "description": str(data.get("description", "")),
            "all": [_parse_assertion(a, f"{where}.all[{i}]") for i, a in enumerate(data["all"])]}


def final_answer(messages: Sequence[Message]) -> str:
    """The last assistant message without tool calls (the agent's final answer), or ``""``."""
    return next((m.content or "" for m in reversed(messages) if m.role == "assistant" and not m.tool_calls), "")


def _row(task: Task, traj: Trajectory, table: str, key: Any) -> tuple[bool, dict[str, Any] | None]:
    """(known, row) at the end of the trajectory: a changed row, else the initial row."""
    changes = traj.final_state_changes.get(table, {})
    if str(key) in changes:
        return True, changes[str(key)]
    if task.initial_state is None:
        return False, None
    try:
        pk = task.initial_state.table(table).primary_key
    except KeyError:
        return True, None
    row = next((r for r in task.initial_state.rows.get(table, ()) if str(r.get(pk)) == str(key)), None)
    return True, dict(row) if row is not None else None


def _holds(a: Mapping[str, Any], task: Task, traj: Trajectory, calls: list[ToolCall]) -> tuple[bool, str]:
    if "not" in a:
        ok, why = _holds(a["not"], task, traj, calls)
        return not ok, f"not ({why})"
    if "state" in a:
        s = a["state"]
        if s.get("unchanged"):
            changed = sorted(traj.final_state_changes.get(s["table"], {}))
            return not changed, f"{s['table']} unchanged" if not changed else f"{s['table']} rows changed: {changed[:5]}"
        known, row = _row(task, traj, s["table"], s["key"])
        if not known:
            return False, "no database state to check"
        if s.get("deleted"):
            return row is None, f"{s['table']}[{s['key']}] " + ("deleted" if row is None else "still present")
        if row is None:
            return False, f"{s['table']}[{s['key']}] does not exist"
        actual = row.get(s["field"])
        return values_match({"v": s["equals"]}, {"v": actual}), f"{s['table']}[{s['key']}].{s['field']} = {actual!r}"
    if "call" in a:
        c = a["call"]
        n = sum(1 for call in calls if call.name == c["tool"] and values_match(c["args"], call.arguments))
        ok = n >= c["min"] and (c["max"] is None or n <= c["max"])
        return ok, f"{n} successful {c['tool']} call(s) matching {c['args']}"
    if "order" in a:
        first, second = a["order"]
        names = [call.name for call in calls]
        if first not in names or second not in names:
            return False, f"{first} or {second} never succeeded"
        return names.index(first) < names.index(second), f"first {first} at {names.index(first)}, {second} at {names.index(second)}"
    text = final_answer(traj.messages)
    if "contains" in a["answer"]:
        v = a["answer"]["contains"]
        return mentions_value(text, v), f"answer {'mentions' if mentions_value(text, v) else 'lacks'} {v!r}"
    v = a["answer"]["excludes"]
    return not mentions_value(text, v), f"answer {'mentions' if mentions_value(text, v) else 'lacks'} {v!r}"


def evaluate(checker: Mapping[str, Any], task: Task, trajectory: Trajectory) -> tuple[bool, str]:
    """Run a (parsed) checker on a trajectory: ``(passed, evidence)``; evidence names the first failure."""
    calls = [call for call, ok in executed_calls(trajectory.messages) if ok]
    for a in checker["all"]:
        ok, why = _holds(a, task, trajectory, calls)
        if not ok:
            return False, why
    return True, f"{len(checker['all'])} assertion(s) hold"


def derive_checkers(task: Task, report: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Candidate checkers derived offline from the gold workflow, the gold state and the report values.

    Candidates are not yet validated: :func:`validate_checkers` keeps only those that can fail.
    """
    out: list[dict[str, Any]] = []
    gold = task.gold_state.changes if task.gold_state else {}
    initial = task.initial_state
    for table, rows in sorted(gold.items()):
        for key, row in sorted(rows.items()):
            if row is None:
                out.append({"id": f"state-{table}-{key}-deleted", "description": f"{table} {key} is deleted",
                            "all": [{"state": {"table": table, "key": key, "deleted": True}}]})
                continue
            before: Mapping[str, Any] = {}
            if initial is not None:
                pk = initial.table(table).primary_key
                before = next((r for r in initial.rows.get(table, ()) if str(r.get(pk)) == key), {})
            fields = [f for f in sorted(row) if before.get(f, object()) != row[f]]
            out.append({"id": f"state-{table}-{key}", "description": f"{table} {key} ends as in the gold state",
                        "all": [{"state": {"table": table, "key": key, "field": f, "equals": row[f]}} for f in fields]})
    written = {t.effect.table for t in task.tools if t.writes and t.effect is not None}
    for table in sorted(written - set(gold)):
        out.append({"id": f"unchanged-{table}", "description": f"no row of {table} changes",
                    "all": [{"state": {"table": table, "unchanged": True}}]})
    for step in task.workflow:
        if step.tool and step.writes:
            out.append({"id": f"write-{step.index}-once", "description": f"{step.tool} is applied exactly once",
                        "all": [{"call": {"tool": step.tool, "args": dict(step.arguments), "min": 1, "max": 1}}]})
        if step.tool and not step.writes:
            out.append({"id": f"read-{step.index}", "description": f"{step.tool} is consulted",
                        "all": [{"call": {"tool": step.tool, "args": dict(step.arguments), "min": 1, "max": None}}]})
    tools_by_index = {s.index: s.tool for s in task.workflow if s.tool}
    for step in task.workflow:
        deps = sorted({int(p.split(":")[1]) for b in step.bindings.values() for p in b.split("+")
                       if p.startswith("step:") and p.split(":")[1].isdigit()})
        for d in deps:
            if step.tool and tools_by_index.get(d) and tools_by_index[d] != step.tool:
                out.append({"id": f"order-{d}-{step.index}", "description": f"{tools_by_index[d]} before {step.tool}",
                            "all": [{"order": [tools_by_index[d], step.tool]}]})
    for i, value in enumerate(report):
        if _scalar(value):
            out.append({"id": f"answer-{i}", "description": f"the answer reports {value!r}",
                        "all": [{"answer": {"contains": value}}]})
    return [parse_checker(c) for c in out]


def _replay(task: Task, demo: Trajectory, calls: list[ToolCall | None], answer: str | None,
            extra: ToolCall | None = None) -> Trajectory:
    """The demonstration with its calls replaced (``None`` drops one) and re-executed on a fresh database."""
    db = SQLiteDatabase(task.initial_state) if task.initial_state is not None else None
    original = [c for m in demo.messages if m.role == "assistant" for c in m.tool_calls]
    swap = {c.id: new for c, new in zip(original, calls)}
    messages: list[Message] = []

    def run(call: ToolCall) -> str:
        spec = task.tool(call.name)
        if db is None:
            return "{}"
        if spec is None:
            return json.dumps({"error": "unknown_tool"})
        return json.dumps(db.execute(spec, call.arguments), sort_keys=True, default=str)

    try:
        for m in demo.messages:
            if m.role == "assistant" and m.tool_calls:
                kept = []
                for c in m.tool_calls:
                    new = swap.get(c.id, c)
                    if new is not None:
                        kept.append(new)
                if kept:
                    messages.append(attrs.evolve(m, tool_calls=tuple(kept)))
                    messages.extend(Message("tool", run(c), tool_call_id=c.id) for c in kept)
            elif m.role == "tool":
                continue  # re-executed above
            else:
                messages.append(m)
        if extra is not None:
            messages.append(Message("assistant", None, (extra,)))
            messages.append(Message("tool", run(extra), tool_call_id=extra.id))
        if answer is not None:
            last = max((i for i, m in enumerate(messages) if m.role == "assistant" and not m.tool_calls), default=None)
            if last is not None:
                messages[last] = Message("assistant", answer)
        if db is None or task.initial_state is None:
            return attrs.evolve(demo, messages=tuple(messages))
        rows = db.rows()
        keys = {t.name: t.primary_key for t in task.initial_state.tables}
        return attrs.evolve(demo, messages=tuple(messages), final_state_digest=state_digest(rows, keys),
                            final_state_changes=compute_changes(task.initial_state, rows))
    finally:
        if db is not None:
            db.close()


def perturbations(task: Task, demo: Trajectory, report: Sequence[Any] = ()) -> list[tuple[str, Trajectory]]:
    """Perturbed copies of a demonstration, each named, re-executed on a fresh database."""
    calls = [c for m in demo.messages if m.role == "assistant" for c in m.tool_calls]
    out: list[tuple[str, Trajectory]] = []
    for i, call in enumerate(calls):
        dropped: list[ToolCall | None] = list(calls)
        dropped[i] = None
        out.append((f"drop {call.name}#{i}", _replay(task, demo, dropped, None)))
        spec = task.tool(call.name)
        if spec is not None and spec.writes and call.arguments:
            name = sorted(call.arguments)[0]
            changed: list[ToolCall | None] = list(calls)
            changed[i] = attrs.evolve(call, arguments={**call.arguments, name: perturb_value(call.arguments[name])})
            out.append((f"perturb {call.name}#{i}.{name}", _replay(task, demo, changed, None)))
    extra = extra_write(task)
    if extra is not None:
        out.append(("extra write", _replay(task, demo, list(calls), None,
                                           ToolCall(id="call_extra", name=extra[0], arguments=extra[1]))))
    out.append(("no answer", _replay(task, demo, list(calls), "Done.")))
    if report:
        wrong = "Done. " + ", ".join(str(wrong_value(v)) for v in report) + "."
        out.append(("wrong answer", _replay(task, demo, list(calls), wrong)))
    return out


def validate_checkers(checkers: Sequence[Mapping[str, Any]], task: Task, demos: Sequence[Trajectory],
                      report: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Keep checkers that pass on every demonstration and fail on at least one perturbation.

    :returns: the kept checkers and counts ``kept``, ``cannot_fail``, ``demo_failed``.
    """
    counts = {"kept": 0, "cannot_fail": 0, "demo_failed": 0}
    if not demos:
        return [], counts
    perturbed = [t for demo in demos[:1] for _, t in perturbations(task, demo, report)]
    kept = []
    for checker in checkers:
        if not all(evaluate(checker, task, d)[0] for d in demos):
            counts["demo_failed"] += 1
        elif all(evaluate(checker, task, p)[0] for p in perturbed):
            counts["cannot_fail"] += 1
        else:
            counts["kept"] += 1
            kept.append(dict(checker))
    return kept, counts
