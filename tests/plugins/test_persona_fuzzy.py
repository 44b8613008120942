"""persona-fuzzy through a scripted teacher: repairs, drops with reasons, the gap check, and a full run."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from synthagent.core.errors import ConfigError
from synthagent.core.protocols import GenerationContext, RunContext
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator, load_personas

TOOLS = [
    {"name": "find_customer", "description": "Find a customer by email.",
     "parameters": {"type": "object", "properties": {"email": {"type": "string", "description": "email"}},
                    "required": ["email"]}, "returns": {"type": "object"}},
    {"name": "list_orders", "description": "List a customer's orders.",
     "parameters": {"type": "object", "properties": {"customer_id": {"type": "string", "description": "id"}},
                    "required": ["customer_id"]}, "returns": {"type": "object"}},
    {"name": "cancel_order", "description": "Cancel an order.",
     "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "order"}},
                    "required": ["order_id"]}, "returns": {"type": "object"}},
]


def persona_of(text: str) -> int:
    m = re.search(r"persona number (\d+)", text)
    return int(m.group(1)) if m else 0


class Teacher:
    """Plays every teacher role; persona n decides the failure it acts out (n % 6)."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()

    def __call__(self, body):
        messages = body["messages"]
        first = messages[0]["content"]
        repair = len(messages) > 1 and messages[-1]["role"] == "user" and "cannot be used" in messages[-1]["content"]
        if "coherent tool ecosystem" in first:
            n = persona_of(first)
            self.asked["toolset"] += 1
            if n % 6 == 1 and not repair:
                return "Here are some tools: find, list, cancel."  # not JSON: repaired on the re-ask
            if n % 6 == 2:
                return json.dumps({"domain": "shop", "tools": [{"name": "Bad Name", "description": "x", "parameters": {}}]})
            return json.dumps({"domain": "shop orders", "tools": TOOLS})
        if "Write one realistic task" in first:
            n = persona_of(first)
            return json.dumps({
                "full_instruction": f"I am persona number {n}. Cancel order ORD-{n} for my email p{n}@example.com.",
                "workflow": [
                    {"description": "find me", "tool": "find_customer", "arguments": {"email": f"p{n}@example.com"},
                     "response": {"customer_id": f"C-{n}"}},
                    {"description": "list orders", "tool": "list_orders", "arguments": {"customer_id": f"C-{n}"},
                     "bindings": {"customer_id": "step:0:$.customer_id"}, "response": {"open_orders": 2}},
                    {"description": "cancel it", "tool": "cancel_order", "arguments": {"order_id": f"ORD-{n}"},
                     "response": {"status": "cancelled"}}],
                "answer": []})
        if "deliberately underspecified" in first:
            n = persona_of(first)
            leak = n % 6 == 3 or (n % 6 == 4 and not repair)  # 3: always leaks (dropped); 4: fixed on repair
            instruction = f"I am persona number {n}, email p{n}@example.com. Please cancel " + (f"order ORD-{n}." if leak else "one of my orders.")
            return json.dumps({"instruction": instruction, "hidden_facts": [
                {"name": "order_number", "value": f"ORD-{n}", "description": "the order number", "keywords": ["order number"]}]})
        if "You are simulating the tool" in first:
            return json.dumps({"status": "ok", "id": "X-1"})
        if "You are role-playing" in first:
            asked = messages[-1]["content"] if len(messages) > 1 else ""
            order = re.search(r"the order number: (ORD-\d+)", first)
            if "?" in asked and order:
                return f"The order number is {order.group(1)}."
            return "Thanks, that is all. ###STOP###"
        # the agent (policy): find the customer, list the orders, ask for the order number, cancel it
        said = " ".join(m["content"] or "" for m in messages if m["role"] == "user")
        results = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
        turn = sum(1 for m in messages if m["role"] == "assistant")

        def call(name: str, args: dict) -> dict:
            return {"content": None, "tool_calls": [{"id": f"c{turn}", "type": "function", "function": {
                "name": name, "arguments": json.dumps(args)}}]}

        if not results:
            return call("find_customer", {"email": re.search(r"p\d+@example\.com", said).group(0)})
        if len(results) == 1:
            return call("list_orders", {"customer_id": results[0].get("customer_id", "?")})
        order = re.search(r"ORD-\d+", said)
        if len(results) == 2 and not order:
            return "What is the order number?"
        if len(results) == 2:
            return call("cancel_order", {"order_id": order.group(0)})
        return "Your order is cancelled."


@pytest.fixture
def personas(tmp_path: Path) -> Path:
    path = tmp_path / "personas.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{n}", "description": f"A shopper, persona number {n}."}) + "\n"
                            for n in range(12)))
    return path


def generate(server, personas: Path, count: int) -> tuple[list, PersonaFuzzyGenerator]:
    gen = PersonaFuzzyGenerator(personas=str(personas), concurrency=4)
    llm = OpenAIBackend(model="teacher", base_url=server.base_url, backoff_s=0.01)

    async def go():
        return [t async for t in gen.generate(GenerationContext(count=count, seed=0, llm=llm))]

    return asyncio.run(go()), gen


def test_pipeline_steps_repairs_drops_and_gap_check(personas: Path) -> None:
    with ScriptedOpenAIServer(Teacher()) as server:
        tasks, gen = generate(server, personas, 9)  # 4 of 12 personas always drop: every persona is visited
    assert len(tasks) == 9 and len({t.id for t in tasks}) == 9
    s = gen.stats
    assert s["toolset_repaired"] >= 1 and s["toolset_invalid"] >= 1  # n%6==1 repaired, n%6==2 dropped
    assert s["fuzzy_repaired"] >= 1 and s["fuzzy_invalid"] >= 1      # n%6==4 repaired, n%6==3 dropped
    for t in tasks:
        assert 3 <= len(t.tools) <= 8 and len(t.user_context) == 1
        fact = t.user_context[0]
        assert str(fact.value).lower() not in t.instruction.lower()
        assert any(b == f"fact:{fact.name}" for st in t.workflow for b in st.bindings.values())
        assert t.provenance.teacher == "openai:teacher" and set(t.provenance.prompt_hashes) == {
            "persona_fuzzy/toolset.md", "persona_fuzzy/task.md", "persona_fuzzy/fuzzy.md"}


def test_same_seed_same_tasks_and_done_slots_are_skipped(personas: Path) -> None:
    with ScriptedOpenAIServer(Teacher()) as server:
        first, _ = generate(server, personas, 4)
        second, _ = generate(server, personas, 4)
        assert {t.id for t in first} == {t.id for t in second}
        gen = PersonaFuzzyGenerator(personas=str(personas))
        llm = OpenAIBackend(model="teacher", base_url=server.base_url)
        done = frozenset(t.provenance.slot for t in first[:3])
        before = len(server.requests)

        async def go():
            return [t async for t in gen.generate(GenerationContext(count=4, seed=0, llm=llm, done_slots=done))]

        rest = asyncio.run(go())
    assert len(rest) == 1 and rest[0].provenance.slot not in done
    assert len(server.requests) - before < len(server.requests) / 2  # the done slots cost no teacher calls


def test_the_oracle_cannot_be_the_teacher() -> None:
    from synthagent.plugins.backends.oracle import OracleBackend

    with pytest.raises(ConfigError, match="needs a teacher model"):
        PersonaFuzzyGenerator().setup(RunContext(llm=OracleBackend(), mapping=None, run_dir="", seed=0))


def test_builtin_personas() -> None:
    personas = load_personas()
    assert len(personas) >= 200 and len({p.id for p in personas}) == len(personas)
    assert len({p.description for p in personas}) == len(personas)


def test_synth_run_with_llm_generator_tools_and_user(synth, personas: Path, tmp_path: Path) -> None:
    with ScriptedOpenAIServer(Teacher()) as server:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "pf", "--tasks", "5",
                        "--set", "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
                        "--set", "llm.backend=openai", "--set", f"llm.base_url={server.base_url}",
                        "--set", "llm.model=teacher", "--set", f'plugins.persona-fuzzy.personas="{personas}"',
                        "--set", "export.min_score=0"],
                       env={"OPENAI_API_KEY": "sk-test-SECRET"})
    assert result.returncode == 0, result.stderr
    root = tmp_path / "pf"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["tasks"] == summary["trajectories"] == summary["scores"] == 5
    assert summary["dropped"]["toolset_invalid"] >= 1 and summary["dropped"]["fuzzy_invalid"] >= 1
    simulate = summary["stats_by_stage"]["simulate"]["tools"]
    assert simulate["hits"] >= 5 and not simulate.get("misses")  # every workflow call answered from the seeded store
    assert summary["mapping_hit_rate"] == 1.0  # over the whole run too: demonstrations reuse the seeded mappings
    assert (root / "mapping.sqlite").is_file()  # the default mapping store lives in the run directory
    assert summary["stats"]["user"]["turns"] >= 5
    manifest = json.loads((root / "manifest.json").read_text())
    assert {"persona_fuzzy/toolset.md", "llm_tools/tool_sim.md", "llm_user/user_sim.md"} <= set(manifest["prompt_hashes"])
    # the teacher's demonstrations follow the workflow through the bindings (customer id from the lookup)
    assert summary["rubrics_dropped"] == {} and summary["funnel"]["kept"] == 5 and summary["funnel"]["accounted"]
    sft = [json.loads(line) for line in (root / "exports/sft.jsonl").read_text().splitlines()]
    assert len({r["task_id"] for r in sft}) == 5
    found = subprocess.run(["grep", "-r", "-l", "SECRET", str(root)], capture_output=True, text=True)
    assert found.stdout == ""


def test_generation_spreads_over_worker_processes(personas: Path, tmp_path: Path) -> None:
    """With executor=process, persona-fuzzy's slots are synthesized in the worker processes (each builds its own
    teacher client from the config); the driver writes the tasks, and the workers' drop counts reach the run."""
    from synthagent.core.config import load_config
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.registry import load_plugins

    with ScriptedOpenAIServer(Teacher()) as server:
        config = load_config(None, [
            "tasks=5", "generator=persona-fuzzy", "tools=llm", "user=llm", "llm.backend=openai",
            f"llm.base_url={server.base_url}", "llm.model=teacher", f'plugins.persona-fuzzy.personas="{personas}"',
            "export.min_score=0", "executor=process", "plugins.process.workers=2"])
        pipeline = Pipeline(config, load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
        pipeline.open_store(tmp_path / "pf", resume=False)
        summary = asyncio.run(pipeline.run())
    assert summary["tasks"] == summary["trajectories"] == summary["scores"] == 5
    assert not any(pipeline.components.generator.stats.values())  # the driver synthesized nothing itself
    # the workers' generator counters reached the run (which drops depends on which slots finished first)
    assert sum(summary["dropped"].values()) >= 1
    assert summary["dropped"].get("kept", 0) >= 5  # counted by the workers' generators
    manifest = json.loads((tmp_path / "pf" / "manifest.json").read_text())
    assert manifest["stages"]["simulate"]["engine"]["rollouts"] == 5
    tasks = [json.loads(line) for line in (tmp_path / "pf" / "tasks.jsonl").read_text().splitlines()]
    assert len({t["id"] for t in tasks}) == 5 and all(t["provenance"]["generator"] == "persona-fuzzy" for t in tasks)


def test_the_toolset_schema_asks_for_what_the_check_needs() -> None:
    """Under structured outputs the grammar is the schema: it admits the scripted teacher's toolsets and
    refuses the shapes SmolLM2-135M wrote under the old, looser schema (valid JSON the check then dropped:
    one tool, ``parameters.type = "jsonp"``, a dotted name); the tool count follows tools_min/tools_max."""
    jsonschema = pytest.importorskip("jsonschema")
    from synthagent.plugins.backends.scripted_teacher import WORLDS

    gen = PersonaFuzzyGenerator(tools_min=3, tools_max=5)
    schema = gen._params("toolset")["json_schema"]["schema"]
    assert schema["properties"]["tools"]["minItems"] == 3 and schema["properties"]["tools"]["maxItems"] == 5
    for world in WORLDS.values():
        jsonschema.validate({"domain": world["domain"], "tools": world["tools"][:5]}, schema)
    good = {"name": "find_order", "description": "Find an order.",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}
    smol = [  # each one change away from a valid toolset, as SmolLM2 wrote them
        {"domain": "d", "tools": [good]},
        {"domain": "d", "tools": [good, good, {**good, "parameters": {"type": "jsonp", "properties": {}}}]},
        {"domain": "d", "tools": [good, good, {**good, "name": "example.com"}]},
        {"domain": "d", "tools": [good, good, {**good, "parameters": {"type": "object", "properties": {"x": "int"}}}]},
        {"domain": "d", "tools": [good, good, {**good, "description": ""}]},
    ]
    for value in smol:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, schema)
    jsonschema.validate({"domain": "d", "tools": [good, good, good]}, schema)
