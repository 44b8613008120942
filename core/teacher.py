"""Asking a teacher model for JSON, safely: teacher output is data, never code.

:func:`extract_json` finds the JSON value in a model reply (code fences and surrounding prose allowed);
:func:`ask_json` asks, checks the value with a caller's validator, re-asks once with the problems listed
(the *repair* prompt), and returns either the value or the reason it was dropped. Prompts are package data
read by :func:`load_prompt`, which also returns their hash for the run manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

from synthagent.core.errors import FatalRunError
from synthagent.core.models import Message
from synthagent.core.protocols import ChatRequest

__all__ = ["extract_json", "ask_json", "load_prompt", "render", "TeacherUnavailable"]


class TeacherUnavailable(Exception):
    """The teacher backend failed for infrastructure reasons (the item is retried on resume, not dropped)."""


def extract_json(text: str | None) -> Any:
    """The first JSON object or array in ``text``.

    :raises ValueError: with a short reason when there is none or it does not parse.
    """
    if not text or not text.strip():
        raise ValueError("empty reply")
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "{["]
    if not starts:
        raise ValueError("no JSON object in the reply")
    last_error = "unparseable JSON"
    for start in starts[:50]:
        try:
            value, _ = decoder.raw_decode(text, start)
            return value
        except ValueError as exc:
            last_error = f"invalid JSON: {getattr(exc, 'msg', exc)}"
        except RecursionError:
            last_error = "JSON nested too deeply"
    raise ValueError(last_error)


def load_prompt(package: str, name: str) -> tuple[str, str]:
    """Read prompt ``name`` from ``package``'s ``prompts/`` folder; return (text, sha256 hex prefix)."""
    text = resources.files(package).joinpath("prompts", name).read_text(encoding="utf-8")
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def render(template: str, **values: Any) -> str:
    """Fill ``{{name}}`` placeholders (values that are not strings are JSON-encoded). No code is evaluated."""
    out = template
    for key, value in values.items():
        out = out.replace("{{" + key + "}}", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                                                           indent=1))
    return out


async def ask_json(
    llm: Any,
    messages: Sequence[Message],
    *,
    check: Callable[[Any], list[str]],
    label: str,
    stats: Counter[str],
    params: Mapping[str, Any] | None = None,
    repairs: int = 1,
    seed: int = 0,
) -> tuple[Any | None, str | None]:
    """Ask ``llm`` for JSON that passes ``check``; re-ask with the problems up to ``repairs`` times.

    ``check`` should be total; if it raises anyway on an oddly shaped value, that is a problem to re-ask
    with, never an exception. ``params`` may carry ``json_schema`` (``{"name", "schema"}``), which a backend
    that supports structured outputs sends to the server (others ignore it).

    :returns: ``(value, None)`` or ``(None, reason)`` where reason is ``"{label}_invalid_json"`` or
        ``"{label}_invalid"``; each attempt's failures are counted in ``stats``.
    :raises TeacherUnavailable: the backend itself failed (counted as ``{label}_teacher_unavailable``).
    """
    convo = list(messages)
    reason = f"{label}_invalid"
    for attempt in range(repairs + 1):
        try:
            response = await llm.chat(ChatRequest(messages=tuple(convo), params=dict(params or {}), seed=seed))
        except FatalRunError:  # a refused API key (AuthenticationError): no retry or resume can mend it
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure is infrastructure, not data
            stats[f"{label}_teacher_unavailable"] += 1
            raise TeacherUnavailable(f"{type(exc).__name__}: {exc}") from exc
        text = response.message.content or ""
        try:
            value = extract_json(text)
        except ValueError as exc:
            problems = [str(exc)]
            reason = f"{label}_invalid_json"
        else:
            reason = f"{label}_invalid"
            try:
                problems = list(check(value))
            except Exception as exc:  # noqa: BLE001 - a check must be total: an oddly shaped value is a problem
                problems = [f"the JSON has an unexpected shape ({type(exc).__name__}: {str(exc)[:120]})"]
        if not problems:
            if attempt:
                stats[f"{label}_repaired"] += 1
            return value, None
        stats[reason if attempt == repairs else f"{label}_repair_asked"] += 1
        convo += [
            Message("assistant", text[:4000]),
            Message("user", "That answer cannot be used:\n- " + "\n- ".join(problems[:10])
                    + "\nReply again with the corrected JSON only, no prose."),
        ]
    return None, reason
