"""Turning a community of tools into a domain environment: a SQLite schema, seeded rows and compiled tools.

Each entity the tools touch becomes a table named after it, with its key as primary key and every column any
tool reads, filters on, sets or inserts (typed from the parameters' JSON types, or ``x-effect.fields``). Rows
are seeded deterministically: keys get a per-entity prefix (``SH0001``), a ``<other>_id`` column points at rows
of ``<other>`` when that table exists, status-like columns take values the tools' preconditions and constants
use (so some rows satisfy each precondition), and other columns get plausible values by name and type. Tools
compile into :class:`~synthagent.core.models.Effect` on their entity's table: nothing generated runs as code.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs

from synthagent.core.models import Column, DatabaseState, Effect, Table, ToolSpec
from synthagent.plugins.common.values import realistic_value
from synthagent.plugins.generators.graph_domains.pool import PoolSpec

__all__ = ["GraphDomain", "build_domain"]

_SQL = {"string": "TEXT", "integer": "INTEGER", "number": "REAL", "boolean": "INTEGER", "array": "JSON", "object": "JSON"}
_FIRST = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jae", "Kofi", "Lena", "Mateo", "Nia",
          "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vikram", "Wen", "Yara", "Zoe"]
_LAST = ["Adeyemi", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
         "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi", "Silva", "Tanaka", "Usman", "Varga"]
_WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris", "juniper", "kestrel",
          "lumen", "maple", "nova", "onyx", "pine", "quartz", "raven", "sierra", "tundra", "umber", "willow"]


@attrs.frozen
class GraphDomain:
    """A discovered domain: its name, tools (with effects), initial database and the pool specs behind it."""

    name: str
    tools: tuple[ToolSpec, ...]
    state: DatabaseState
    specs: tuple[PoolSpec, ...]
    areas: dict[str, int]

    def tool(self, name: str) -> ToolSpec:
        """The tool called ``name``."""
        return next(t for t in self.tools if t.name == name)


def _col_types(specs: Sequence[PoolSpec]) -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = defaultdict(dict)
    for s in specs:
        e = s.effect
        entity, key = e["entity"], e["key"]
        cols = tables[entity]
        cols.setdefault(key, "TEXT")
        props = s.parameters.get("properties", {}) or {}
        for field in ("where", "set", "values"):
            for param, col in (e.get(field) or {}).items():
                cols.setdefault(col, _SQL.get(str((props.get(param) or {}).get("type")), "TEXT"))
        for col, value in (e.get("const") or {}).items():
            cols.setdefault(col, "REAL" if isinstance(value, float) else "INTEGER" if isinstance(value, int) else "TEXT")
        for col in (e.get("require") or {}):
            cols.setdefault(col, "TEXT")
        for col, typ in (e.get("fields") or {}).items():
            cols.setdefault(col, typ if typ in ("TEXT", "INTEGER", "REAL", "JSON") else "TEXT")
        for col in e.get("columns") or []:
            cols.setdefault(col, "TEXT")
    return tables


def _values_seen(specs: Sequence[PoolSpec]) -> dict[tuple[str, str], list[Any]]:
    """Values the tools use for each (entity, column): require lists, constants and parameter enums."""
    seen: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for s in specs:
        e = s.effect
        props = s.parameters.get("properties", {}) or {}
        for col, allowed in (e.get("require") or {}).items():
            seen[(e["entity"], col)] += list(allowed) if isinstance(allowed, list) else [allowed]
        for col, value in (e.get("const") or {}).items():
            seen[(e["entity"], col)].append(value)
        for field in ("where", "set", "values"):
            for param, col in (e.get(field) or {}).items():
                seen[(e["entity"], col)] += list((props.get(param) or {}).get("enum") or [])
    return {k: sorted(set(v), key=str) for k, v in seen.items()}


def _prefixes(entities: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entity in sorted(entities):
        parts = [p for p in entity.split("_") if p]
        candidates = ["".join(p[0] for p in parts).upper(), entity[:2].upper(), entity[:3].upper()]
        prefix = next((c for c in candidates if c not in out.values()), None)
        n = 2
        while prefix is None:
            prefix = f"{entity[:2].upper()}{n}" if f"{entity[:2].upper()}{n}" not in out.values() else None
            n += 1
        out[entity] = prefix
    return out


def _value(entity: str, col: str, typ: str, i: int, rng: random.Random, choices: list[Any],
           avoid: Sequence[Any] = ()) -> Any:
    name = col.lower()
    if choices:
        return choices[i % len(choices)] if len(choices) > 1 and i < 2 * len(choices) else rng.choice(choices)
    person = f"{_FIRST[(i * 7) % len(_FIRST)]} {_LAST[(i * 11 + len(entity)) % len(_LAST)]}"
    if "email" in name:
        return f"{person.lower().replace(' ', '.')}{i}@example.com"
    if "phone" in name:
        return f"(555) {100 + i:03d}-{rng.randint(1000, 9999)}"
    if name in ("name", "full_name", "owner_name", "contact_name") or name.endswith(("_name", "name")) and "user" in name:
        return person
    if name.endswith("name") or name in ("title", "label"):
        return f"{_WORDS[(i * 5 + len(col)) % len(_WORDS)].title()} {_WORDS[(i * 3 + 7) % len(_WORDS)].title()} {i}"
    if "date" in name or name.endswith(("_at", "_on", "day")):
        return f"2025-{(i % 12) + 1:02d}-{(i * 3) % 28 + 1:02d}"
    if "time" in name:
        return f"{8 + i % 10:02d}:{(i * 15) % 60:02d}"
    if typ == "JSON":  # an array or object parameter's column: seed a small list
        return [realistic_value(col, {"type": "string"}, rng, entity=entity)]
    if typ == "REAL":
        return round(rng.uniform(5, 900), 2)
    if typ == "INTEGER":
        return rng.randint(1, 40)
    if any(k in name for k in ("address", "street")):
        return f"{100 + i * 7} {_WORDS[i % len(_WORDS)].title()} Street"
    if "city" in name:
        return ["Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Lima", "Perth", "Quebec"][i % 8]
    return realistic_value(col, {"type": "string"}, rng, entity=entity, avoid=avoid)


def _compile(spec: PoolSpec) -> ToolSpec:
    e = spec.effect
    table = e["entity"]
    require = {k: (list(v) if isinstance(v, list) else [v]) for k, v in (e.get("require") or {}).items()}
    effect = Effect(kind=e["kind"], table=table, where=dict(e.get("where") or {}), set=dict(e.get("set") or {}),
                    values=dict(e.get("values") or {}), const=dict(e.get("const") or {}), require=require,
                    columns=tuple(e.get("columns") or ()), many=bool(e.get("many", False)), key=e.get("key"),
                    key_prefix="")
    return ToolSpec(spec.name, spec.description, dict(spec.parameters), {}, effect)


def build_domain(name: str, specs: Sequence[PoolSpec], *, rows: int = 14, seed: int = 0) -> GraphDomain:
    """Schema, seeded rows and compiled tools for one community's specs (deterministic for ``seed``)."""
    rng = random.Random(f"{seed}:{name}")
    tables = _col_types(specs)
    keys = {s.effect["entity"]: s.effect["key"] for s in specs}
    seen = _values_seen(specs)
    prefixes = _prefixes(list(tables))
    key_values = {entity: [f"{prefixes[entity]}{i + 1:04d}" for i in range(rows)] for entity in tables}
    key_owner = {keys[e]: e for e in tables}
    state_tables, state_rows = [], {}
    for entity in sorted(tables):
        cols = tables[entity]
        key = keys[entity]
        ordered = [key] + sorted(c for c in cols if c != key)
        state_tables.append(Table(entity, key, tuple(Column(c, cols[c]) for c in ordered)))
        table_rows: list[dict[str, Any]] = []
        for i in range(rows):
            row: dict[str, Any] = {}
            for col in ordered:
                if col == key:
                    row[col] = key_values[entity][i]
                elif col in key_owner and key_owner[col] != entity:
                    row[col] = key_values[key_owner[col]][(i * 3 + 1) % rows]  # a real row of the other table
                elif re.fullmatch(r"[a-z0-9_]+_id", col):
                    row[col] = f"X{rng.randint(1000, 9999)}"
                else:
                    row[col] = _value(entity, col, cols[col], i, rng, seen.get((entity, col), []),
                                      [r[col] for r in table_rows])
            table_rows.append(row)
        state_rows[entity] = table_rows
    tools = tuple(_compile(s) for s in sorted(specs, key=lambda s: s.name))
    # inserts get the entity's key prefix, so new keys follow the seeded ones
    tools = tuple(attrs.evolve(t, effect=attrs.evolve(t.effect, key_prefix=prefixes[t.effect.table]))
                  if t.effect and t.effect.kind == "insert" else t for t in tools)
    areas: dict[str, int] = defaultdict(int)
    for s in specs:
        areas[s.area] += 1
    return GraphDomain(name, tools, DatabaseState(tuple(state_tables), state_rows), tuple(specs), dict(areas))
