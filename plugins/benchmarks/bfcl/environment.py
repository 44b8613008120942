"""The BFCL multi-turn environment: task generator, tool simulator and user simulator.

* :class:`BfclGenerator` (``bfcl-multi-turn``) turns each entry of a category into a :class:`Task`: the tools
  are the involved API classes' function docs, the first turn is the instruction, the later turns stay in the
  BFCL entry, which the ``bfcl`` user reads them from (they are scripted requests, not hidden facts the agent
  must ask for, so ``user_context`` is empty), the ground truth is the workflow, and ``provenance.slot`` is the
  BFCL entry id every other BFCL component looks the entry up by.
* :class:`BfclTools` (``bfcl``) executes calls on BFCL's own API classes, instantiated per episode from the
  entry's ``initial_config``; its final state is the instances' public attributes.
* :class:`BfclUser` (``bfcl``) delivers the entry's turns in order, one each time the agent answers in text,
  and stops after the last.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.models import (
    Message,
    Persona,
    Provenance,
    StateChange,
    Task,
    ToolCall,
    ToolSpec,
    WorkflowStep,
    canonical_json,
    stable_id,
)
from synthagent.core.protocols import GenerationContext, ToolResult, UserTurn
from synthagent.plugins.benchmarks.bfcl import data

__all__ = ["SYSTEM_PROMPT", "STOP_TEXT", "BfclGenerator", "BfclTools", "BfclToolSession", "BfclUser",
           "BfclUserSession", "task_entry", "entry_task"]

SYSTEM_PROMPT = ("You are an assistant that fulfils the user's requests by calling the functions you are given. "
                 "Complete each request with function calls; when you have done all you can for the current "
                 "request, or need more information from the user, reply in plain text.")

#: The user's last message, after the last turn.
STOP_TEXT = "Thank you, that's all."


def task_entry(task: Task) -> dict[str, Any]:
    """The BFCL entry (with ``ground_truth``) a task was made from (``provenance.slot``)."""
    if task.provenance.generator != "bfcl-multi-turn":
        raise ConfigError(f"bfcl: task {task.id} was not made by the bfcl-multi-turn generator "
                          f"(generator {task.provenance.generator!r}); use --set generator=bfcl-multi-turn")
    return data.entry(task.provenance.slot)


def entry_task(row: dict[str, Any], seed: int = 0) -> Task:
    """The synthagent task of one BFCL entry."""
    category = data.category_of(row["id"])
    turns = data.turn_texts(row)
    tools = tuple(ToolSpec(name=d["name"], description=d.get("description", ""),
                           parameters=data.tool_parameters(d.get("parameters") or {"type": "dict", "properties": {}}),
                           returns=data.tool_parameters(d.get("response") or {}))
                  for d in data.func_docs(row))
    workflow: list[WorkflowStep] = []
    for t, turn in enumerate(data.ground_truth_calls(row)):
        for name, arguments in turn:
            workflow.append(WorkflowStep(index=len(workflow), description=f"turn {t}: {data.render_call(name, arguments)}",
                                         tool=name, arguments=arguments, bindings={k: "literal" for k in arguments}))
    return Task(
        id=stable_id("task", "bfcl", row["id"]),
        domain="bfcl",
        persona=Persona("bfcl-user", "A user of BFCL's multi-turn API environment (" + ", ".join(row["involved_classes"]) + ")."),
        system_prompt=SYSTEM_PROMPT,
        tools=tools,
        instruction=turns[0],
        full_instruction="\n".join(f"Turn {t}: {text}" for t, text in enumerate(turns)),
        user_context=(),  # the later turns are scripted requests, not facts to ask for: the user reads the entry
        visible_facts=(),
        workflow=tuple(workflow),
        provenance=Provenance(generator="bfcl-multi-turn", seed=seed, slot=row["id"], template=f"multi_turn_{category}"),
    )


class BfclGenerator:
    """Tasks from one BFCL multi-turn category, in the package's order (the first ``count``)."""

    name = "bfcl-multi-turn"

    def __init__(self, category: str = "base") -> None:
        if category not in data.CATEGORIES:
            raise ConfigError(f"bfcl-multi-turn: unknown category {category!r}; choose one of {', '.join(data.CATEGORIES)}")
        data.require_bfcl()
        self.category = category

    async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
        """Yield the category's first ``ctx.count`` entries as tasks (all of them when count exceeds it)."""
        for row in data.load_entries(self.category)[: ctx.count]:
            yield entry_task(row, ctx.seed)


def _digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(state).encode("utf-8")).hexdigest()


class BfclToolSession:
    """One episode: BFCL's API class instances for the task's entry, called by name with the call's arguments."""

    def __init__(self, task: Task) -> None:
        self.row = task_entry(task)
        self.instances = data.instantiate(self.row)
        self.offered = {spec.name for spec in task.tools}
        self.initial = data.public_state(self.instances)
        self._state = self.initial
        #: Every executed call in order, as ``(name, arguments, result)``.
        self.executed: list[tuple[str, dict[str, Any], Any]] = []

    def _method(self, name: str) -> Any:
        if name not in self.offered or name.startswith("_"):
            return None
        for instance in self.instances.values():
            method = getattr(instance, name, None)
            if callable(method):
                return method
        return None

    async def call(self, call: ToolCall) -> ToolResult:
        """Execute the call on the API classes; a bad call gets an error observation, never an exception."""
        if call.error:
            return ToolResult(f"Error: {call.error}", ok=False)
        method = self._method(call.name)
        if method is None:
            return ToolResult(f"Error: no function named {call.name!r} is available", ok=False)
        arguments = copy.deepcopy(dict(call.arguments))  # the API classes keep (and mutate) argument lists
        try:
            result = method(**arguments)
        except Exception as exc:  # noqa: BLE001 - the API class's error is the observation, as in BFCL
            self.executed.append((call.name, dict(call.arguments), f"Error during execution: {exc}"))
            return ToolResult(f"Error during execution: {exc}", ok=False)
        self.executed.append((call.name, dict(call.arguments), result))
        state = data.public_state(self.instances)
        wrote = state != self._state
        self._state = state
        ok = not (isinstance(result, dict) and "error" in result)
        content = result if isinstance(result, (dict, list, str)) else str(result)
        return ToolResult(content, ok=ok, wrote=wrote)

    def final_state(self) -> StateChange:
        """The instances' public attributes: digest of all, and the attributes that changed (``{"value": ...}``)."""
        changes: dict[str, dict[str, dict[str, Any] | None]] = {}
        for cls, attrs_now in self._state.items():
            before = self.initial.get(cls, {})
            diff: dict[str, dict[str, Any] | None] = {k: {"value": v} for k, v in attrs_now.items()
                                                      if before.get(k) != v}
            if diff:
                changes[cls] = diff
        return StateChange(digest=_digest(self._state), changes=changes)

    async def aclose(self) -> None:
        """Drop the instances."""
        self.instances = {}


class BfclTools:
    """Executes BFCL's API classes (file system, messaging, trading, travel, vehicle, ...) per episode."""

    name = "bfcl"

    def __init__(self) -> None:
        data.require_bfcl()

    async def start(self, task: Task, seed: int) -> BfclToolSession:
        """Fresh instances loaded from the task's entry's ``initial_config``."""
        return BfclToolSession(task)


class BfclUserSession:
    """Delivers the task's turns: turn k is the k-th user message; after the last one the user stops."""

    def __init__(self, task: Task) -> None:
        self.turns = [task.instruction] + data.turn_texts(data.entry(task.provenance.slot))[1:]

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """The next turn's request, or a stop once every turn was delivered."""
        delivered = sum(1 for m in messages if m.role == "user")
        if delivered < len(self.turns):
            return UserTurn(Message("user", self.turns[delivered]))
        return UserTurn(Message("user", STOP_TEXT), stop=True)


class BfclUser:
    """The BFCL user: the entry's turns in order (no model)."""

    name = "bfcl"

    async def start(self, task: Task, seed: int) -> BfclUserSession:
        """Begin an episode."""
        task_entry(task)  # a task from another generator is a clear error, not a silent one-turn episode
        return BfclUserSession(task)
