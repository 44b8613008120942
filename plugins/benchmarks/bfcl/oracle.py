"""The ``bfcl-oracle`` LLM backend: replays a BFCL entry's ground truth, one call per message.

In turn k (the k-th user message) it emits the ground truth's calls of turn k in order, then answers in text,
which makes the ``bfcl`` user deliver the next turn. Option ``corruption``: ``none`` (default) or
``drop_last_call`` (the last call of every turn is left out), to show the checker is not a free reward.
Ground-truth calls are parsed, never evaluated (:func:`~synthagent.plugins.benchmarks.bfcl.data.parse_call`).
"""

from __future__ import annotations

import copy

from synthagent.core.errors import ConfigError
from synthagent.core.models import Message, ToolCall, stable_id
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.plugins.benchmarks.bfcl import data
from synthagent.plugins.benchmarks.bfcl.environment import task_entry

__all__ = ["BfclOracle", "CORRUPTIONS", "DONE_TEXT", "MISSING_TEXT"]

CORRUPTIONS = ("none", "drop_last_call")
#: The text after a turn's calls.
DONE_TEXT = "Done: I have completed this request."
#: The text of a turn whose ground truth has no call (a missing parameter or function).
MISSING_TEXT = "I cannot complete this with what I have. Could you give me the missing information or function?"


class BfclOracle:
    """Replays the ground truth of the task's BFCL entry (``ChatRequest.task``)."""

    def __init__(self, corruption: str = "none", model: str = "") -> None:
        if corruption not in CORRUPTIONS:
            raise ConfigError(f"bfcl-oracle: unknown corruption {corruption!r}; choose one of {', '.join(CORRUPTIONS)}")
        data.require_bfcl()
        self.corruption = corruption
        self.name = "bfcl-oracle" if corruption == "none" else f"bfcl-oracle:{corruption}"
        self._plans: dict[str, list[list[tuple[str, dict]]]] = {}

    def _plan(self, request: ChatRequest) -> list[list[tuple[str, dict]]]:
        task = request.task
        if task is None:
            raise ConfigError("bfcl-oracle needs the task in the request (it replays the task's ground truth)")
        if task.id not in self._plans:
            turns = data.ground_truth_calls(task_entry(task))
            if self.corruption == "drop_last_call":
                turns = [turn[:-1] for turn in turns]
            self._plans[task.id] = turns
        return self._plans[task.id]

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The next ground-truth call of the current turn, or text when the turn's calls are done."""
        plan = self._plan(request)
        messages = request.messages
        turn = sum(1 for m in messages if m.role == "user") - 1
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        made = sum(len(m.tool_calls) for m in messages[last_user + 1:] if m.role == "assistant")
        calls = plan[turn] if 0 <= turn < len(plan) else []
        if made < len(calls):
            name, arguments = calls[made]
            call = ToolCall(id=stable_id("call", request.task.id if request.task else "", turn, made), name=name,
                            arguments=copy.deepcopy(arguments))
            return ChatResponse(Message("assistant", None, tool_calls=(call,)))
        full = data.ground_truth_calls(task_entry(request.task)) if request.task and not calls else None
        empty_turn = full is not None and 0 <= turn < len(full) and not full[turn]
        return ChatResponse(Message("assistant", MISSING_TEXT if empty_turn else DONE_TEXT))
