"""Helpers for plugin authors' tests: a scripted chat model, a scripted user, an in-memory store.

Example::

    from synthagent.core.testing import ScriptedChatModel, ScriptedUser, tool_call_message
    policy = ScriptedChatModel([tool_call_message("get_balance", {"account_id": "A1"}), "Your balance is 5."])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from synthagent.core.models import Message, Task, ToolCall, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse, UserTurn

__all__ = ["ScriptedChatModel", "ScriptedUser", "InMemoryMappingStore", "tool_call_message"]


def tool_call_message(name: str, arguments: Mapping[str, Any], call_id: str = "call_0") -> Message:
    """An assistant message that calls one tool."""
    return Message("assistant", None, (ToolCall(call_id, name, dict(arguments)),))


class ScriptedChatModel:
    """An LLM backend that replies with a fixed script (strings become assistant text messages).

    After the script runs out it repeats ``default``. Every request is kept in :attr:`requests`.
    """

    def __init__(self, script: Iterable[Message | str], *, name: str = "scripted", default: str = "Done.") -> None:
        self.script = [m if isinstance(m, Message) else Message("assistant", m) for m in script]
        self.name = name
        self.default = default
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The next scripted message."""
        self.requests.append(request)
        index = len(self.requests) - 1
        message = self.script[index] if index < len(self.script) else Message("assistant", self.default)
        return ChatResponse(message, Usage(prompt_tokens=0, completion_tokens=0, calls=1))


class ScriptedUser:
    """A user simulator (and session) that replies with a fixed script, then stops."""

    def __init__(self, replies: Sequence[str] = (), stop_text: str = "Thanks, bye.") -> None:
        self.replies = list(replies)
        self.stop_text = stop_text
        self.turns = 0

    async def start(self, task: Task, seed: int) -> ScriptedUser:
        """A fresh session with the same script."""
        return ScriptedUser(self.replies, self.stop_text)

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """The next scripted reply, or a stop."""
        self.turns += 1
        if self.turns <= len(self.replies):
            return UserTurn(Message("user", self.replies[self.turns - 1]))
        return UserTurn(Message("user", self.stop_text), stop=True)


class InMemoryMappingStore:
    """A mapping store in a dict (first writer wins)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}

    async def get(self, task_id: str, key: str) -> Any | None:
        """The stored response, or None."""
        return self.data.get((task_id, key))

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Store unless present; return the stored response."""
        return self.data.setdefault((task_id, key), value)
