"""The ``llm`` tool simulator: a teacher model answers tool calls, kept consistent by a mapping store.

Within a task, the same call (arguments in any key order, numbers and whitespace normalized: see
:func:`synthagent.core.mapping.call_key`) always gets the identical response, because responses are stored
per task in the run's mapping store (first writer wins, so concurrent rollouts agree too).

A teacher-written task carries the expected response of each workflow call (``WorkflowStep.response``):
those pairs **seed** the task's mapping at the start of every rollout, so the workflow is answered the same
way in every rollout, process and Ray worker. A call outside the seed is simulated by the teacher, shown the
task, its seeded workflow calls and this rollout's calls so far; the first answer written wins.

Optionally a near-duplicate call is judged equivalent to an earlier one by the teacher and reuses its
response. The earlier calls it is compared with are the seeded workflow calls and an append-only index of
simulated calls kept **in the mapping store** (keys ``~index:TOOL:N``), so matching holds across worker
processes and Ray. A reply that is not valid JSON is re-asked once; the re-ask bypasses the store, and only a
valid response is stored.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.mapping import call_key, canonical_arguments
from synthagent.core.models import Message, StateChange, Task, ToolCall
from synthagent.core.protocols import RunContext, ToolResult
from synthagent.core.teacher import ask_json, load_prompt, render
from synthagent.core.toolschema import argument_problems

__all__ = ["LLMToolSimulator", "LLMToolSession"]

_PKG = "synthagent.plugins.simulators.tools.llm"


class LLMToolSimulator:
    """Simulated tools answered by the teacher through the mapping store.

    :param equivalence: ``off`` (exact canonical match only) or ``teacher`` (a near-duplicate call of the same
        tool is judged by the teacher and reuses the earlier response when equivalent).
    :param history: how many earlier calls of the task to show the teacher.
    :param temperature: sampling temperature of the simulation calls.
    :param backend: an LLM backend of its own for the simulation and equivalence calls (e.g. ``openai`` with
        ``backend_options = {base_url = ..., model = ...}``: a small model answers the tool calls while the run's
        teacher writes the tasks and plays the agent); empty (default): the run's teacher.
    :param backend_options: the options of ``backend``.
    """

    name = "llm"

    def __init__(self, equivalence: str = "off", history: int = 12, temperature: float = 0.0, backend: str = "",
                 backend_options: dict[str, Any] | None = None) -> None:
        if equivalence not in ("off", "teacher"):
            raise ConfigError(f"llm tools: equivalence must be 'off' or 'teacher', got {equivalence!r}")
        self.equivalence = equivalence
        self.history = int(history)
        self.temperature = float(temperature)
        self.prompt, self.prompt_hash = load_prompt(_PKG, "tool_sim.md")
        self.eq_prompt, self.eq_hash = load_prompt(_PKG, "equivalence.md")
        #: hits, misses, equivalent_hits, failures, stored_by_other (a concurrent writer won), seeded (workflow
        #: calls written into the store), and tool_response_repair_asked (re-asks after malformed output).
        self.stats: Counter[str] = Counter()
        self.llm: Any = None
        self.mapping: Any = None
        self.index_limit = 64
        self.backend = str(backend)
        self.backend_options = dict(backend_options or {})

    def setup(self, ctx: RunContext) -> None:
        """Take the run's mapping store, and its teacher backend or the ``backend`` option's own."""
        self.mapping = ctx.mapping
        if self.backend:
            if ctx.backend is None:
                raise ConfigError(f"the llm tools simulator's backend = {self.backend!r} is built by the Runtime: "
                                  "set it up with a RunContext the Runtime made (Runtime.setup)")
            self.llm = ctx.backend(self.backend, self.backend_options, owner="tools")
        else:
            self.llm = ctx.llm

    def prompt_hashes(self) -> dict[str, str]:
        """Hashes of this simulator's prompts (recorded in the manifest)."""
        return {"llm_tools/tool_sim.md": self.prompt_hash, "llm_tools/equivalence.md": self.eq_hash}

    async def start(self, task: Task, seed: int) -> LLMToolSession:
        """A session for one rollout of ``task``."""
        if self.llm is None or self.mapping is None:
            raise ConfigError("the llm tool simulator needs setup(RunContext) with an LLM backend and a mapping store")
        session = LLMToolSession(self, task, seed)
        await session.seed_workflow()
        return session


class LLMToolSession:
    """One rollout's simulated tools."""

    def __init__(self, sim: LLMToolSimulator, task: Task, seed: int) -> None:
        self.sim = sim
        self.task = task
        self.seed = seed
        self.tools = {t.name: t for t in task.tools}
        self.calls: list[tuple[ToolCall, Any]] = []
        #: the task's seeded workflow calls: (tool, arguments, key, response)
        self.seeded = [(st.tool, dict(st.arguments), call_key(st.tool, st.arguments), st.response)
                       for st in task.workflow if st.tool and isinstance(st.response, (Mapping, list))]

    async def seed_workflow(self) -> None:
        """Write the workflow's expected call -> response pairs into the store (first writer wins: a response
        already stored for the same call is kept)."""
        for _tool, _args, key, response in self.seeded:
            if await self.sim.mapping.get(self.task.id, key) is None:
                await self.sim.mapping.put(self.task.id, key, response)
                self.sim.stats["seeded"] += 1

    async def call(self, call: ToolCall) -> ToolResult:
        """Answer one call from the store, or from the teacher (then store it)."""
        sim = self.sim
        if call.error:
            return ToolResult({"error": "malformed_call", "message": call.error}, ok=False)
        spec = self.tools.get(call.name)
        if spec is None:
            return ToolResult({"error": "unknown_tool", "message": f"no tool named {call.name!r}; use one of "
                               f"{sorted(self.tools)}"}, ok=False)
        problems = argument_problems(spec, call.arguments)
        if problems:
            return ToolResult({"error": "invalid_arguments", "message": "; ".join(problems)}, ok=False)
        key = call_key(call.name, call.arguments)
        stored = await sim.mapping.get(self.task.id, key)
        if stored is None and sim.equivalence == "teacher":
            stored = await self._equivalent(call, key)
        if stored is not None:
            sim.stats["hits"] += 1
            return self._result(call, stored)
        sim.stats["misses"] += 1
        response = await self._simulate(call, spec)
        if response is None:
            sim.stats["failures"] += 1
            return ToolResult({"error": "tool_unavailable", "message": "the tool did not answer; try again later"},
                              ok=False)
        kept = await sim.mapping.put(self.task.id, key, response)
        if kept != response:
            sim.stats["stored_by_other"] += 1
        if sim.equivalence == "teacher":
            await self._index(call)
        return self._result(call, kept)

    async def _index(self, call: ToolCall) -> None:
        """Append the call to the store's per-tool index (a first-writer-wins log: take the first free slot)."""
        entry = {"arguments": canonical_arguments(call.arguments), "key": call_key(call.name, call.arguments)}
        for n in range(self.sim.index_limit):
            slot = f"~index:{call.name}:{n}"
            kept = await self.sim.mapping.put(self.task.id, slot, entry)
            if kept == entry or (isinstance(kept, Mapping) and kept.get("key") == entry["key"]):
                return

    async def _earlier(self, tool: str) -> list[tuple[str, str]]:
        """Earlier calls of ``tool`` in this task: the seeded ones, then the store's index."""
        out = [(canonical_arguments(a), k) for t, a, k, _ in self.seeded if t == tool]
        for n in range(self.sim.index_limit):
            entry = await self.sim.mapping.get(self.task.id, f"~index:{tool}:{n}")
            if not isinstance(entry, Mapping):
                break
            out.append((str(entry.get("arguments")), str(entry.get("key"))))
        return out

    def _result(self, call: ToolCall, response: Any) -> ToolResult:
        self.calls.append((call, response))
        failed = isinstance(response, dict) and "error" in response
        return ToolResult(response, ok=not failed)

    async def _simulate(self, call: ToolCall, spec: Any) -> Any:
        sim = self.sim
        seeded = [f"- {t}({json.dumps(a, sort_keys=True)}) -> {json.dumps(r)[:600]}" for t, a, _, r in self.seeded]
        history = "\n".join(seeded + [f"- {c.name}({json.dumps(c.arguments, sort_keys=True)}) -> {json.dumps(r)[:600]}"
                                      for c, r in self.calls[-sim.history:]]) or "(none)"
        prompt = render(sim.prompt, tool_name=spec.name, tool_description=spec.description,
                        parameters=spec.parameters, returns=spec.returns or {}, history=history,
                        task=self.task.full_instruction,
                        call=f"{spec.name}({json.dumps(call.arguments, sort_keys=True)})")

        def check(value: Any) -> list[str]:
            return [] if isinstance(value, (dict, list)) else ["the response must be a JSON object or array"]

        value, _ = await ask_json(sim.llm, [Message("user", prompt)], check=check, label="tool_response",
                                  stats=sim.stats, params={"temperature": sim.temperature, "json_schema": {
                                      "name": "tool_response", "schema": spec.returns or {"type": "object"}}},
                                  seed=self.seed)
        return value

    async def _equivalent(self, call: ToolCall, key: str) -> Any:
        sim = self.sim
        earlier = [(a, k) for a, k in await self._earlier(call.name) if k != key]
        mine = canonical_arguments(call.arguments)
        for args, other_key in earlier[-5:]:
            prompt = render(sim.eq_prompt, tool_name=call.name, tool_description=self.tools[call.name].description,
                            a=args, b=mine)
            value, _ = await ask_json(sim.llm, [Message("user", prompt)], repairs=0, label="equivalence",
                                      params={"json_schema": {"name": "equivalence", "schema": {
                                          "type": "object", "required": ["same"],
                                          "properties": {"same": {"type": "boolean"}}}}},
                                      stats=sim.stats, check=lambda v: [] if isinstance(v, dict) and
                                      isinstance(v.get("same"), bool) else ["need {\"same\": true|false}"])
            if value and value["same"]:
                stored = await sim.mapping.get(self.task.id, other_key)
                if stored is not None:
                    sim.stats["equivalent_hits"] += 1
                    return await sim.mapping.put(self.task.id, key, stored)
        return None

    def final_state(self) -> StateChange | None:
        """Simulated tools keep no database state."""
        return None

    async def aclose(self) -> None:
        """Nothing to release."""


@hookimpl
def synth_register_tool_simulators(register: Any) -> None:
    """Register the ``llm`` tool simulator."""
    register("llm", LLMToolSimulator, description="teacher-simulated tools, consistent through the mapping store")
