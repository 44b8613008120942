"""Sampling verifiable tasks from a domain: walks on its tools that respect data dependencies.

A walk starts from a row of one table (what the user knows: that row's columns), then repeatedly picks a tool
whose required parameters are all available, from the user's facts or from earlier results, preferring tools
that consume an earlier result. Each call is executed on the domain database, so the walk yields the gold call
sequence and, at the end, the gold final state. A list result contributes one of its rows, singled out by a fact
the user knows about it (``@N[col=$fact]`` in domain-pack terms). Values a write needs that no one has yet (the
new phone number, the status to set) become facts of the user too. Between one and three of the facts the
walk used move into the hidden user context; the others are stated in the instruction.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any

from synthagent.core.models import Fact, Persona, Provenance, StateChange, Task, ToolSpec, WorkflowStep, stable_id
from synthagent.plugins.common.values import in_person, realistic_value
from synthagent.plugins.generators.graph_domains.domains import GraphDomain
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase, compute_changes

__all__ = ["sample_task", "WalkRejected"]


class WalkRejected(Exception):
    """A walk did not make a usable task; ``reason`` is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _words(name: str) -> str:
    return name.replace("_", " ")


def _says(prefix: str, value: Any) -> str:
    """``prefix`` and ``value`` as one sentence; a value that is itself a sentence is quoted (no "noon..")."""
    text = str(value)
    return f'{prefix} "{text}"' if text[-1:] in ".!?" else f"{prefix} {text}."


def first_person(request: str) -> str:
    """A tool description as the user's own request: "place an order for a customer" -> "... for me"."""
    return in_person(request, "first")


def _new_value(spec: ToolSpec, param: str, current: Any, rng: random.Random, taken: Collection[Any] = ()) -> Any:
    prop = (spec.parameters.get("properties", {}) or {}).get(param, {})
    enum = [v for v in prop.get("enum", []) if v != current]
    if enum:
        return rng.choice(enum)
    typ = prop.get("type", "string")
    if typ == "integer":
        return rng.randint(1, 60)
    if typ == "number":
        return round(rng.uniform(10, 500), 2)
    if typ == "boolean":
        return not bool(current)
    entity = spec.effect.table if spec.effect is not None else ""
    return realistic_value(param, prop, rng, entity=entity, current=current, avoid=taken)


def sample_task(domain: GraphDomain, rng: random.Random, *, seed: int, slot: str, generator: str = "graph-domains",
                min_steps: int = 2, max_steps: int = 6, max_hidden: int = 3, max_tools: int = 0) -> Task:
    """One task from a walk on ``domain`` (raises :class:`WalkRejected` with a reason when it fails)."""
    def natural(table_name: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """What a user knows about their own row: its values except keys and references (ids come from tools)."""
        key = domain.state.table(table_name).primary_key
        return {c: v for c, v in row.items() if v is not None and c != key and not c.endswith("_id")}

    def column_of(spec: ToolSpec, param: str) -> str:
        assert spec.effect is not None
        return spec.effect.where.get(param) or spec.effect.set.get(param) or spec.effect.values.get(param) or param

    def has_entry(table_name: str) -> bool:
        cols = {c.name for c in domain.state.table(table_name).columns} - {domain.state.table(table_name).primary_key}
        return any(t.effect is not None and not t.writes and t.effect.table == table_name
                   and t.parameters.get("required")
                   and all(column_of(t, p) in cols and not column_of(t, p).endswith("_id")
                           for p in t.parameters["required"])
                   for t in domain.tools)

    def foreign_keys(table_name: str) -> set[str]:
        return {t.primary_key for t in domain.state.tables if t.name != table_name}

    def lookup(spec: ToolSpec, param: str) -> tuple[Any, str] | None:
        return available.get(param) or available.get(column_of(spec, param))

    tables = [t for t in domain.state.tables if domain.state.rows.get(t.name) and has_entry(t.name)]
    user_knows_key = False
    if not tables:
        # no lookup by a natural attribute: the user knows the id of a root entity (an account number) that
        # some read takes, as a customer quoting their household or account id would
        tables = [t for t in domain.state.tables if domain.state.rows.get(t.name) and any(
            not x.writes and t.primary_key in (x.parameters.get("required") or []) for x in domain.tools)]
        user_knows_key = True
    if not tables:
        raise WalkRejected("no_entry_point")
    table = rng.choice(tables)
    anchor = dict(rng.choice(domain.state.rows[table.name]))
    known = natural(table.name, anchor)
    if user_knows_key:
        known[table.primary_key] = anchor[table.primary_key]
    # name -> (value, binding); the user knows the anchor row's natural attributes, not its ids
    available: dict[str, tuple[Any, str]] = {c: (v, f"fact:{c}") for c, v in known.items()}
    facts: dict[str, tuple[Any, str, str]] = {c: (v, f"your {_words(c)}", _says(f"My {_words(c)} is", v))
                                              for c, v in known.items()}
    target = rng.randint(min_steps, max_steps)
    db = SQLiteDatabase(domain.state)
    steps: list[WorkflowStep] = []
    used_calls: set[str] = set()
    touched: list[tuple[str, str]] = []  # (table, key) each write changed
    last_result: Any = None
    try:
        for index in range(target):
            candidates = []
            for spec in domain.tools:
                props = spec.parameters.get("properties", {}) or {}
                required = spec.parameters.get("required", []) or []
                assert spec.effect is not None
                # another entity's key is looked up, never invented: an order's customer_id comes from the
                # customer found, not from a made-up id the user would not know
                settable = {p for p in set(spec.effect.set) | set(spec.effect.values)
                            if column_of(spec, p) not in foreign_keys(spec.effect.table)}
                if not all(lookup(spec, p) is not None or p in settable for p in required):
                    continue
                derived = any((lookup(spec, p) or (None, ""))[1].startswith("step:") for p in required)
                candidates.append((spec, derived, props, required, settable))
            if not candidates:
                break
            preferred = [c for c in candidates if c[1]] if index else [c for c in candidates if not c[0].writes]
            spec, _, props, required, settable = rng.choice(preferred or candidates)
            args: dict[str, Any] = {}
            bindings: dict[str, str] = {}
            for p in required:
                found = lookup(spec, p)
                if found is not None and p not in (set(spec.effect.set) if spec.effect else set()):
                    args[p], bindings[p] = found
            # a column an earlier step set gets no second new value: both would be the one fact new_<column>
            if any(f"new_{p}" in facts for p in required if p in settable and p not in args):
                continue
            for p in sorted(settable):
                if p in args or (p not in required and rng.random() < 0.5 and args):
                    continue
                name = f"new_{p}"
                if name in facts:
                    continue
                current = available.get(p, (None, ""))[0]
                # values other rows hold (a JSON column's lists are not compared: they are not hashable)
                taken = {v for r in domain.state.rows.get(spec.effect.table, ())
                         if not isinstance(v := r.get(column_of(spec, p)), (list, dict))} \
                    if spec.effect is not None else set()
                value = _new_value(spec, p, current, rng, taken)
                facts[name] = (value, f"the new {_words(p)}", _says(f"The new {_words(p)} should be", value))
                args[p], bindings[p] = value, f"fact:{name}"
            if not args:
                continue
            signature = f"{spec.name}:{sorted(args.items(), key=str)}"
            if signature in used_calls:
                continue
            result = db.execute(spec, args)
            if "error" in result:
                continue  # e.g. a precondition this row does not meet: try another tool next round
            used_calls.add(signature)
            if spec.writes and spec.effect is not None and isinstance(result, Mapping):
                pk = domain.state.table(spec.effect.table).primary_key
                touched.append((spec.effect.table, str(result.get("deleted", result.get(pk)))))
            step_no = len(steps)
            steps.append(WorkflowStep(step_no, spec.description, spec.name, args, bindings, spec.writes))
            last_result = result
            if isinstance(result, Mapping) and isinstance(result.get("items"), list):
                items = [r for r in result["items"] if isinstance(r, Mapping)]
                if not items:
                    continue
                item = rng.choice(items)
                unique = [c for c, v in item.items() if isinstance(v, str) and c not in available
                          and sum(1 for r in items if r.get(c) == v) == 1 and not c.endswith("_id")]
                if len(items) > 1 and not unique:
                    continue
                if len(items) > 1:
                    col = rng.choice(sorted(unique))
                    fname = f"{spec.effect.table if spec.effect else 'item'}_{col}"
                    facts[fname] = (item[col], f"the {_words(col)} of the {_words(spec.effect.table if spec.effect else 'item')}",
                                    _says(f"It's the one with {_words(col)}", item[col]))
                    source = f"step:{step_no}+fact:{fname}"
                else:
                    source = f"step:{step_no}"
                for c, v in item.items():
                    if v is not None and not (c in available and available[c][1].startswith("fact:")):
                        available[c] = (v, source)
            elif isinstance(result, Mapping):
                for c, v in result.items():
                    if v is not None and not (c in available and available[c][1].startswith("fact:")):
                        available[c] = (v, f"step:{step_no}")
        final_rows = db.rows()
        digest = db.digest()
    finally:
        db.close()
    if len(steps) < min_steps:
        raise WalkRejected("too_short")
    if not any(b.startswith("step:") for s in steps for b in s.bindings.values()):
        raise WalkRejected("no_dependency")
    writes = [s for s in steps if s.writes]
    changes = compute_changes(domain.state, final_rows)
    if writes and not changes:
        raise WalkRejected("noop_write")  # doing nothing would match the gold state
    if any(key not in changes.get(table_name, {}) for table_name, key in touched):
        raise WalkRejected("write_undone")  # a later write undid an earlier one: the state could not tell
    answer: tuple[Any, ...] = ()
    if not writes:
        if not isinstance(last_result, Mapping) or "items" in last_result:
            raise WalkRejected("read_only_without_answer")
        last_spec = domain.tool(steps[-1].tool or "")
        key = last_spec.effect.key if last_spec.effect else None
        options = [v for c, v in last_result.items() if c != key and v is not None and not str(c).endswith("_id")]
        if not options:
            raise WalkRejected("read_only_without_answer")
        answer = (rng.choice(options),)
    used = sorted({b.split("fact:", 1)[1] for s in steps for b in s.bindings.values() if "fact:" in b})
    if not used:
        raise WalkRejected("no_user_facts")
    k = rng.randint(1, min(max_hidden, len(used)))
    hidden = sorted(rng.sample(used, k))
    made = {}
    for name in used:
        value, description, statement = facts[name]
        keywords = (f"new {_words(name[4:])}",) if name.startswith("new_") else (_words(name),)
        made[name] = Fact(name, value, description, keywords, statement)
    # a question about one fact must not reveal another: no keyword inside another fact's keyword or description
    for a in made.values():
        for b in made.values():
            if a.name != b.name and any(k in b.keywords[0] or k in b.description for k in a.keywords):
                raise WalkRejected("ambiguous_facts")
    visible = [made[n] for n in used if n not in hidden]
    if writes:
        intent = "I need help: " + "; then ".join(first_person(s.description.rstrip(".").lower()) for s in writes) + "."
    else:
        intent = f"Can you help me find something? I need to {first_person(steps[-1].description.rstrip('.').lower())}."
    instruction = " ".join([intent, *(f.statement for f in visible)])
    for name in hidden:
        if str(made[name].value).lower() in instruction.lower():
            raise WalkRejected("hidden_value_visible")
    tool_names = {s.tool for s in steps}
    tools = domain.tools
    if max_tools and len(tools) > max_tools:
        extra = [t for t in tools if t.name not in tool_names]
        keep = tool_names | {t.name for t in rng.sample(extra, max(0, min(len(extra), max_tools - len(tool_names))))}
        tools = tuple(t for t in tools if t.name in keep)
    person = next((v for c, v in anchor.items() if "name" in c and isinstance(v, str)), None)
    task_id = stable_id("task", generator, domain.name, seed, slot, [(s.tool, s.arguments) for s in steps], hidden)
    return Task(
        id=task_id, domain=domain.name,
        persona=Persona(f"{domain.name}:{anchor[table.primary_key]}", f"{person or 'a customer'} of {_words(domain.name)}"),
        system_prompt=(f"You are a support agent for {_words(domain.name)}. Use the tools to look things up and make "
                       "changes the user asks for; ask the user for any detail you need that you cannot look up."),
        tools=tools, instruction=instruction,
        full_instruction=" ".join([intent, *(made[n].statement for n in used)]),
        user_context=tuple(made[n] for n in hidden), visible_facts=tuple(visible), workflow=tuple(steps),
        answer=answer, initial_state=domain.state,
        gold_state=StateChange(digest, compute_changes(domain.state, final_rows)),
        provenance=Provenance(generator=generator, seed=seed, slot=slot, template=domain.name),
    )
