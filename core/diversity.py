"""Lexical diversity of a run's conversations: does the data sound canned?

:func:`lexical_diversity` looks at the assistant's text turns (messages without tool calls) and at the
simulated user's turns (every user message after the opening request, which the task generator wrote) and
reports, for each side:

* ``distinct_2``: distinct word bigrams / all word bigrams (bigrams never cross a turn), in [0, 1];
* ``top_template_share``: the share of turns that have the most common *template*. A turn becomes a
  template by masking what the task put into it: the task's fact values, descriptions and statements, its
  workflow step descriptions, answer values and tool names, then quoted strings, e-mail addresses and any
  word holding a digit (numbers, dates, ids). Runs of masks joined by commas, semicolons or "and" fold into
  one, so a list of two values and a list of three share a template.

Pure: no I/O, no randomness; the run summary (``summarize``) reports it under ``diversity``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["lexical_diversity", "template_of", "distinct_n", "MASK"]

#: What a masked value becomes in a template.
MASK = "<v>"

_WORD = re.compile(r"[a-z0-9<>']+")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^'\s][^']*'(?![a-z])|`[^`]*`")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGITS = re.compile(r"[^\s,;:()]*\d(?:[^\s,;:()]*[^\s,;:().!?'\"])?")
_FOLD = re.compile(r"<v>(?:\s*(?:,|;|\band\b|&)\s*(?:and\s+)?<v>)+")


def _phrases(task: Any) -> list[str]:
    """The task's own words to mask, longest first (so a description is masked before a value inside it)."""
    found: set[str] = set()
    for fact in tuple(getattr(task, "user_context", ())) + tuple(getattr(task, "visible_facts", ())):
        found.update(str(x) for x in (fact.value, fact.description, fact.statement))
    for step in getattr(task, "workflow", ()):
        found.add(str(step.description))
        found.add(str(step.description)[:1].lower() + str(step.description)[1:])
        found.update(str(v) for v in step.arguments.values())
    found.update(str(v) for v in getattr(task, "answer", ()))
    found.update(t.name for t in getattr(task, "tools", ()))
    return sorted((p for p in found if p.strip() and len(p.strip()) > 1), key=len, reverse=True)


def template_of(text: str, phrases: Sequence[str] = ()) -> str:
    """``text`` with ``phrases`` (task-specific words), quoted strings, e-mail addresses and words holding a
    digit replaced by :data:`MASK`, runs of masks folded into one, lower-cased and whitespace-collapsed."""
    out = text
    for phrase in phrases:
        if phrase in out:
            out = out.replace(phrase, MASK)
    out = _QUOTED.sub(MASK, out)
    out = _EMAIL.sub(MASK, out)
    out = _DIGITS.sub(lambda m: m.group(0) if MASK in m.group(0) else MASK, out)
    out = re.sub(r"\s+", " ", out.lower()).strip()
    return _FOLD.sub(MASK, out)


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (lower-cased; n-grams stay within a text);
    0.0 when there are none."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = _WORD.findall(text.lower())
        grams.extend(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def _side(turns: list[tuple[str, list[str]]]) -> dict[str, Any]:
    templates = Counter(template_of(text, phrases) for text, phrases in turns)
    top = templates.most_common(1)
    return {
        "turns": len(turns),
        "distinct_2": distinct_n(text for text, _ in turns),
        "templates": len(templates),
        "top_template_share": round(top[0][1] / len(turns), 4) if top else 0.0,
        "top_template": top[0][0] if top else None,
    }


def lexical_diversity(trajectories: Iterable[Any], tasks: Iterable[Any] = ()) -> dict[str, dict[str, Any]]:
    """Lexical diversity of the assistant's text turns and of the simulated user's turns.

    :param trajectories: :class:`~synthagent.core.models.Trajectory` records (anything with ``task_id`` and
        ``messages``).
    :param tasks: their :class:`~synthagent.core.models.Task` records, whose words are masked in templates
        (a trajectory whose task is missing is still counted, with only generic masking).
    :returns: ``{"assistant": SIDE, "user": SIDE}``, SIDE holding ``turns``, ``distinct_2``, ``templates``
        (how many distinct ones), ``top_template_share`` and ``top_template`` (None without turns).
    """
    phrases = {t.id: _phrases(t) for t in tasks}
    assistant: list[tuple[str, list[str]]] = []
    user: list[tuple[str, list[str]]] = []
    for traj in trajectories:
        words = phrases.get(traj.task_id, [])
        seen_request = False
        for m in traj.messages:
            if m.role == "assistant" and not m.tool_calls and m.content:
                assistant.append((m.content, words))
            elif m.role == "user" and m.content:
                if seen_request:
                    user.append((m.content, words))
                seen_request = True
    return {"assistant": _side(assistant), "user": _side(user)}
