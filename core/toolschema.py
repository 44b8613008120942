"""Checking tool-call arguments against a tool's JSON-schema parameters (shared by tool simulators)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synthagent.core.models import ToolSpec

__all__ = ["argument_problems", "schema_problems", "JSON_TYPES"]

#: JSON Schema type name -> the Python types a decoded JSON value of that type may have.
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}


def _type_ok(expected: str, value: Any) -> bool:
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[expected])


def argument_problems(spec: ToolSpec, arguments: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``arguments`` for ``spec``: unknown or missing parameters, wrong JSON types, values
    outside an ``enum``. Empty when they are fine."""
    schema = spec.parameters or {}
    properties: Mapping[str, Any] = schema.get("properties", {}) or {}
    problems: list[str] = []
    for name in arguments:
        if name not in properties:
            problems.append(f"unknown parameter {name!r} (expected one of {sorted(properties)})")
    for name in schema.get("required", []) or []:
        if name not in arguments or arguments[name] is None:
            problems.append(f"missing required parameter {name!r}")
    for name, value in arguments.items():
        prop = properties.get(name)
        if not isinstance(prop, Mapping) or value is None:
            continue
        expected = prop.get("type")
        if isinstance(expected, str) and expected in JSON_TYPES and not _type_ok(expected, value):
            problems.append(f"parameter {name!r} must be {expected}, got {type(value).__name__}")
            continue
        if "enum" in prop and value not in prop["enum"]:
            problems.append(f"parameter {name!r} must be one of {prop['enum']}, got {value!r}")
    return problems


def schema_problems(schema: Any, where: str = "parameters") -> list[str]:
    """Problems of a tool's JSON schema (object with typed ``properties``; ``required`` names declared ones)."""
    if not isinstance(schema, Mapping):
        return [f"{where} must be a JSON object schema"]
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append(f"{where}.type must be 'object'")
    props = schema.get("properties", {})
    if not isinstance(props, Mapping):
        return problems + [f"{where}.properties must be an object"]
    for name, prop in props.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            problems.append(f"{where}: parameter name {name!r} must be alphanumeric/underscore")
        if not isinstance(prop, Mapping) or not isinstance(prop.get("type"), str) or prop["type"] not in JSON_TYPES:
            problems.append(f"{where}.properties.{name} needs a 'type' among {sorted(JSON_TYPES)}")
    required = schema.get("required", [])
    if not isinstance(required, list) or any(r not in props for r in required):
        problems.append(f"{where}.required must list declared properties")
    return problems
