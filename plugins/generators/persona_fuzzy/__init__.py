"""The ``persona-fuzzy`` task generator: the SYNTHAGENT synthesis pipeline, driven by a teacher LLM.

For each slot: a persona -> **ToolSetGen** (the teacher invents 3-8 tools with JSON-schema parameters and
returns; an invalid set gets one repair prompt, then is dropped with its reason) -> **TaskGen** (a task, its
high-level workflow with concrete tool calls, and the full instruction) -> **FuzzyRewrite** (an
underspecified instruction plus a user-only hidden context). A **gap check** keeps a task only when each
hidden value is absent from the agent-visible instruction and is needed by some workflow step (it is one of
the step's argument values). Every drop is counted by reason in :attr:`PersonaFuzzyGenerator.stats`.

Prompts are package data (``prompts/*.md``); their hashes go in the run manifest. Teacher output is data:
it is parsed as JSON and checked, never executed.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from synthagent.core.bindings import MISSING, binding_problems, parse_binding, resolve
from synthagent.core.capabilities import has_capability
from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Effect, EffectKind, Fact, Message, Persona, Provenance, Task, ToolSpec, WorkflowStep, stable_id
from synthagent.core.protocols import GenerationContext, RunContext
from synthagent.core.teacher import TeacherUnavailable, ask_json, load_prompt, render
from synthagent.core.toolschema import JSON_TYPES, argument_problems, schema_problems

__all__ = ["PersonaFuzzyGenerator", "load_personas"]

_PKG = "synthagent.plugins.generators.persona_fuzzy"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def load_personas(path: str = "") -> list[Persona]:
    """Personas from a JSONL file (``{"id", "description"}`` per line), default: the built-in set."""
    try:
        text = Path(path).read_text(encoding="utf-8") if path else \
            resources.files(_PKG).joinpath("personas.jsonl").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read personas file {path!r}: {exc}") from None
    personas = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"personas file {path or 'built-in'} line {n}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not row["id"].strip() \
                or not isinstance(row.get("description"), str) or not row["description"].strip():
            raise ConfigError(f"{where} must be an object with a non-empty string \"id\" and \"description\", "
                              f"got {line.strip()[:80]}")
        if row["id"] in seen:
            raise ConfigError(f"{where}: duplicate persona id {row['id']!r}")
        seen.add(row["id"])
        personas.append(Persona(row["id"], row["description"]))
    if not personas:
        raise ConfigError(f"no personas in {path or 'the built-in set'}")
    return personas


def _norm(value: Any) -> str:
    return " ".join(str(value).lower().split())


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and bool(str(value).strip())


def _leaves(value: Any) -> set[str]:
    """Every scalar in a JSON value, normalized (what a lookup could reveal)."""
    if isinstance(value, Mapping):
        return set().union(*(_leaves(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_leaves(v) for v in value)) if value else set()
    return {_norm(value)} if _scalar(value) else set()


class _GapDrop(Exception):
    """The workflow leaves nothing the user alone knows: the gap check drops the slot."""


_EFFECTS = ("read", "create", "update", "delete")
_OBJ = {"type": "object"}
#: A tool's ``parameters`` as the toolset check wants it (``schema_problems``): an object schema whose
#: properties each have a JSON type. Under a grammar (structured outputs) a small model can write no other.
_PARAMETERS = {"type": "object", "required": ["type", "properties"], "properties": {
    "type": {"type": "string", "enum": ["object"]},
    "properties": {"type": "object", "additionalProperties": {
        "type": "object", "required": ["type"], "properties": {"type": {"type": "string", "enum": sorted(JSON_TYPES)},
                                                               "description": {"type": "string"}}}},
    "required": {"type": "array", "items": {"type": "string"}}}}
#: JSON schemas of the three teacher steps (sent as ``params["json_schema"]`` for structured outputs). The
#: toolset's says what its check needs: snake_case names, a description, object ``parameters``; the number of
#: tools (``minItems``/``maxItems``) is added per generator from ``tools_min``/``tools_max``.
SCHEMAS: dict[str, dict[str, Any]] = {
    "toolset": {"type": "object", "required": ["domain", "tools"], "properties": {
        "domain": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "object", "required": ["name", "description", "parameters"],
                                             "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                                                            "description": {"type": "string", "minLength": 1},
                                                            "parameters": _PARAMETERS, "returns": _OBJ,
                                                            "effect": {"type": "string", "enum": list(_EFFECTS)}}}}}},
    "task": {"type": "object", "required": ["full_instruction", "workflow"], "properties": {
        "full_instruction": {"type": "string"},
        "workflow": {"type": "array", "items": {"type": "object", "required": ["tool", "arguments", "response"],
                                                "properties": {"description": {"type": "string"},
                                                               "tool": {"type": "string"}, "arguments": _OBJ,
                                                               "bindings": _OBJ, "response": {}}}},
        "answer": {"type": "array"}}},
    "fuzzy": {"type": "object", "required": ["instruction", "hidden_facts"], "properties": {
        "instruction": {"type": "string"},
        "hidden_facts": {"type": "array", "items": {"type": "object", "required": ["name", "value"], "properties": {
            "name": {"type": "string"}, "value": {}, "description": {"type": "string"},
            "keywords": {"type": "array", "items": {"type": "string"}}}}}}},
}


class PersonaFuzzyGenerator:
    """Teacher-driven task synthesis (module docstring).

    :param personas: a JSONL file of personas (default: the built-in set of 240).
    :param tools_min: fewest tools per toolset (3). :param tools_max: most tools per toolset (8).
    :param hidden_min: fewest hidden facts (1). :param hidden_max: most hidden facts (3).
    :param temperature: teacher sampling temperature. :param max_tokens: teacher completion limit.
    :param concurrency: slots synthesized at once. :param max_slots_factor: give up after count x this slots.
    :param tools_from: your own toolset (OpenAI tool schemas as JSON/JSONL, or an OpenAPI 3 document;
        ``synth run --tools-from FILE --set generator=persona-fuzzy``): the teacher writes every task for exactly
        these tools, and the toolset step asks nothing.
    :param prompt_version: pin a prompt version of ``synth evolve`` (a version file, a store directory for its
        HEAD, or a hash looked up in ``prompt_store``); its hash goes in the manifest's prompt hashes.
    """

    name = "persona-fuzzy"

    def __init__(self, personas: str = "", tools_min: int = 3, tools_max: int = 8, hidden_min: int = 1,
                 hidden_max: int = 3, temperature: float = 0.7, max_tokens: int = 1024, concurrency: int = 8,
                 max_slots_factor: int = 4, prompt_version: str = "", prompt_store: str = "",
                 tools_from: str = "") -> None:
        if not 1 <= int(tools_min) <= int(tools_max):
            raise ConfigError("persona-fuzzy: need 1 <= tools_min <= tools_max")
        if not 1 <= int(hidden_min) <= int(hidden_max):
            raise ConfigError("persona-fuzzy: need 1 <= hidden_min <= hidden_max")
        self.personas = load_personas(personas)
        self.given: tuple[str, list[ToolSpec]] | None = None
        if tools_from:
            from synthagent.core.toolsource import effect_kind, load_tools, toolset_name

            kinds: dict[str, EffectKind] = {"insert": "insert", "update": "update", "delete": "delete"}
            given = []
            for tool in load_tools(tools_from):
                fn = tool["function"]
                kind = effect_kind(fn["name"])
                given.append(ToolSpec(fn["name"], fn["description"], dict(fn["parameters"]), {},
                                      Effect(kinds[kind], "simulated") if kind in kinds else None))
            self.given = (toolset_name(tools_from).replace("_", " "), given)
        self.tools_min, self.tools_max = int(tools_min), int(tools_max)
        self.hidden_min, self.hidden_max = int(hidden_min), int(hidden_max)
        self.params = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        self.concurrency = int(concurrency)
        self.max_slots_factor = int(max_slots_factor)
        self.prompts = {name: load_prompt(_PKG, f"{name}.md") for name in ("toolset", "task", "fuzzy")}
        self.prompt_version = ""
        if prompt_version:
            from synthagent.plugins.generators.persona_fuzzy.promptstore import load_version, prompt_pairs

            version = load_version(str(prompt_version), str(prompt_store))
            self.prompts, self.prompt_version = prompt_pairs(version["prompts"]), version["hash"]
        #: Drops and repairs by reason (``toolset_invalid``, ``gap_lookupable``, ...), and ``kept``; every
        #: finished slot also counts once under ``funnel:STAGE`` (``toolset``, ``task``, ``fuzzy``, ``gap``,
        #: ``teacher_unavailable``) or ``funnel:kept``.
        self.stats: Counter[str] = Counter()
        self._order: list[int] = []
        self._order_seed: int | None = None

    def setup(self, ctx: RunContext) -> None:
        """Refuse the offline oracle as teacher: it plays an agent and cannot write JSON."""
        if has_capability(ctx.llm, "plays_workflow"):
            raise ConfigError("the persona-fuzzy generator needs a teacher model: set llm.backend (e.g. openai with "
                              "llm.base_url and llm.model); the offline oracle cannot synthesize tasks")

    def incompatible_with(self, selected: Mapping[str, str], components: Mapping[str, Any]) -> tuple[str, str] | None:
        """Refuse ``tools=sqlite`` before the run starts: persona-fuzzy tasks carry no database for it to run
        (every rollout would fail, and be retried on every resume, as an infrastructure failure)."""
        if selected.get("tools") == "sqlite":
            return "tools", ("persona-fuzzy tasks have no database (initial_state) for the sqlite tool simulator; "
                             "use --set tools=llm (the teacher simulates the synthesized tools)")
        return None

    def prompt_hashes(self) -> dict[str, str]:
        """Hashes of the three prompts (recorded in the manifest)."""
        hashes = {f"persona_fuzzy/{name}.md": digest for name, (_, digest) in self.prompts.items()}
        if self.prompt_version:
            hashes["persona_fuzzy/version"] = self.prompt_version
        return hashes

    def slots(self, ctx: GenerationContext) -> list[int]:
        """The slots to try, in order, skipping ``ctx.done_slots`` (with :meth:`synthesize`, this lets an
        executor with worker processes spread generation: one job per slot)."""
        return [i for i in range(ctx.count * self.max_slots_factor) if str(i) not in ctx.done_slots]

    async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
        """Synthesize tasks slot by slot (skipping ``ctx.done_slots``) until ``ctx.count`` exist."""
        if ctx.llm is None:
            raise ConfigError("persona-fuzzy needs the run's teacher (GenerationContext.llm)")
        needed = ctx.count - len(ctx.done_slots)
        queue = iter(self.slots(ctx))
        semaphore = asyncio.Semaphore(self.concurrency)

        async def run(i: int) -> Task | None:
            async with semaphore:
                return await self.synthesize(ctx.llm, i, ctx.seed)

        pending: set[asyncio.Task[Task | None]] = set()
        made = 0
        try:
            while made < needed:
                while len(pending) < self.concurrency and len(pending) + made < needed:
                    i = next(queue, None)
                    if i is None:
                        break
                    pending.add(asyncio.ensure_future(run(i)))
                if not pending:
                    self.stats["slots_exhausted"] += 1
                    return
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    task = fut.result()
                    if task is not None and made < needed:
                        made += 1
                        yield task
        finally:
            for fut in pending:
                fut.cancel()

    def _persona_order(self, seed: int) -> list[int]:
        """Every persona once per pass, in a seed-dependent order (computed once per seed)."""
        if self._order_seed != seed:
            order = list(range(len(self.personas)))
            random.Random(seed).shuffle(order)
            self._order, self._order_seed = order, seed
        return self._order

    async def synthesize(self, llm: Any, slot: int, seed: int) -> Task | None:
        """Run the three teacher steps for one slot; None when it was dropped (reason in :attr:`stats`)."""
        rng = random.Random(f"{seed}:{slot}")
        order = self._persona_order(seed)
        persona = self.personas[order[slot % len(order)]]
        slot_seed = rng.randrange(2**31)
        stage = "toolset"
        try:
            toolset = await self._toolset(llm, persona, rng, slot_seed)
            if toolset is None:
                return self._drop(stage)
            domain, tools = toolset
            stage = "task"
            job = await self._task(llm, persona, domain, tools, slot_seed)
            if job is None:
                return self._drop(stage)
            stage = "fuzzy"
            fuzzy = await self._fuzzy(llm, job, rng, slot_seed)
            if fuzzy is None:
                return self._drop(stage)
            task = self._build(persona, domain, tools, job, fuzzy, slot, seed, getattr(llm, "name", "teacher"))
            gap = self.gap_problems(task)
            if gap:
                self.stats[gap] += 1
                return self._drop("gap")
        except _GapDrop:
            return self._drop("gap")
        except TeacherUnavailable:
            self.stats["slot_teacher_unavailable"] += 1
            return self._drop("teacher_unavailable")
        self.stats["kept"] += 1
        self.stats["funnel:kept"] += 1
        return task

    def _drop(self, stage: str) -> Task | None:
        """Count a slot dropped at ``stage`` (the funnel) and return None, the slot's (absent) task."""
        self.stats[f"funnel:{stage}"] += 1
        return None

    @staticmethod
    def gap_problems(task: Task) -> str | None:
        """The gap check on a built task: the first reason it fails (``gap_not_needed``: no step binds the
        hidden fact; ``gap_lookupable``: a workflow call's response contains its value; ``gap_value_visible``:
        the instruction shows it), or None."""
        bound = {parse_binding(b).fact for st in task.workflow for b in st.bindings.values()
                 if isinstance(b, str) and b.startswith("fact:")}
        revealed = set().union(*(_leaves(st.response) for st in task.workflow)) if task.workflow else set()
        for fact in task.user_context:
            if fact.name not in bound:
                return "gap_not_needed"
            if _norm(fact.value) in revealed:
                return "gap_lookupable"
            if _norm(fact.value) in _norm(task.instruction):
                return "gap_value_visible"
        return None

    def _params(self, step: str) -> dict[str, Any]:
        """Sampling parameters plus the step's JSON schema (for backends with structured outputs)."""
        schema = SCHEMAS[step]
        if step == "toolset":  # as many tools as the check accepts
            tools = {**schema["properties"]["tools"], "minItems": self.tools_min, "maxItems": self.tools_max}
            schema = {**schema, "properties": {**schema["properties"], "tools": tools}}
        return {**self.params, "json_schema": {"name": f"persona_fuzzy_{step}", "schema": schema}}

    async def _toolset(self, llm: Any, persona: Persona, rng: random.Random, seed: int
                       ) -> tuple[str, list[ToolSpec]] | None:
        if self.given is not None:  # the team's own tools: nothing to invent
            self.stats["toolset_given"] += 1
            return self.given[0], list(self.given[1])
        n = rng.randint(self.tools_min, self.tools_max)
        prompt = render(self.prompts["toolset"][0], persona=persona.description, n_tools=str(n))

        def check(value: Any) -> list[str]:
            if not isinstance(value, Mapping) or not isinstance(value.get("tools"), list):
                return ['reply with {"domain": ..., "tools": [...]}']
            tools = value["tools"]
            problems = [] if self.tools_min <= len(tools) <= self.tools_max else \
                [f"give between {self.tools_min} and {self.tools_max} tools, not {len(tools)}"]
            names = set()
            for i, t in enumerate(tools):
                if not isinstance(t, Mapping):
                    problems.append(f"tools[{i}] must be an object")
                    continue
                name = t.get("name")
                if not isinstance(name, str) or not _NAME.match(name):  # an object or list is no name
                    problems.append(f"tools[{i}].name must be snake_case")
                elif name in names:
                    problems.append(f"duplicate tool name {name!r}")
                names.add(name)
                if not isinstance(t.get("description"), str) or not t["description"].strip():
                    problems.append(f"tools[{i}] needs a description")
                problems += schema_problems(t.get("parameters"), f"tools[{i}].parameters")
                if "effect" in t and not (isinstance(t["effect"], str) and t["effect"] in _EFFECTS):
                    problems.append(f"tools[{i}].effect must be one of {list(_EFFECTS)}")
                if "returns" in t and not isinstance(t["returns"], Mapping):
                    problems.append(f"tools[{i}].returns must be a JSON schema object")
            return problems

        value, reason = await ask_json(llm, [Message("user", prompt)], check=check, label="toolset", stats=self.stats,
                                       params=self._params("toolset"), seed=seed)
        if value is None:
            return None
        kinds: dict[str, EffectKind] = {"create": "insert", "update": "update", "delete": "delete"}
        tools = [ToolSpec(t["name"], t["description"].strip(), dict(t["parameters"]), dict(t.get("returns") or {}),
                          Effect(kinds[t["effect"]], "simulated") if t.get("effect") in kinds else None)
                 for t in value["tools"]]
        domain = str(value.get("domain") or "tools").strip()[:60]
        return domain, tools

    async def _task(self, llm: Any, persona: Persona, domain: str, tools: list[ToolSpec], seed: int
                    ) -> dict[str, Any] | None:
        listing = json.dumps([t.openai_schema()["function"] for t in tools], ensure_ascii=False)
        prompt = render(self.prompts["task"][0], persona=persona.description, domain=domain, tools=listing)
        by_name = {t.name: t for t in tools}

        def check(value: Any) -> list[str]:
            if not isinstance(value, Mapping):
                return ['reply with {"full_instruction": ..., "workflow": [...], "answer": [...]}']
            problems = []
            if not isinstance(value.get("full_instruction"), str) or len(value["full_instruction"].strip()) < 10:
                problems.append("full_instruction must be the request in words")
            steps = value.get("workflow")
            if not isinstance(steps, list) or not 2 <= len(steps) <= 6:
                return problems + ["workflow needs 2 to 6 steps"]
            responses: dict[int, Any] = {}
            for i, st in enumerate(steps):
                tool = st.get("tool") if isinstance(st, Mapping) else None
                if not isinstance(tool, str) or tool not in by_name:  # a list or object is no tool name
                    problems.append(f"workflow[{i}].tool must be one of {sorted(by_name)}")
                    continue
                args = st.get("arguments", {})
                if not isinstance(args, Mapping):
                    problems.append(f"workflow[{i}].arguments must be an object")
                    continue
                problems += [f"workflow[{i}]: {p}" for p in argument_problems(by_name[tool], args)]
                bindings = st.get("bindings") or {}
                found = binding_problems(bindings, i, arguments=args)
                problems += [f"workflow[{i}]: {p}" for p in found]
                if not found and isinstance(bindings, Mapping):
                    for arg, text in bindings.items():
                        b = parse_binding(text)
                        if b.kind == "fact":
                            problems.append(f"workflow[{i}]: bind {arg!r} to an earlier step or leave it unbound")
                        elif b.kind == "step_path":
                            got = resolve(b, responses, {})
                            if got is MISSING:
                                problems.append(f"workflow[{i}]: {text} finds nothing in step {b.step}'s response")
                            elif _norm(got) != _norm(args.get(arg)):
                                problems.append(f"workflow[{i}].arguments.{arg} is {args.get(arg)!r} but {text} "
                                                f"is {got!r}")
                response = st.get("response")
                if not isinstance(response, (Mapping, list)):
                    problems.append(f"workflow[{i}].response must be the JSON object (or array) the tool returns")
                else:
                    responses[i] = response
            answer = value.get("answer", [])
            if not isinstance(answer, list):
                problems.append("answer must be a list")
            return problems

        value, _ = await ask_json(llm, [Message("user", prompt)], check=check, label="task", stats=self.stats,
                                  params=self._params("task"), seed=seed)
        return dict(value) if value is not None else None

    async def _fuzzy(self, llm: Any, job: Mapping[str, Any], rng: random.Random, seed: int
                     ) -> dict[str, Any] | None:
        revealed = set().union(*(_leaves(st.get("response")) for st in job["workflow"]))
        values = sorted({_norm(v) for st in job["workflow"] for k, v in st.get("arguments", {}).items()
                         if _scalar(v) and k not in (st.get("bindings") or {}) and _norm(v) not in revealed})
        if not values:
            self.stats["gap_no_values"] += 1
            raise _GapDrop
        n_hidden = min(rng.randint(self.hidden_min, self.hidden_max), len(values))
        prompt = render(self.prompts["fuzzy"][0], full_instruction=job["full_instruction"],
                        values=json.dumps(values, ensure_ascii=False), n_hidden=str(n_hidden))

        def check(value: Any) -> list[str]:
            if not isinstance(value, Mapping) or not isinstance(value.get("instruction"), str) \
                    or not isinstance(value.get("hidden_facts"), list):
                return ['reply with {"instruction": ..., "hidden_facts": [...]}']
            facts = value["hidden_facts"]
            problems = [] if self.hidden_min <= len(facts) <= self.hidden_max else \
                [f"hide between {self.hidden_min} and {self.hidden_max} values, not {len(facts)}"]
            instruction = _norm(value["instruction"])
            names = set()
            for i, f in enumerate(facts):
                if not isinstance(f, Mapping) or not isinstance(f.get("name"), str) or not _NAME.match(f["name"]) \
                        or not _scalar(f.get("value")):
                    problems.append(f"hidden_facts[{i}] needs a snake_case name and a text or number value")
                    continue
                if f["name"] in names:
                    problems.append(f"duplicate hidden fact name {f['name']!r}")
                names.add(f["name"])
                if "keywords" in f and not isinstance(f["keywords"], list):
                    problems.append(f"hidden_facts[{i}].keywords must be a list of words")
                v = _norm(f["value"])
                if not v:
                    problems.append(f"hidden_facts[{i}].value is empty")
                elif v in instruction:  # the gap check, part 1: the agent must not see it
                    problems.append(f"gap: the value {f['value']!r} still appears in the instruction")
                elif v not in values:  # part 2: some workflow step needs it
                    problems.append(f"gap: the value {f['value']!r} is not one of the needed values")
            return problems

        value, reason = await ask_json(llm, [Message("user", prompt)], check=check, label="fuzzy", stats=self.stats,
                                       params=self._params("fuzzy"), seed=seed)
        return dict(value) if value is not None else None

    def _build(self, persona: Persona, domain: str, tools: list[ToolSpec], job: Mapping[str, Any],
               fuzzy: Mapping[str, Any], slot: int, seed: int, teacher: str) -> Task:
        facts = []
        for f in fuzzy["hidden_facts"]:
            keywords = [k.strip().lower() for k in (f.get("keywords") if isinstance(f.get("keywords"), list) else [])
                        if isinstance(k, str) and k.strip()]
            keywords = keywords or [w for w in str(f["name"]).lower().split("_") if w]
            facts.append(Fact(str(f["name"]), f["value"], str(f.get("description") or f["name"]), tuple(keywords),
                              f"The {str(f.get('description') or f['name']).strip()} is {f['value']}."))
        by_value = {_norm(f.value): f.name for f in facts}
        by_tool = {t.name: t for t in tools}
        steps = []
        for i, st in enumerate(job["workflow"]):
            args = dict(st.get("arguments", {}))
            bound = dict(st.get("bindings") or {})
            bindings = {k: (parse_binding(bound[k]).text if k in bound else
                            f"fact:{by_value[_norm(v)]}" if _norm(v) in by_value else "literal") for k, v in args.items()}
            desc = st.get("description")
            steps.append(WorkflowStep(i, desc.strip()[:300] if isinstance(desc, str) and desc.strip() else
                                      f"Call {st['tool']}", st["tool"], args, bindings, writes=bool(by_tool[st["tool"]].writes),
                                      response=st.get("response")))
        task_id = stable_id("task", self.name, seed, slot, persona.id, teacher)
        return Task(
            id=task_id, domain=domain, persona=persona,
            system_prompt=(f"You are an assistant for {domain}. Use the tools to do what the user asks; ask the "
                           "user for any detail you need that you cannot look up."),
            tools=tuple(tools), instruction=str(fuzzy["instruction"]).strip(),
            full_instruction=str(job["full_instruction"]).strip(), user_context=tuple(facts), visible_facts=(),
            workflow=tuple(steps), answer=tuple(v for v in job.get("answer", []) if isinstance(v, (str, int, float))),
            provenance=Provenance(generator=self.name, seed=seed, slot=str(slot), teacher=teacher,
                                  template=persona.id, prompt_hashes=self.prompt_hashes()),
        )


@hookimpl
def synth_register_task_generators(register: Any) -> None:
    """Register the ``persona-fuzzy`` generator."""
    register("persona-fuzzy", PersonaFuzzyGenerator,
             description="teacher-synthesized toolsets, tasks and underspecified instructions (SYNTHAGENT)")
