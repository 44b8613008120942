"""Parsing a model's output into an assistant :class:`Message` with :class:`ToolCall` records.

Three shapes are understood:

* native OpenAI ``tool_calls`` (``{"id", "type": "function", "function": {"name", "arguments"}}``), with
  ``arguments`` as a JSON string or an object;
* calls embedded in text as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes / Qwen /
  SmolLM style; an unclosed last block is read to the end of the text);
* a bare JSON object (or list of objects) with ``name`` and ``arguments`` (or ``parameters``), optionally in
  a Markdown code fence.

A malformed call never raises: it becomes a ``ToolCall`` whose ``error`` says what was wrong, and the
environment answers it with an error observation so the policy can correct itself. The parser as a whole
never raises on any input (fuzzed in ``tests/core/test_toolcalls.py``).

Everything the parser returns is storable (the run store writes strict JSON): lone UTF-16 surrogates anywhere in
the output are replaced with U+FFFD (:func:`storable_text`), and arguments holding a non-finite number (``NaN``,
``Infinity``, or a literal like ``1e999`` that overflows) make the call malformed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.models import Message, ToolCall

__all__ = ["parse_assistant", "parse_native_calls", "parse_text_calls", "storable", "storable_text"]

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_MAX_RAW = 200


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate (which UTF-8 cannot encode) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def storable(value: Any, _depth: int = 0) -> Any:
    """``value`` (decoded JSON) with :func:`storable_text` applied to every string and object key."""
    if isinstance(value, str):
        return storable_text(value)
    if _depth > 200:  # deeper than any JSON decoder here produces; left as is
        return value
    if isinstance(value, Mapping):
        return {storable(k, _depth + 1) if isinstance(k, str) else k: storable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v, _depth + 1) for v in value]
    return value


def _non_finite(value: Any, path: str = "", _depth: int = 0) -> str | None:
    """The JSON path of the first non-finite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(the value)"
    if _depth > 200:
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k), _depth + 1)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}[{i}]", _depth + 1)
            if found:
                return found
    return None


def _short(text: str) -> str:
    return text if len(text) <= _MAX_RAW else text[:_MAX_RAW] + "..."


def _call_from_object(obj: Any, call_id: str) -> ToolCall:
    if not isinstance(obj, Mapping):
        return ToolCall(call_id, "", {}, error=f"a tool call must be a JSON object, got {type(obj).__name__}")
    if "function" in obj and isinstance(obj["function"], Mapping):  # an OpenAI-shaped object inside text
        obj = obj["function"]
    name = obj.get("name")
    name = storable_text(name) if isinstance(name, str) else name
    if not isinstance(name, str) or not name.strip():
        return ToolCall(call_id, "", {}, error="the tool call has no 'name' string")
    args: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as exc:
            return ToolCall(call_id, name.strip(), {}, error=f"arguments are not valid JSON ({getattr(exc, 'msg', exc)}): {_short(args)}")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        return ToolCall(call_id, name.strip(), {}, error=f"arguments must be a JSON object, got {type(args).__name__}")
    args = storable(args)  # escapes like "\ud800" decode to lone surrogates
    bad = _non_finite(args)
    if bad is not None:
        return ToolCall(call_id, name.strip(), {}, error=f"argument {bad} is not a finite number (NaN and Infinity "
                                                         "are not JSON); pass a finite number or a string")
    return ToolCall(call_id, name.strip(), {str(k): v for k, v in args.items()})


def parse_native_calls(native: Sequence[Any] | None, *, id_prefix: str = "call") -> tuple[ToolCall, ...]:
    """Parse OpenAI ``tool_calls`` (as decoded from a response body)."""
    calls: list[ToolCall] = []
    try:
        native = storable(list(native or ()))
    except Exception:  # noqa: BLE001 - the parser never raises; the items below say what is wrong
        pass
    for i, item in enumerate(native or ()):
        try:
            call_id = item.get("id") if isinstance(item, Mapping) else None
            call_id = call_id if isinstance(call_id, str) and call_id else f"{id_prefix}_{i}"
            if not isinstance(item, Mapping):
                calls.append(ToolCall(call_id, "", {}, error="a tool call must be an object"))
                continue
            calls.append(_call_from_object(item.get("function", item), call_id))
        except Exception as exc:  # noqa: BLE001 - the parser never raises
            calls.append(ToolCall(f"{id_prefix}_{i}", "", {}, error=f"unreadable tool call: {type(exc).__name__}"))
    return tuple(calls)


def _loads(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as exc:
        return None, getattr(exc, "msg", type(exc).__name__)


def parse_text_calls(content: str | None, *, id_prefix: str = "call") -> tuple[str | None, tuple[ToolCall, ...]]:
    """Find tool calls embedded in ``content``; return the remaining text (None if empty) and the calls."""
    if not content:
        return content or None, ()
    if isinstance(content, str):
        content = storable_text(content)
    try:
        calls: list[ToolCall] = []
        if "<tool_call>" in content:
            for i, match in enumerate(_BLOCK.finditer(content)):
                raw = match.group(1).strip()
                obj, error = _loads(raw)
                call_id = f"{id_prefix}_{i}"
                if error is not None:
                    calls.append(ToolCall(call_id, "", {}, error=f"tool call is not valid JSON ({error}): {_short(raw)}"))
                else:
                    calls.append(_call_from_object(obj, call_id))
            rest = _BLOCK.sub("", content).strip()
            return (rest or None), tuple(calls)
        stripped = content.strip()
        fenced = _FENCE.match(stripped)
        candidate = fenced.group(1) if fenced else stripped
        if candidate[:1] in "{[":
            obj, error = _loads(candidate)
            items = obj if isinstance(obj, list) else [obj]
            if error is None and items and all(isinstance(o, Mapping) and "name" in o for o in items):
                return None, tuple(_call_from_object(o, f"{id_prefix}_{i}") for i, o in enumerate(items))
        return content, ()
    except Exception as exc:  # noqa: BLE001 - the parser never raises
        return content, (ToolCall(f"{id_prefix}_0", "", {}, error=f"unreadable output: {type(exc).__name__}"),)


def parse_assistant(content: Any, native: Any = None, *, id_prefix: str = "call") -> Message:
    """Build the assistant message: native calls when present, else calls embedded in the text."""
    text = content if isinstance(content, str) else (None if content is None else str(content))
    text = storable_text(text) if text is not None else None
    if native:
        calls = parse_native_calls(native if isinstance(native, Sequence) and not isinstance(native, str)
                                   else [native], id_prefix=id_prefix)
        return Message("assistant", text or None, calls)
    rest, calls = parse_text_calls(text, id_prefix=id_prefix)
    return Message("assistant", rest, calls)
