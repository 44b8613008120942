"""The ``rule`` user simulator: answers only what it is asked, from the hidden context.

It reveals a hidden (or stated) fact when the agent's question contains one of the fact's keywords, answers
a confirmation request with yes, and stops once the agent speaks without asking for anything. It never emits
tool calls and never sends an empty turn. Deterministic: no model, no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Message, Task
from synthagent.core.protocols import UserTurn
from synthagent.plugins.common.evidence import CONFIRM, asked_facts

__all__ = ["RuleUser", "RuleUserSession", "asked_facts"]

_DONE = re.compile(r"\banything else\b", re.I)
STOP_TEXT = "Thank you, that's all I needed."


class RuleUserSession:
    """One episode of the rule-based user."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.facts = tuple(task.user_context) + tuple(task.visible_facts)

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """Answer the agent's last message."""
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        text = (last.content or "") if last else ""
        is_question = "?" in text
        if is_question:
            wanted = asked_facts(text, self.facts)
            if wanted:
                return UserTurn(Message("user", " ".join(f.statement for f in wanted)))
            if CONFIRM.search(text):
                return UserTurn(Message("user", "Yes, please go ahead."))
            if not _DONE.search(text):
                return UserTurn(Message("user", "I'm not sure what you mean; I don't have any other details."))
        return UserTurn(Message("user", STOP_TEXT), stop=True)


class RuleUser:
    """Factory of :class:`RuleUserSession` (no options)."""

    name = "rule"

    async def start(self, task: Task, seed: int) -> RuleUserSession:
        """Begin an episode."""
        return RuleUserSession(task)


@hookimpl
def synth_register_user_simulators(register: Any) -> None:
    """Register the ``rule`` user simulator."""
    register("rule", RuleUser, description="answers only what it is asked, from the hidden context (offline)")
