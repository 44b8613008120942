"""Canonical keys for the task-level call -> response mapping (the tool simulator's memory).

Two calls are the same call when they name the same tool with the same arguments, whatever the key order,
number spelling (``1`` / ``1.0``) or surrounding and repeated whitespace in strings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_arguments", "call_key"]


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, Mapping):
        return {" ".join(str(k).split()): _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return str(value)


def canonical_arguments(arguments: Mapping[str, Any]) -> str:
    """Canonical JSON of a call's arguments (sorted keys, normalized numbers and whitespace)."""
    return json.dumps(_norm(dict(arguments)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def call_key(tool: str, arguments: Mapping[str, Any]) -> str:
    """The mapping-store key of a call: ``tool:sha256(canonical arguments)`` (bounded length).

    >>> call_key("get", {"b": 1.0, "a": " x  y "}) == call_key("get", {"a": "x y", "b": 1})
    True
    """
    digest = hashlib.sha256(canonical_arguments(arguments).encode("utf-8")).hexdigest()[:32]
    return f"{tool.strip()}:{digest}"
