"""Loading, validating and instantiating domain packs (format: ``docs/domain-packs.md``).

A domain file is data only: tools become parameterized SQL through :mod:`synthagent.plugins.simulators.tools.sqlite`,
and scenario references (``$fact``, ``@N.col``, ``@N[col=$fact].col2``) are resolved by the small interpreter
below. Every problem is reported as ``file: $.json.path: what is wrong``.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.errors import DomainError
from synthagent.core.models import (
    Column,
    DatabaseState,
    Effect,
    Fact,
    Persona,
    Provenance,
    StateChange,
    Table,
    Task,
    ToolSpec,
    WorkflowStep,
    stable_id,
)
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase, compute_changes

__all__ = [
    "Scenario",
    "Domain",
    "Rejected",
    "load_domain",
    "load_pack",
    "builtin_domains_dir",
    "instantiate",
    "anchor_rows",
]

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_REF_STEP = re.compile(r"^@(\d+)\.([a-z][a-z0-9_]*)$")
_REF_PICK = re.compile(r"^@(\d+)\[([a-z][a-z0-9_]*)=\$([a-z][a-z0-9_]*)\]\.([a-z][a-z0-9_]*)$")
_REF_FACT = re.compile(r"^\$([a-z][a-z0-9_]*)$")
_TYPES = {"TEXT", "INTEGER", "REAL", "JSON"}
_PARAM_TYPES = ("string", "integer", "number", "boolean", "array", "object")
#: SQLite's INTEGER range: a larger integer cannot be stored.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_SCALAR = (str, int, float, bool, type(None))
_NAMES = {str: "a string", bool: "true or false", list: "a list", Mapping: "an object", int: "an integer"}


def _value_problem(value: Any, nested: bool, depth: int = 0) -> str | None:
    """Why ``value`` cannot be stored (``None`` if it can): nested values only where allowed, integers
    within SQLite's 64-bit range, finite numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        return None if INT_MIN <= value <= INT_MAX else f"integer {value} is outside SQLite's 64-bit range"
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else f"{value} is not a finite number"
    if isinstance(value, (list, Mapping)):
        if not nested:
            return f"must be a scalar (string, number, boolean or null), got {'a list' if isinstance(value, list) else 'an object'}"
        if depth > 32:
            return "nested more than 32 levels deep"
        items = value.values() if isinstance(value, Mapping) else value
        return next((q for q in (_value_problem(v, True, depth + 1) for v in items) if q), None)
    return f"unsupported value {value!r}"


def _shape(value: Any, kind: Any, path: str, p: _Problems) -> bool:
    """Check ``value`` is of ``kind`` (a type or tuple of types); report ``path`` and return False if not."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (bool not in kinds and int in kinds and isinstance(value, bool)):
        return True
    want = " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
    p.add(path, f"must be {want}, got {type(value).__name__} {json.dumps(value, default=str)[:60]}")
    return False


#: The keys each object of a domain file may have (docs/domain-packs.md); any other key is refused with a
#: "did you mean" hint, since the loader would otherwise ignore a misspelled one (``answr``, ``joins``).
PACK_KEYS: dict[str, frozenset[str]] = {
    "domain": frozenset({"name", "policy", "description", "tables", "rows", "tools", "scenarios"}),
    "table": frozenset({"columns", "primary_key"}),
    "tool": frozenset({"name", "description", "parameters", "effect", "returns"}),
    "parameters": frozenset({"type", "properties", "required"}),
    "effect": frozenset({"kind", "table", "where", "set", "values", "const", "require", "columns", "many",
                         "order_by", "key", "key_prefix"}),
    "scenario": frozenset({"id", "intent", "anchor", "join", "facts", "hideable", "steps", "answer"}),
    "anchor": frozenset({"table", "where"}),
    "join": frozenset({"table", "key"}),
    "fact": frozenset({"value", "description", "keywords", "say"}),
    "step": frozenset({"tool", "args", "description"}),
}


def _unknown_keys(d: Mapping[str, Any], what: str, path: str, p: _Problems) -> None:
    """Report every key of ``d`` (a ``what`` object, see :data:`PACK_KEYS`) the loader does not read."""
    import difflib

    allowed = PACK_KEYS[what]
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys here: {', '.join(sorted(allowed))}"
            p.add(f"{path}.{key}", f"unknown {what} key {key!r}{hint}")


def _check_shapes(raw: Mapping[str, Any], p: _Problems) -> None:
    """Structural types of every field the loader reads (so a list where a name belongs is reported with its
    JSON path instead of failing later), and no key it does not read (:data:`PACK_KEYS`). Semantic checks
    follow in :func:`load_domain`."""
    def obj(value: Any, path: str, what: str | None = None) -> Mapping[str, Any]:
        ok = value if _shape(value, Mapping, path, p) else {}
        if what is not None:
            _unknown_keys(ok, what, path, p)
        return ok

    _unknown_keys(raw, "domain", "$", p)

    def lst(value: Any, path: str) -> list[Any]:
        return value if _shape(value, list, path, p) else []

    def opt(d: Mapping[str, Any], key: str, kind: Any, path: str) -> None:
        if key in d and d[key] is not None:
            _shape(d[key], kind, f"{path}.{key}", p)

    for tname, tdef in obj(raw.get("tables", {}), "$.tables").items():
        t = obj(tdef, f"$.tables.{tname}", "table")
        opt(t, "primary_key", str, f"$.tables.{tname}")
        for cname, ctype in obj(t.get("columns", {}), f"$.tables.{tname}.columns").items():
            _shape(ctype, str, f"$.tables.{tname}.columns.{cname}", p)
    for tname, trows in obj(raw.get("rows", {}), "$.rows").items():
        lst(trows, f"$.rows.{tname}")
    for i, tdef in enumerate(lst(raw.get("tools", []), "$.tools")):
        tp = f"$.tools[{i}]"
        t = obj(tdef, tp, "tool")
        for key in ("name", "description"):
            opt(t, key, str, tp)
        params = obj(t.get("parameters", {}), f"{tp}.parameters", "parameters")
        for pname, pdef in obj(params.get("properties", {}), f"{tp}.parameters.properties").items():
            obj(pdef, f"{tp}.parameters.properties.{pname}")
        for j, req in enumerate(lst(params.get("required", []), f"{tp}.parameters.required")):
            _shape(req, str, f"{tp}.parameters.required[{j}]", p)
        e = obj(t.get("effect", {}), f"{tp}.effect", "effect")
        for key in ("kind", "table", "order_by", "key", "key_prefix"):
            opt(e, key, str, f"{tp}.effect")
        opt(e, "many", bool, f"{tp}.effect")
        for field in ("where", "set", "values"):
            for param, col in obj(e.get(field) or {}, f"{tp}.effect.{field}").items():
                _shape(col, str, f"{tp}.effect.{field}.{param}", p)
        for field in ("const", "require"):
            obj(e.get(field) or {}, f"{tp}.effect.{field}")
        for j, col in enumerate(lst(e.get("columns") or [], f"{tp}.effect.columns")):
            _shape(col, str, f"{tp}.effect.columns[{j}]", p)
    for i, sdef in enumerate(lst(raw.get("scenarios", []), "$.scenarios")):
        sp = f"$.scenarios[{i}]"
        sc = obj(sdef, sp, "scenario")
        for key in ("id", "intent"):
            opt(sc, key, str, sp)
        anchor = obj(sc.get("anchor", {}), f"{sp}.anchor", "anchor")
        opt(anchor, "table", str, f"{sp}.anchor")
        for col, v in obj(anchor.get("where") or {}, f"{sp}.anchor.where").items():
            q = _value_problem(v, False)
            if q:
                p.add(f"{sp}.anchor.where.{col}", q)
        for jname, jdef in obj(sc.get("join") or {}, f"{sp}.join").items():
            jtable = obj(jdef, f"{sp}.join.{jname}", "join")
            for key in ("table", "key"):
                opt(jtable, key, str, f"{sp}.join.{jname}")
        for fname, fdef in obj(sc.get("facts", {}), f"{sp}.facts").items():
            f = obj(fdef, f"{sp}.facts.{fname}", "fact")
            for key in ("say", "description"):
                opt(f, key, str, f"{sp}.facts.{fname}")
            for j, k in enumerate(lst(f.get("keywords") or [], f"{sp}.facts.{fname}.keywords")):
                _shape(k, str, f"{sp}.facts.{fname}.keywords[{j}]", p)
            value = f.get("value")
            if isinstance(value, Mapping) and "literal" in value:
                q = _value_problem(value["literal"], True)
                if q:
                    p.add(f"{sp}.facts.{fname}.value.literal", q)
        for key in ("hideable", "answer"):
            for j, h in enumerate(lst(sc.get(key) or [], f"{sp}.{key}")):
                _shape(h, str, f"{sp}.{key}[{j}]", p)
        for j, st in enumerate(lst(sc.get("steps", []), f"{sp}.steps")):
            step = obj(st, f"{sp}.steps[{j}]", "step")
            opt(step, "tool", str, f"{sp}.steps[{j}]")
            opt(step, "description", str, f"{sp}.steps[{j}]")
            for aname, aval in obj(step.get("args") or {}, f"{sp}.steps[{j}].args").items():
                q = _value_problem(aval, True)
                if q:
                    p.add(f"{sp}.steps[{j}].args.{aname}", q)


def builtin_domains_dir() -> Path:
    """The folder of the built-in domain files (package data)."""
    return Path(__file__).with_name("domains")


class Rejected(Exception):
    """A sampled task was rejected; ``reason`` is a short label counted in the run summary."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@attrs.frozen
class FactTemplate:
    """A scenario fact before binding."""

    name: str
    value: str | None
    literal: Any
    description: str
    keywords: tuple[str, ...]
    say: str


@attrs.frozen
class StepTemplate:
    """A scenario step before binding."""

    tool: str
    args: dict[str, Any]
    description: str


@attrs.frozen
class Scenario:
    """A task template of a domain."""

    id: str
    intent: str
    anchor_table: str
    anchor_where: dict[str, Any]
    joins: dict[str, tuple[str, str]]
    facts: dict[str, FactTemplate]
    hideable: tuple[str, ...]
    steps: tuple[StepTemplate, ...]
    answer: tuple[str, ...]


@attrs.frozen
class Domain:
    """A loaded, validated domain."""

    name: str
    description: str
    policy: str
    state: DatabaseState
    tools: tuple[ToolSpec, ...]
    scenarios: tuple[Scenario, ...]
    source: str

    def tool(self, name: str) -> ToolSpec:
        """The tool called ``name``."""
        for spec in self.tools:
            if spec.name == name:
                return spec
        raise KeyError(name)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{self.source}: {path}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            more = f" (and {len(self.items) - 1} more)" if len(self.items) > 1 else ""
            raise DomainError("invalid domain file " + self.items[0] + more) from _ProblemList(self.items)


class _ProblemList(Exception):
    def __init__(self, items: list[str]) -> None:
        super().__init__("\n".join(items))
        self.items = items


def problems_of(exc: DomainError) -> list[str]:
    """Every problem behind a :class:`DomainError` raised by :func:`load_domain`."""
    cause = exc.__cause__
    return list(cause.items) if isinstance(cause, _ProblemList) else [str(exc)]


def _req(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str, p: _Problems) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        p.add(path, f"missing required key {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, kind):
        p.add(f"{path}.{key}", f"must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
        return None
    return value


def load_domain(path: str | Path, *, check_anchors: int | None = 1) -> Domain:
    """Load and validate one domain file.

    :param check_anchors: how many anchor rows per scenario to run the gold path for (None: every one, as
        ``python -m synthagent.plugins.generators.offline_domains check`` does). Sampling rejects a failing row anyway.

    :raises DomainError: with the file, JSON path and problem (all problems via :func:`problems_of`).
    """
    path = Path(path)
    p = _Problems(path.name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DomainError(f"cannot read domain file {str(path)!r}: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise DomainError(f"invalid domain file {path.name}: $: the top level must be a JSON object")
    _check_shapes(raw, p)
    p.raise_if_any()
    name = _req(raw, "name", str, "$", p) or "?"
    if name != "?" and not _IDENT.match(name):
        p.add("$.name", f"{name!r} is not a lower-case identifier")
    policy = _req(raw, "policy", str, "$", p) or ""
    description = raw.get("description", "") if isinstance(raw.get("description", ""), str) else ""

    tables: list[Table] = []
    columns: dict[str, dict[str, str]] = {}
    for tname, tdef in (_req(raw, "tables", Mapping, "$", p) or {}).items():
        tpath = f"$.tables.{tname}"
        if not _IDENT.match(tname):
            p.add(tpath, "table name must match [a-z][a-z0-9_]*")
            continue
        cols = _req(tdef, "columns", Mapping, tpath, p) or {}
        pk = _req(tdef, "primary_key", str, tpath, p)
        for cname, ctype in cols.items():
            if not _IDENT.match(cname):
                p.add(f"{tpath}.columns.{cname}", "column name must match [a-z][a-z0-9_]*")
            if ctype not in _TYPES:
                p.add(f"{tpath}.columns.{cname}", f"type must be one of {sorted(_TYPES)}, got {ctype!r}")
        if pk is not None and pk not in cols:
            p.add(f"{tpath}.primary_key", f"{pk!r} is not a column of {tname!r}")
        columns[tname] = dict(cols)
        tables.append(Table(tname, pk or "", [Column(c, t) for c, t in cols.items()]))

    rows: dict[str, list[dict[str, Any]]] = {}
    raw_rows = _req(raw, "rows", Mapping, "$", p) or {}
    for tname, trows in raw_rows.items():
        if tname not in columns:
            p.add(f"$.rows.{tname}", f"rows for unknown table {tname!r}")
            continue
        if not isinstance(trows, list):
            p.add(f"$.rows.{tname}", "must be a list of row objects")
            continue
        pk = next(t.primary_key for t in tables if t.name == tname)
        seen: set[Any] = set()
        for i, row in enumerate(trows):
            rpath = f"$.rows.{tname}[{i}]"
            if not isinstance(row, Mapping):
                p.add(rpath, "must be an object")
                continue
            missing = set(columns[tname]) - set(row)
            extra = set(row) - set(columns[tname])
            if missing:
                p.add(rpath, f"missing columns {sorted(missing)}")
            if extra:
                p.add(rpath, f"unknown columns {sorted(extra)}")
            for col, value in row.items():
                q = _value_problem(value, columns[tname].get(col) == "JSON")
                if q:
                    p.add(f"{rpath}.{col}", q)
            key = row.get(pk)
            if isinstance(key, (list, Mapping)):
                p.add(f"{rpath}.{pk}", "a primary key must be a scalar")
                key = None
            if key in seen:
                p.add(rpath, f"duplicate primary key {key!r}")
            seen.add(key)
        rows[tname] = [dict(r) for r in trows if isinstance(r, Mapping)]
    for tname in columns:
        rows.setdefault(tname, [])

    tools: list[ToolSpec] = []
    tool_names: set[str] = set()
    for i, tdef in enumerate(_req(raw, "tools", list, "$", p) or []):
        tpath = f"$.tools[{i}]"
        spec = _load_tool(tdef, tpath, columns, p)
        if spec is None:
            continue
        if spec.name in tool_names:
            p.add(f"{tpath}.name", f"duplicate tool name {spec.name!r}")
        tool_names.add(spec.name)
        tools.append(spec)

    state = DatabaseState(tables, rows)
    tool_map = {t.name: t for t in tools}
    scenarios: list[Scenario] = []
    scenario_ids: set[str] = set()
    for i, sdef in enumerate(_req(raw, "scenarios", list, "$", p) or []):
        spath = f"$.scenarios[{i}]"
        scenario = _load_scenario(sdef, spath, columns, tool_map, p)
        if scenario is None:
            continue
        if scenario.id in scenario_ids:
            p.add(f"{spath}.id", f"duplicate scenario id {scenario.id!r}")
        scenario_ids.add(scenario.id)
        scenarios.append(scenario)
    p.raise_if_any()
    domain = Domain(name, description, policy, state, tuple(tools), tuple(scenarios), str(path))
    # Referential checks that need the whole domain: every anchor row's gold path must work.
    for i, scenario in enumerate(domain.scenarios):
        anchors = anchor_rows(domain, scenario)
        if not anchors:
            p.add(f"$.scenarios[{i}].anchor", "no seeded row matches the anchor filter")
        if check_anchors is None:  # every anchor row with every choice of 1-3 hidden facts
            choices = [list(c) for k in range(1, min(3, len(scenario.hideable)) + 1)
                       for c in itertools.combinations(scenario.hideable, k)]
        else:
            choices = [list(scenario.hideable[:1])]
        for row in anchors if check_anchors is None else anchors[:check_anchors]:
            for hidden in choices:
                try:
                    instantiate(domain, scenario, row, hidden=hidden, seed=0, generator="check")
                except Rejected as exc:
                    if exc.reason == "nothing_to_ask":  # a choice the generator redraws, not a broken pack
                        continue
                    key = row.get(domain.state.table(scenario.anchor_table).primary_key)
                    p.add(f"$.scenarios[{i}]", f"anchor row {key!r} hiding {hidden}: {exc}")
    p.raise_if_any()
    return domain


def _load_tool(tdef: Any, tpath: str, columns: Mapping[str, Mapping[str, str]], p: _Problems) -> ToolSpec | None:
    if not isinstance(tdef, Mapping):
        p.add(tpath, "must be an object")
        return None
    name = _req(tdef, "name", str, tpath, p)
    desc = _req(tdef, "description", str, tpath, p)
    params = _req(tdef, "parameters", Mapping, tpath, p)
    edef = _req(tdef, "effect", Mapping, tpath, p)
    if name is None or desc is None or params is None or edef is None:
        return None
    if not _IDENT.match(name):
        p.add(f"{tpath}.name", f"{name!r} must match [a-z][a-z0-9_]*")
    props = params.get("properties", {})
    if params.get("type") != "object" or not isinstance(props, Mapping):
        p.add(f"{tpath}.parameters", "must be a JSON schema of type 'object' with 'properties'")
        props = {}
    for pname, pdef in props.items():
        if not _IDENT.match(pname):
            p.add(f"{tpath}.parameters.properties.{pname}", "parameter name must match [a-z][a-z0-9_]*")
        if not isinstance(pdef, Mapping) or pdef.get("type") not in _PARAM_TYPES:
            p.add(f"{tpath}.parameters.properties.{pname}",
                  "needs a 'type' of string, integer, number, boolean, array or object")
    for req in params.get("required", []):
        if req not in props:
            p.add(f"{tpath}.parameters.required", f"{req!r} is not a declared parameter")
    kind = edef.get("kind")
    table = edef.get("table")
    epath = f"{tpath}.effect"
    if kind not in ("read", "insert", "update", "delete"):
        p.add(f"{epath}.kind", f"must be read, insert, update or delete, got {kind!r}")
        return None
    if table not in columns:
        p.add(f"{epath}.table", f"unknown table {table!r}")
        return None
    cols = columns[table]
    for field in ("where", "set", "values"):
        mapping = edef.get(field, {})
        if not isinstance(mapping, Mapping):
            p.add(f"{epath}.{field}", "must map parameter -> column")
            continue
        for param, col in mapping.items():
            if param not in props:
                p.add(f"{epath}.{field}.{param}", "is not a declared parameter")
            if col not in cols:
                p.add(f"{epath}.{field}.{param}", f"{col!r} is not a column of {table!r}")
    for field in ("const", "require"):
        for col, value in (edef.get(field, {}) or {}).items():
            if col not in cols:
                p.add(f"{epath}.{field}.{col}", f"{col!r} is not a column of {table!r}")
            values = value if field == "require" and isinstance(value, list) else [value]
            for v in values:
                q = _value_problem(v, cols.get(col) == "JSON")
                if q:
                    p.add(f"{epath}.{field}.{col}", q)
    for col in edef.get("columns", []) or []:
        if col not in cols:
            p.add(f"{epath}.columns", f"{col!r} is not a column of {table!r}")
    if edef.get("order_by") and edef["order_by"] not in cols:
        p.add(f"{epath}.order_by", f"{edef['order_by']!r} is not a column of {table!r}")
    if kind in ("update", "delete") and not edef.get("where"):
        p.add(f"{epath}.where", f"a {kind} needs a 'where' key mapping")
    if kind == "update" and not (edef.get("set") or edef.get("const")):
        p.add(epath, "an update needs 'set' or 'const'")
    if kind == "insert" and not edef.get("key_prefix"):
        p.add(f"{epath}.key_prefix", "an insert needs a key_prefix (e.g. 'T')")
    known = {"kind", "table", "where", "set", "values", "const", "require", "columns", "many", "order_by", "key",
             "key_prefix"}
    for extra in set(edef) - known:
        p.add(f"{epath}.{extra}", f"unknown effect field; known: {sorted(known)}")
    try:
        effect = Effect(
            kind=kind, table=table, where=edef.get("where", {}), set=edef.get("set", {}),
            values=edef.get("values", {}), const=edef.get("const", {}),
            require={k: list(v) if isinstance(v, list) else [v] for k, v in (edef.get("require") or {}).items()},
            columns=edef.get("columns", []), many=bool(edef.get("many", False)), order_by=edef.get("order_by"),
            key=edef.get("key"), key_prefix=edef.get("key_prefix", ""),
        )
    except (TypeError, ValueError) as exc:
        p.add(epath, str(exc))
        return None
    returns = tdef.get("returns", {})
    return ToolSpec(name=name, description=desc, parameters=dict(params), returns=dict(returns) if isinstance(returns, Mapping) else {}, effect=effect)


def _path_ok(path: str, names: set[str], columns: Mapping[str, Mapping[str, str]], tables: Mapping[str, str]) -> str | None:
    parts = path.split(".")
    if len(parts) != 2 or parts[0] not in names:
        return f"{path!r} must be '<row>.<column>' with <row> one of {sorted(names)}"
    if parts[1] not in columns[tables[parts[0]]]:
        return f"{parts[1]!r} is not a column of {tables[parts[0]]!r}"
    return None


def _load_scenario(
    sdef: Any, spath: str, columns: Mapping[str, Mapping[str, str]], tools: Mapping[str, ToolSpec], p: _Problems
) -> Scenario | None:
    if not isinstance(sdef, Mapping):
        p.add(spath, "must be an object")
        return None
    sid = _req(sdef, "id", str, spath, p)
    intent = _req(sdef, "intent", str, spath, p)
    anchor = _req(sdef, "anchor", Mapping, spath, p)
    facts_raw = _req(sdef, "facts", Mapping, spath, p)
    steps_raw = _req(sdef, "steps", list, spath, p)
    if None in (sid, intent, anchor, facts_raw, steps_raw):
        return None
    atable = anchor.get("table")
    if atable not in columns:
        p.add(f"{spath}.anchor.table", f"unknown table {atable!r}")
        return None
    awhere = dict(anchor.get("where", {}) or {})
    for col in awhere:
        if col not in columns[atable]:
            p.add(f"{spath}.anchor.where.{col}", f"{col!r} is not a column of {atable!r}")
    row_tables = {"anchor": atable}
    joins: dict[str, tuple[str, str]] = {}
    for jname, jdef in (sdef.get("join", {}) or {}).items():
        jpath = f"{spath}.join.{jname}"
        jtable, jkey = (jdef or {}).get("table"), (jdef or {}).get("key")
        if jtable not in columns:
            p.add(jpath, f"unknown table {jtable!r}")
            continue
        problem = _path_ok(str(jkey), set(row_tables), columns, row_tables)
        if problem:
            p.add(f"{jpath}.key", problem)
            continue
        joins[jname] = (str(jtable), str(jkey))
        row_tables[jname] = jtable
    facts: dict[str, FactTemplate] = {}
    for fname, fdef in facts_raw.items():
        fpath = f"{spath}.facts.{fname}"
        if not _IDENT.match(fname) or not isinstance(fdef, Mapping):
            p.add(fpath, "fact names match [a-z][a-z0-9_]* and facts are objects")
            continue
        value = fdef.get("value")
        literal = None
        if isinstance(value, Mapping) and "literal" in value:
            literal, value = value["literal"], None
        elif not isinstance(value, str):
            p.add(f"{fpath}.value", "must be a '<row>.<column>' path or {\"literal\": ...}")
            continue
        else:
            problem = _path_ok(value, set(row_tables), columns, row_tables)
            if problem:
                p.add(f"{fpath}.value", problem)
        keywords = fdef.get("keywords", [])
        if not keywords or not all(isinstance(k, str) and k.strip() for k in keywords):
            p.add(f"{fpath}.keywords", "needs a non-empty list of words")
        say = fdef.get("say", "")
        if "{value}" not in say:
            p.add(f"{fpath}.say", "must contain {value}")
        facts[fname] = FactTemplate(fname, value, literal, str(fdef.get("description", fname)),
                                    tuple(k.lower() for k in keywords), say)
    for a, fa in facts.items():
        for b, fb in facts.items():
            if a >= b:
                continue
            shared = set(fa.keywords) & set(fb.keywords)
            if shared:
                p.add(f"{spath}.facts", f"facts {a!r} and {b!r} share keywords {sorted(shared)}; a question about one "
                                        "would reveal both")
    for a, fa in facts.items():
        for b, fb in facts.items():
            hits = [k for k in fb.keywords if a != b and re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])",
                                                                   fa.description.lower())]
            if hits:
                p.add(f"{spath}.facts.{a}.description", f"mentions {hits[0]!r}, a keyword of fact {b!r}: asking for "
                                                        f"{a!r} would also reveal {b!r}")
    hideable = tuple(sdef.get("hideable", []) or [])
    if not hideable:
        p.add(f"{spath}.hideable", "needs at least one fact to hide")
    for h in hideable:
        if h not in facts:
            p.add(f"{spath}.hideable", f"{h!r} is not a fact")
    steps: list[StepTemplate] = []
    used_facts: set[str] = set()
    dependent = False
    if not 2 <= len(steps_raw) <= 6:
        p.add(f"{spath}.steps", f"needs 2-6 steps, has {len(steps_raw)}")
    for i, st in enumerate(steps_raw):
        stpath = f"{spath}.steps[{i}]"
        tool = str((st or {}).get("tool"))
        if tool not in tools:
            p.add(f"{stpath}.tool", f"unknown tool {tool!r}")
            continue
        args = dict((st or {}).get("args", {}) or {})
        props = tools[tool].parameters.get("properties", {})
        for aname, aval in args.items():
            if aname not in props:
                p.add(f"{stpath}.args.{aname}", f"{tool!r} has no parameter {aname!r}")
            if isinstance(aval, str) and (aval.startswith("$") or aval.startswith("@")):
                problem, fact_refs, step_ref = _check_ref(aval, i, facts)
                if problem:
                    p.add(f"{stpath}.args.{aname}", problem)
                used_facts.update(fact_refs)
                dependent = dependent or step_ref
        for req in tools[tool].parameters.get("required", []):
            if req not in args:
                p.add(f"{stpath}.args", f"missing required argument {req!r} of {tool!r}")
        steps.append(StepTemplate(tool, args, str((st or {}).get("description", f"Call {tool}"))))
    if steps_raw and not dependent:
        p.add(f"{spath}.steps", "no step takes an argument from an earlier step (@N...); tasks need real dependencies")
    for h in hideable:
        if h in facts and h not in used_facts:
            p.add(f"{spath}.hideable", f"hidden fact {h!r} is not used by any step argument")
    answer = tuple(sdef.get("answer", []) or [])
    for i, ref in enumerate(answer):
        problem, _, _ = _check_ref(ref, len(steps_raw), facts)
        if problem:
            p.add(f"{spath}.answer[{i}]", problem)
    writes = any(tools[s.tool].writes for s in steps)
    if not writes and not answer:
        p.add(f"{spath}.answer", "a scenario without a write step needs a non-empty answer")
    return Scenario(sid, intent, atable, awhere, joins, facts, hideable, tuple(steps), answer)


def _check_ref(ref: str, step_index: int, facts: Mapping[str, FactTemplate]) -> tuple[str | None, set[str], bool]:
    m = _REF_FACT.match(ref)
    if m:
        return (None if m.group(1) in facts else f"unknown fact {m.group(1)!r}"), {m.group(1)}, False
    m = _REF_STEP.match(ref)
    if m:
        n = int(m.group(1))
        return (None if n < step_index else f"step reference @{n} must point to an earlier step"), set(), True
    m = _REF_PICK.match(ref)
    if m:
        n, fact = int(m.group(1)), m.group(3)
        if n >= step_index:
            return f"step reference @{n} must point to an earlier step", set(), True
        return (None if fact in facts else f"unknown fact {fact!r}"), {fact}, True
    return f"{ref!r} is not a reference ($fact, @N.col or @N[col=$fact].col)", set(), False


def load_pack(directory: str | Path | None = None, names: Sequence[str] = ()) -> list[Domain]:
    """Load every ``*.json`` domain in ``directory`` (default: the built-in pack), or only ``names``."""
    folder = Path(directory) if directory else builtin_domains_dir()
    if not folder.is_dir():
        raise DomainError(f"domain folder {str(folder)!r} does not exist")
    files = sorted(folder.glob("*.json"))
    domains = [load_domain(f) for f in files]
    if names:
        known = {d.name: d for d in domains}
        missing = [n for n in names if n not in known]
        if missing:
            raise DomainError(f"unknown domain(s) {missing}; the pack has {sorted(known)}")
        domains = [known[n] for n in names]
    if not domains:
        raise DomainError(f"no domain files (*.json) in {str(folder)!r}")
    return domains


def anchor_rows(domain: Domain, scenario: Scenario) -> list[dict[str, Any]]:
    """Seeded rows of the anchor table that match the scenario's filter (primary-key order)."""
    table = domain.state.table(scenario.anchor_table)
    rows = [
        dict(r) for r in domain.state.rows.get(scenario.anchor_table, ())
        if all(r.get(c) == v for c, v in scenario.anchor_where.items())
    ]
    return sorted(rows, key=lambda r: str(r.get(table.primary_key)))


def _row_by_key(domain: Domain, table: str, key: Any) -> dict[str, Any] | None:
    pk = domain.state.table(table).primary_key
    for row in domain.state.rows.get(table, ()):
        if row.get(pk) == key:
            return dict(row)
    return None


def _resolve(ref: Any, facts: Mapping[str, Any], results: Sequence[Any]) -> tuple[Any, str]:
    if not isinstance(ref, str) or ref[:1] not in ("$", "@"):
        return ref, "literal"
    m = _REF_FACT.match(ref)
    if m:
        return facts[m.group(1)], f"fact:{m.group(1)}"
    m = _REF_STEP.match(ref)
    if m:
        n, col = int(m.group(1)), m.group(2)
        result = results[n]
        if not isinstance(result, Mapping) or col not in result:
            raise Rejected("bad_reference", f"{ref}: step {n} returned no {col!r}")
        return result[col], f"step:{n}"
    m = _REF_PICK.match(ref)
    if m:
        n, col, fact, col2 = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        items = results[n].get("items") if isinstance(results[n], Mapping) else None
        if not isinstance(items, list):
            raise Rejected("bad_reference", f"{ref}: step {n} returned no items")
        matches = [r for r in items if r.get(col) == facts[fact]]
        if len(matches) != 1:
            raise Rejected("ambiguous_lookup", f"{ref}: {len(matches)} rows of step {n} have {col}={facts[fact]!r}")
        if col2 not in matches[0]:
            raise Rejected("bad_reference", f"{ref}: the row has no {col2!r}")
        return matches[0][col2], f"step:{n}+fact:{fact}"
    raise Rejected("bad_reference", ref)


def _needed_only(hidden: Sequence[str], facts: Mapping[str, Fact], steps: Sequence[WorkflowStep],
                 domain: Any) -> list[str]:
    """``hidden`` without the facts the agent does not need (:func:`synthagent.core.taskcheck.unneeded_facts`:
    e.g. one that only picks a row out of a lookup that returns one row). Those the user states in the
    instruction instead: a hidden fact must be one the agent has to ask for."""
    from synthagent.core.taskcheck import unneeded_facts

    probe = Task(id="probe", domain=domain.name, persona=Persona(id="probe", description=""), system_prompt="",
                 tools=domain.tools, instruction="", full_instruction="", user_context=tuple(facts[h] for h in hidden),
                 visible_facts=(), workflow=tuple(steps), initial_state=domain.state)
    unneeded = unneeded_facts(probe)
    return [h for h in hidden if h not in unneeded]


def instantiate(
    domain: Domain,
    scenario: Scenario,
    anchor: Mapping[str, Any],
    *,
    hidden: Sequence[str],
    seed: int,
    generator: str,
    slot: str = "",
    max_tools: int = 0,
) -> Task:
    """Bind ``scenario`` to an anchor row, run its gold path on the initial database and build the Task.

    :raises Rejected: the gold path fails, or a hidden value shows in the visible instruction.
    """
    rows: dict[str, dict[str, Any]] = {"anchor": dict(anchor)}
    for jname, (jtable, jkey) in scenario.joins.items():
        src, col = jkey.split(".")
        row = _row_by_key(domain, jtable, rows[src].get(col))
        if row is None:
            raise Rejected("broken_join", f"{jname}: no {jtable} row with key {rows[src].get(col)!r}")
        rows[jname] = row
    values: dict[str, Any] = {}
    for fname, ft in scenario.facts.items():
        if ft.value is None:
            values[fname] = ft.literal
        else:
            rname, col = ft.value.split(".")
            values[fname] = rows[rname][col]
    db = SQLiteDatabase(domain.state)
    try:
        results: list[Any] = []
        steps: list[WorkflowStep] = []
        for i, st in enumerate(scenario.steps):
            args: dict[str, Any] = {}
            bindings: dict[str, str] = {}
            for aname, aval in st.args.items():
                args[aname], bindings[aname] = _resolve(aval, values, results)
            spec = domain.tool(st.tool)
            result = db.execute(spec, args)
            if "error" in result:
                raise Rejected("gold_path_error", f"step {i} {st.tool}({args}) -> {result['error']}: {result.get('message')}")
            results.append(result)
            steps.append(WorkflowStep(i, st.description, st.tool, args, bindings, spec.writes))
        answer = tuple(_resolve(ref, values, results)[0] for ref in scenario.answer)
        final_rows = db.rows()
        gold = StateChange(digest=db.digest(), changes=compute_changes(domain.state, final_rows))
    finally:
        db.close()
    facts = {
        fname: Fact(fname, values[fname], ft.description, ft.keywords, ft.say.replace("{value}", str(values[fname])))
        for fname, ft in scenario.facts.items()
    }
    needed = _needed_only(hidden, facts, steps, domain)
    if hidden and not needed:  # the generator draws another choice: a task must leave the agent something to ask
        raise Rejected("nothing_to_ask", f"no hidden fact of {sorted(hidden)} is needed on this anchor row")
    hidden = needed
    hidden_facts = tuple(facts[h] for h in hidden)
    visible = tuple(f for name, f in facts.items() if name not in hidden)
    full_instruction = " ".join([scenario.intent, *(f.statement for f in facts.values())]).strip()
    instruction = " ".join([scenario.intent, *(f.statement for f in visible)]).strip()
    for fact in hidden_facts:
        if str(fact.value).lower() in instruction.lower():
            raise Rejected("hidden_value_visible", f"{fact.name}={fact.value!r} appears in the instruction")
    tool_names = [s.tool for s in steps if s.tool]
    anchor_key = anchor.get(domain.state.table(scenario.anchor_table).primary_key)
    # The offered tools never spell out the plan: the domain's whole tool set (or the gold tools plus random
    # extras, at most max_tools) in an order shuffled by the task's seed, not the gold tools in workflow order.
    rng = random.Random(stable_id("tools", domain.name, scenario.id, anchor_key, sorted(hidden), seed))
    tools_list = list(domain.tools)
    if max_tools and max_tools > 0:
        extra = [t.name for t in domain.tools if t.name not in tool_names]
        keep = set(tool_names) | set(rng.sample(extra, min(len(extra), max(0, max_tools - len(set(tool_names))))))
        tools_list = [t for t in domain.tools if t.name in keep]
    rng.shuffle(tools_list)
    tools = tuple(tools_list)
    person = next((r.get("name") for r in rows.values() if isinstance(r.get("name"), str)), None)
    persona = Persona(
        id=f"{domain.name}:{anchor_key}",
        description=f"{person}, a customer of the {domain.name.replace('_', ' ')} service" if person
        else f"a customer of the {domain.name.replace('_', ' ')} service",
    )
    task_id = stable_id("task", generator, domain.name, scenario.id, anchor_key, sorted(hidden), seed)
    return Task(
        id=task_id,
        domain=domain.name,
        persona=persona,
        system_prompt=domain.policy,
        tools=tools,
        instruction=instruction,
        full_instruction=full_instruction,
        user_context=hidden_facts,
        visible_facts=visible,
        workflow=tuple(steps),
        answer=answer,
        initial_state=domain.state,
        gold_state=gold,
        provenance=Provenance(generator=generator, seed=seed, slot=slot, template=f"{domain.name}/{scenario.id}"),
    )
