"""A team's own tools in, sensible tasks out (issue 23): `synth run --tools-from` with OpenAI schemas and an
OpenAPI document, the pizza case end to end (tasks, the oracle's ceiling, a do-nothing policy), realistic
values, and persona-fuzzy writing its tasks for a given toolset."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.errors import ConfigError
from synthagent.core.protocols import GenerationContext
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.core.toolsource import effect_kind, load_tools, snake_case
from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.common.values import PLACEHOLDER, in_person
from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator


def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": required}}}


def _s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


PIZZA = [
    _fn("list_menu_items", "List the pizzas on the menu with their sizes and prices.",
        {"category": _s("Menu category, e.g. vegetarian.")}, []),
    _fn("find_customer", "Find a customer by phone number.", {"phone": _s("The customer's phone number.")}, ["phone"]),
    _fn("place_order", "Place a new pizza order for a customer.",
        {"customer_id": _s("The customer's id."), "pizza": _s("The pizza's name from the menu."),
         "size": _s("The pizza size.", enum=["small", "medium", "large"]),
         "delivery_address": _s("Where to deliver.")},
        ["customer_id", "pizza", "size", "delivery_address"]),
    _fn("get_order", "Get an order's status by its id.", {"order_id": _s("The order's id.")}, ["order_id"]),
    _fn("cancel_order", "Cancel an order that has not left the kitchen.", {"order_id": _s("The order's id.")},
        ["order_id"]),
]

PIZZA_OPENAPI = """\
openapi: 3.0.3
info: {title: Pizza, version: "1.0"}
paths:
  /menu:
    get:
      operationId: listMenuItems
      summary: List the pizzas on the menu with their sizes and prices.
      parameters:
        - {name: category, in: query, schema: {type: string}, description: "Menu category, e.g. vegetarian."}
        - {name: X-Request-Id, in: header, schema: {type: string}}
  /customers:
    get:
      operationId: findCustomer
      summary: Find a customer by phone number.
      parameters:
        - {name: phone, in: query, required: true, schema: {type: string}, description: The customer's phone number.}
  /orders:
    post:
      operationId: placeOrder
      summary: Place a new pizza order for a customer.
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewOrder"}
  /orders/{order_id}:
    parameters:
      - {name: order_id, in: path, schema: {type: string}, description: The order's id.}
    get:
      operationId: getOrder
      summary: Get an order's status by its id.
  /orders/{order_id}/cancel:
    post:
      operationId: cancelOrder
      summary: Cancel an order that has not left the kitchen.
      parameters:
        - {name: order_id, in: path, schema: {type: string}, description: The order's id.}
components:
  schemas:
    Size: {type: string, enum: [small, medium, large], description: The pizza size.}
    NewOrder:
      type: object
      required: [customer_id, pizza, size, delivery_address]
      properties:
        customer_id: {type: string, description: The customer's id.}
        pizza: {type: string, description: The pizza's name from the menu., example: Margherita}
        size: {$ref: "#/components/schemas/Size"}
        delivery_address: {type: string, description: Where to deliver.}
"""


@pytest.fixture
def pizza_json(tmp_path: Path) -> Path:
    path = tmp_path / "pizza.json"
    path.write_text(json.dumps(PIZZA))
    return path


def test_openai_schemas_load_from_a_list_an_object_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(PIZZA))
    (tmp_path / "b.json").write_text(json.dumps({"tools": [t["function"] for t in PIZZA]}))  # bare functions
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(t) + "\n\n" for t in PIZZA))
    names = [t["function"]["name"] for t in PIZZA]
    for name in ("a.json", "b.json", "c.jsonl"):
        tools = load_tools(tmp_path / name)
        assert [t["function"]["name"] for t in tools] == names, name
        assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in tools)
    assert snake_case("placeOrder") == "place_order" and snake_case("GET /orders/{id}") == "get_orders_id"
    assert [effect_kind(n) for n in names] == ["read", "read", "insert", "read", "update"]


@pytest.mark.parametrize("content, message", [
    ('[{"function": {"description": "no name"}}]', r"a\.json: tool 1: not an OpenAI function \(needs a 'name'\)"),
    (json.dumps([PIZZA[1], PIZZA[1]]), r"tool 2: tool name 'find_customer' again \(first at a\.json: tool 1\)"),
    (json.dumps([_fn("x", "d", {"a": {"type": "strng"}}, [])]), r"a\.json: tool 1 \(x\): "),
    ('[{"name": "ok"}', r"a\.json:1 is not valid JSON"),
    ('{"swagger": "2.0", "paths": {}}', r"Swagger 2; convert it to OpenAPI 3"),
    ('{"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [{"$ref": "#/nowhere"}]}}}}',
     r"GET /a: \$ref '#/nowhere' points nowhere"),
    ('{"hello": 1}', r"must be an OpenAPI document"),
])
def test_a_bad_toolset_names_the_file_the_entry_and_the_problem(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "a.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_tools(tmp_path / "a.json")
    with pytest.raises(ConfigError, match="is not a file"):
        load_tools(tmp_path / "missing.json")


def test_an_openapi_document_becomes_one_tool_per_operation(tmp_path: Path) -> None:
    (tmp_path / "pizza.yaml").write_text(PIZZA_OPENAPI)
    tools = {t["function"]["name"]: t["function"] for t in load_tools(tmp_path / "pizza.yaml")}
    assert list(tools) == ["list_menu_items", "find_customer", "place_order", "get_order", "cancel_order"]
    order = tools["place_order"]["parameters"]
    assert order["required"] == ["customer_id", "pizza", "size", "delivery_address"]
    assert order["properties"]["size"] == {"type": "string", "enum": ["small", "medium", "large"],
                                           "description": "The pizza size."}  # $ref resolved
    assert "example" not in order["properties"]["pizza"]  # OpenAPI-only keys dropped
    assert tools["get_order"]["parameters"]["required"] == ["order_id"]  # path parameters are required
    assert "X-Request-Id" not in tools["list_menu_items"]["parameters"]["properties"]  # headers are transport
    assert tools["find_customer"]["description"] == "Find a customer by phone number."


def _check_pizza_run(synth, tmp_path: Path, source: Path | str, name: str) -> list[dict[str, Any]]:
    """The pizza case's requirements on one run made from ``source``; returns its tasks."""
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", name, "--tasks", "24", "--tools-from", str(source)])
    assert result.returncode == 0, result.stderr
    root = tmp_path / name
    tasks = [json.loads(line) for line in (root / "tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == 24 and len({t["instruction"] for t in tasks}) == 24  # >= 20, all stated differently
    assert {t["domain"] for t in tasks} == {"pizza"}  # the toolset is one domain, named after the file
    assert all({x["name"] for x in t["tools"]} == {x["function"]["name"] for x in PIZZA} for t in tasks)
    hidden = Counter(f["name"] for t in tasks for f in t["user_context"])
    assert hidden["new_pizza"] >= 3, hidden  # the order's contents are among what the agent must ask for
    for t in tasks:
        assert t["user_context"], t["instruction"]
        bound = {b.split("fact:", 1)[1] for s in t["workflow"] for b in s["bindings"].values() if "fact:" in b}
        assert {f["name"] for f in t["user_context"]} <= bound  # every hidden fact is needed by a tool call
        first_write = next(i for i, s in enumerate(t["workflow"]) if s["writes"])
        before = {b.split("fact:", 1)[1] for s in t["workflow"][:first_write + 1] for b in s["bindings"].values()
                  if "fact:" in b}
        assert before & {f["name"] for f in t["user_context"]}, t  # the gold path asks before it orders
        order = next(s for s in t["workflow"] if s["tool"] == "place_order")
        assert order["bindings"]["customer_id"].startswith("step:")  # the customer is looked up, never invented
        text = " ".join([t["instruction"], *(f["statement"] for f in t["user_context"])])
        assert not PLACEHOLDER.search(text) and ".." not in text and "for a customer" not in text, text
    finals = [json.loads(line)["messages"][-2]["content"] for line in (root / "trajectories.jsonl").read_text().splitlines()]
    assert finals and not [f for f in finals if ".." in f or "for a customer" in f]
    for policy, want in ((["--set", 'llm.corruption="nothing"'], 0.0), ([], 1.0)):  # do-nothing, then the oracle
        result = synth(["eval", "-q", "--policy", "oracle", "--run", str(root), *policy])
        assert result.returncode == 0, result.stderr
        evals = sorted((root / "evals").iterdir(), key=lambda p: p.stat().st_mtime)
        results = json.loads((evals[-1] / "results.json").read_text())
        assert results["episodes"] == 24 and results["success"]["rate"] == want, (policy, results["success"])
        if want == 0.0:
            assert results["rubric"]["mean_reward"] == 0.0
    return tasks


def test_the_pizza_toolset_in_sensible_tasks_out(synth, tmp_path: Path, pizza_json: Path) -> None:
    """Issue 23's pizza case from OpenAI schemas: before, 3 of 5 tasks had one instruction, the gold answer
    re-ordered the customer's last pizza without asking, and values read 'pizza rapid 97'."""
    _check_pizza_run(synth, tmp_path, pizza_json, "pizza-openai")


def test_the_pizza_toolset_from_an_openapi_document(synth, tmp_path: Path) -> None:
    source = tmp_path / "pizza.yaml"
    source.write_text(PIZZA_OPENAPI)
    _check_pizza_run(synth, tmp_path, source, "pizza-openapi")


PIZZA_MCP = """\
from typing import Literal

from mcp.server.mcpserver import MCPServer

app = MCPServer("pizza")


@app.tool()
def list_menu_items(category: str = "") -> dict:
    \"\"\"List the pizzas on the menu with their sizes and prices.\"\"\"
    return {"items": []}


@app.tool()
def find_customer(phone: str) -> dict:
    \"\"\"Find a customer by phone number.\"\"\"
    return {"customer_id": "C1"}


@app.tool()
def place_order(customer_id: str, pizza: str, size: Literal["small", "medium", "large"], delivery_address: str) -> dict:
    \"\"\"Place a new pizza order for a customer.\"\"\"
    return {"order_id": "O1"}


@app.tool()
def get_order(order_id: str) -> dict:
    \"\"\"Get an order's status by its id.\"\"\"
    return {"status": "baking"}


@app.tool()
def cancel_order(order_id: str) -> dict:
    \"\"\"Cancel an order that has not left the kitchen.\"\"\"
    return {"status": "cancelled"}


app.run()
"""


def test_the_pizza_toolset_from_an_mcp_server_started_by_the_test(synth, tmp_path: Path) -> None:
    """The tool list of a real MCP server (the official SDK, over stdio) is the toolset."""
    import sys

    server = tmp_path / "pizza.py"
    server.write_text(PIZZA_MCP)
    tools = {t["function"]["name"]: t["function"] for t in load_tools(f"mcp:{sys.executable} {server}")}
    assert list(tools) == [t["function"]["name"] for t in PIZZA]
    assert tools["place_order"]["parameters"]["properties"]["size"]["enum"] == ["small", "medium", "large"]
    assert tools["place_order"]["parameters"]["required"] == ["customer_id", "pizza", "size", "delivery_address"]
    assert tools["find_customer"]["description"] == "Find a customer by phone number."
    _check_pizza_run(synth, tmp_path, f"mcp:{sys.executable} {server}", "pizza-mcp")
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit(3)\n")
    with pytest.raises(ConfigError, match=r"the MCP server .*broken\.py' gave no tool list"):
        load_tools(f"mcp:{sys.executable} {broken}")


def test_a_generator_that_takes_no_toolset_is_refused_by_name(synth, tmp_path: Path, pizza_json: Path) -> None:
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "x", "--tools-from", str(pizza_json),
                    "--set", "generator=offline-domains"])
    assert result.returncode == 2 and ("--tools-from: generator 'offline-domains' takes no toolset; generators that "
                                       "do: graph-domains, persona-fuzzy") in result.stderr
    assert not (tmp_path / "x").exists()
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "y", "--tools-from", str(tmp_path / "nope.json")])
    assert result.returncode == 2 and "is not a file" in result.stderr


def test_a_small_pool_names_min_tools_when_it_makes_no_domain(tmp_path: Path) -> None:
    (tmp_path / "pizza.json").write_text(json.dumps(PIZZA))
    gen = GraphDomainsGenerator(pool=str(tmp_path / "pizza.json"), min_tools=6)
    with pytest.raises(ConfigError, match=r"no domain has min_tools = 6 tools: the tool graph of 5 tools split into "
                                          r"communities of \[.*\]\. Lower plugins\.graph-domains\.min_tools"):
        gen.sample(3, seed=0)


def test_the_builtin_pool_states_no_placeholder_and_no_doubled_period() -> None:
    """Issue 23 point 3: 'The new reservation time should be reservation time rapid 97' and '..' are gone."""
    tasks = GraphDomainsGenerator().sample(80, seed=0)
    assert len(tasks) == 80
    bad = []
    for t in tasks:
        for text in [t.instruction, t.full_instruction, *(f.statement for f in t.user_context)]:
            if PLACEHOLDER.search(text) or ".." in text or re.search(r"\b\w+ \w+ (?:amber|birch|cedar)-\d+", text):
                bad.append(text)
    assert not bad, bad[:5]
    assert in_person("Place a hold for the member at their chosen branch.", "second") == \
        "Place a hold for you at your chosen branch"


class _PizzaTeacher:
    """Writes a task and its underspecified instruction for the given pizza tools; never asked for a toolset."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> str:
        first = body["messages"][0]["content"]
        if "coherent tool ecosystem" in first:
            self.asked["toolset"] += 1
            return "{}"
        if "Write one realistic task" in first:
            self.asked["task"] += 1
            return json.dumps({
                "full_instruction": "Order a large Margherita to 12 Elm Street; my phone is (503) 555-0142.",
                "workflow": [
                    {"description": "find me", "tool": "find_customer", "arguments": {"phone": "(503) 555-0142"},
                     "response": {"customer_id": "C-7"}},
                    {"description": "order", "tool": "place_order",
                     "arguments": {"customer_id": "C-7", "pizza": "Margherita", "size": "large",
                                   "delivery_address": "12 Elm Street"},
                     "bindings": {"customer_id": "step:0:$.customer_id"}, "response": {"order_id": "O-1"}}],
                "answer": []})
        if "deliberately underspecified" in first:
            self.asked["fuzzy"] += 1
            return json.dumps({"instruction": "I'd like a pizza delivered to 12 Elm Street; my phone is (503) 555-0142.",
                               "hidden_facts": [
                                   {"name": "pizza", "value": "Margherita", "description": "the pizza to order",
                                    "keywords": ["pizza"]},
                                   {"name": "size", "value": "large", "description": "the pizza size",
                                    "keywords": ["size"]}]})
        return "{}"


def test_persona_fuzzy_writes_its_tasks_for_the_given_tools(tmp_path: Path, pizza_json: Path) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(json.dumps({"id": f"p{n}", "description": f"A hungry student {n}."}) + "\n"
                                for n in range(4)))
    teacher = _PizzaTeacher()
    gen = PersonaFuzzyGenerator(personas=str(personas), tools_from=str(pizza_json), concurrency=2)
    with ScriptedOpenAIServer(teacher) as server:
        llm = OpenAIBackend(model="teacher", base_url=server.base_url, backoff_s=0.01)

        async def go() -> list[Any]:
            return [t async for t in gen.generate(GenerationContext(count=3, seed=0, llm=llm))]

        tasks = asyncio.run(go())
    assert len(tasks) == 3 and teacher.asked["toolset"] == 0 and gen.stats["toolset_given"] == 3
    for t in tasks:
        assert [x.name for x in t.tools] == [x["function"]["name"] for x in PIZZA] and t.domain == "pizza"
        assert {f.name for f in t.user_context} == {"pizza", "size"}
        assert t.tool("place_order").writes and not t.tool("find_customer").writes
