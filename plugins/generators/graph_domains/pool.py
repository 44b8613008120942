"""API pools (``docs/api-pool.md``): loading OpenAI function-calling specs and annotating their effects.

Formats: a JSON array or JSONL of OpenAI tools (``{"type": "function", "function": {...}}`` or the bare
function object), optionally with ``area`` and ``x-effect``; a folder of such files; or a ToolBench-style
folder (``<category>/<tool>.json`` with ``api_list`` entries holding ``required_parameters`` and
``optional_parameters``). A spec without ``x-effect`` is annotated by deterministic rules over its name and
parameters (:func:`infer_effect`), or by a teacher when one is configured.
"""

from __future__ import annotations

import difflib

import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.errors import ConfigError
from synthagent.core.toolschema import schema_problems
from synthagent.core.toolsource import EFFECT_VERBS

__all__ = ["PoolSpec", "load_pool", "pool_from_records", "infer_effect", "check_effect", "builtin_pool_dir", "EFFECT_KINDS"]

EFFECT_KINDS = ("read", "insert", "update", "delete")
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_VERBS = EFFECT_VERBS
_TYPES = {"string": "TEXT", "integer": "INTEGER", "number": "REAL", "boolean": "INTEGER", "array": "JSON",
          "object": "JSON"}
#: Names SQLite keeps for itself (an entity so named would shadow or hit the schema tables).
RESERVED = frozenset({"sqlite_schema", "sqlite_master", "sqlite_temp_schema", "sqlite_temp_master",
                      "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})
_EFFECT_KEYS = frozenset({"kind", "entity", "key", "where", "set", "values", "const", "require", "fields", "columns",
                          "many", "order_by"})


def _bad_value(value: Any) -> str | None:
    """Why ``value`` cannot be a column value in a ``const``/``require`` (``None`` when it can)."""
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else f"integer {value} is outside SQLite's 64-bit range"
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else f"{value} is not a finite number"
    return f"must be a scalar (string, number, boolean or null), got {type(value).__name__}"


@attrs.frozen
class PoolSpec:
    """One API of the pool: its OpenAI function, area, effect annotation and where the annotation came from."""

    name: str
    description: str
    parameters: dict[str, Any]
    area: str
    effect: dict[str, Any]
    annotated_by: str  # "pool" | "rules" | "teacher"


def builtin_pool_dir() -> Path:
    """The built-in pool's folder (package data)."""
    return Path(str(resources.files("synthagent.plugins.generators.graph_domains").joinpath("specs")))


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def infer_effect(name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Annotate a spec offline from its name and parameters (``docs/api-pool.md``, inference rules); a trailing
    number or ``v<N>`` (a variant's suffix) is not the entity."""
    parts = name.lower().split("_")
    while len(parts) > 1 and re.fullmatch(r"v?\d+", parts[-1]):
        parts.pop()  # a version or variant suffix (get_weather_2, search_v2) names no entity
    kind = next((k for k, verbs in _VERBS.items() if parts[0] in verbs), "read")
    noun_parts = parts[1:] or parts
    entity = _singular(noun_parts[-1] if noun_parts[-1] not in ("by", "id") else noun_parts[0])
    if len(noun_parts) >= 3 and noun_parts[-2] == "by":
        entity = _singular(noun_parts[-3])
    props = dict(parameters.get("properties", {}) or {})
    key = f"{entity}_id"
    effect: dict[str, Any] = {"kind": kind, "entity": entity, "key": key}
    if kind == "read":
        effect["where"] = {p: p for p in props}
        effect["many"] = parts[0] in ("list", "search", "query") or key not in props
    elif kind == "insert":
        effect["values"] = {p: p for p in props if p != key}
    elif kind == "update":
        effect["where"] = {key: key} if key in props else {p: p for p in list(props)[:1]}
        effect["set"] = {p: p for p in props if p not in effect["where"]}
        if not effect["set"]:
            past = {"cancel": "cancelled", "activate": "active", "deactivate": "inactive", "set": "set"}
            effect["const"] = {"status": past.get(parts[0], parts[0] + ("d" if parts[0].endswith("e") else "ed"))}
    else:
        effect["where"] = {key: key} if key in props else {p: p for p in list(props)[:1]}
    return effect


def check_effect(effect: Any, props: Mapping[str, Any], where: str) -> list[str]:
    """Problems of an effect annotation against the spec's parameters (empty when valid)."""
    if not isinstance(effect, Mapping):
        return [f"{where}: x-effect must be an object"]
    problems = []
    for extra in sorted(set(map(str, effect)) - _EFFECT_KEYS):
        close = difflib.get_close_matches(extra, sorted(_EFFECT_KEYS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(f"{where}: x-effect.{extra} is not an effect field{hint} (known: {sorted(_EFFECT_KEYS)})")
    if effect.get("kind") not in EFFECT_KINDS:
        problems.append(f"{where}: x-effect.kind must be one of {EFFECT_KINDS}")
    for field in ("entity", "key"):
        if not isinstance(effect.get(field), str) or not _IDENT.match(effect[field]):
            problems.append(f"{where}: x-effect.{field} must be a snake_case name")
    for field in ("where", "set", "values"):
        mapping = effect.get(field, {}) or {}
        if not isinstance(mapping, Mapping):
            problems.append(f"{where}: x-effect.{field} must map parameter -> column")
            continue
        for param, col in mapping.items():
            if param not in props:
                problems.append(f"{where}: x-effect.{field}.{param} is not a parameter")
            if not isinstance(col, str) or not _IDENT.match(col):
                problems.append(f"{where}: x-effect.{field}.{param} -> {col!r} is not a column name")
    if isinstance(effect.get("entity"), str) and effect["entity"].lower() in RESERVED:
        problems.append(f"{where}: x-effect.entity {effect['entity']!r} is a name SQLite reserves; rename the entity")
    for field in ("const", "require", "fields"):
        mapping = effect.get(field, {}) or {}
        if not isinstance(mapping, Mapping):
            problems.append(f"{where}: x-effect.{field} must be an object mapping column -> value")
            continue
        for col, value in mapping.items():
            if not _IDENT.match(str(col)):
                problems.append(f"{where}: x-effect.{field}.{col} is not a column name")
            if field == "fields":
                if value not in ("TEXT", "INTEGER", "REAL", "JSON"):
                    problems.append(f"{where}: x-effect.fields.{col} must be TEXT, INTEGER, REAL or JSON, got {value!r}")
                continue
            values = value if field == "require" and isinstance(value, list) else [value]
            if field == "require" and not values:
                problems.append(f"{where}: x-effect.require.{col} needs at least one allowed value")
            for v in values:
                bad = _bad_value(v)
                if bad:
                    problems.append(f"{where}: x-effect.{field}.{col}: {bad}")
    columns = effect.get("columns")
    if columns is not None and (not isinstance(columns, list)
                                or not all(isinstance(c, str) and _IDENT.match(c) for c in columns)):
        problems.append(f"{where}: x-effect.columns must be a list of column names, got {columns!r}")
    order_by = effect.get("order_by")
    if order_by is not None and (not isinstance(order_by, str) or not _IDENT.match(order_by)):
        problems.append(f"{where}: x-effect.order_by must be a column name, got {order_by!r}")
    if "many" in effect and not isinstance(effect["many"], bool):
        problems.append(f"{where}: x-effect.many must be true or false, got {effect['many']!r}")
    if effect.get("kind") in ("update", "delete") and not effect.get("where"):
        problems.append(f"{where}: an {effect.get('kind')} needs x-effect.where")
    return problems


def _from_toolbench(data: Mapping[str, Any], area: str) -> Iterable[dict[str, Any]]:
    for api in data.get("api_list", []) or []:
        props, required = {}, []
        for group, is_required in (("required_parameters", True), ("optional_parameters", False)):
            for p in api.get(group, []) or []:
                pname = re.sub(r"[^a-z0-9_]", "_", str(p.get("name", "")).lower()).strip("_")
                if not pname:
                    continue
                ptype = {"NUMBER": "number", "BOOLEAN": "boolean", "INTEGER": "integer"}.get(
                    str(p.get("type", "STRING")).upper(), "string")
                props[pname] = {"type": ptype, "description": str(p.get("description", ""))[:300]}
                if is_required:
                    required.append(pname)
        name = re.sub(r"[^a-z0-9_]", "_", str(api.get("name", "")).lower()).strip("_")
        yield {"function": {"name": name, "description": str(api.get("description", ""))[:500],
                            "parameters": {"type": "object", "properties": props, "required": required}},
               "area": area}


def _records(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read API pool file {path}: {exc}") from None
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"{path.name}:{n}", json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"API pool {path}:{n} is not valid JSON: {exc}") from exc
        return
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"API pool file {path} is not valid JSON: {exc}") from exc
    if isinstance(data, Mapping) and "api_list" in data:
        for i, rec in enumerate(_from_toolbench(data, path.parent.name or "toolbench")):
            yield f"{path.name}[{i}]", rec
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            yield f"{path.name}[{i}]", rec
    else:
        yield path.name, data


def load_pool(source: str | Path | None = None, *, strict: bool = True) -> tuple[list[PoolSpec], dict[str, int]]:
    """Load a pool (default: the built-in one) and annotate specs lacking ``x-effect`` with the offline rules.

    :returns: the specs and counts (``specs``, ``annotated_by_rules``, ``dropped_*`` reasons).
    :raises ConfigError: unreadable files; with ``strict``, any invalid spec (file, line and problem named).
    """
    root = Path(source) if source else builtin_pool_dir()
    if not root.exists():
        raise ConfigError(f"API pool {str(root)!r} does not exist")
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.suffix in (".json", ".jsonl"))
    records = ((path.stem if path.parent == root or root.is_file() else path.parent.name, where, rec)
               for path in files for where, rec in _records(path))
    specs, counts = pool_from_records(records, strict=strict)
    if not specs:
        raise ConfigError(f"no API specs in {str(root)!r}")
    return specs, counts


def pool_from_records(records: Iterable[tuple[str, str, Any]], *, strict: bool = True
                      ) -> tuple[list[PoolSpec], dict[str, int]]:
    """Pool specs from ``(default_area, where, record)`` triples (OpenAI tools, optionally with ``area`` and
    ``x-effect``), validated and annotated as :func:`load_pool` does; ``where`` names the record in errors.
    A record's ``x-rules-name`` (optional) is the name the offline rules infer the effect from, when it is not
    the tool's whole name (the corpus importer gives ``get_champion`` for ``sports.ranking.get_champion``)."""
    specs: list[PoolSpec] = []
    counts: dict[str, int] = {"specs": 0, "annotated_by_rules": 0}
    seen: set[str] = set()
    for default_area, where, rec in records:
        fn = rec.get("function", rec) if isinstance(rec, Mapping) else None
        problems: list[str] = []
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            problems.append(f"{where}: not an OpenAI function spec")
        else:
            name = fn["name"]
            params = fn.get("parameters") or {"type": "object", "properties": {}}
            if not _IDENT.match(name):
                problems.append(f"{where}: name {name!r} must be snake_case")
            if name in seen:
                problems.append(f"{where}: duplicate tool name {name!r}")
            problems += [f"{where}: {p}" for p in schema_problems(params)]
            effect = rec.get("x-effect")
            annotated_by = "pool"
            if effect is None:
                # a corpus record may name the part of the name the rules read (the method of sports.ranking.get_x)
                effect, annotated_by = infer_effect(str(rec.get("x-rules-name") or name), params), "rules"
            problems += check_effect(effect, params.get("properties", {}) or {}, where)
        if problems:
            if strict:
                raise ConfigError("invalid API spec " + problems[0] + (f" (and {len(problems) - 1} more)"
                                                                      if len(problems) > 1 else ""))
            counts["dropped_invalid"] = counts.get("dropped_invalid", 0) + 1
            continue
        seen.add(name)
        counts["specs"] += 1
        counts["annotated_by_rules"] += annotated_by == "rules"
        assert isinstance(fn, Mapping) and isinstance(rec, Mapping)  # no problems: both were checked above
        specs.append(PoolSpec(name, str(fn.get("description", "")), dict(params),
                              str(rec.get("area") or default_area), dict(effect or {}), annotated_by))
    return specs, counts
