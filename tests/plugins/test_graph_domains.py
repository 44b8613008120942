"""Environment scaling: pool -> graph -> Louvain domains -> SQLite environments -> verifiable tasks."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from synthagent.core.agent_loop import run_episode
from synthagent.core.errors import ConfigError
from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
from synthagent.plugins.generators.graph_domains.pool import infer_effect, load_pool
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.simulators.users.rule import RuleUser
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase, SQLiteToolSimulator, compute_changes
from synthagent.plugins.rubrics.scorer import RubricScorer
from synthagent.plugins.rubrics.workflow import VerifiedRubricBuilder


@pytest.fixture(scope="module")
def gen() -> GraphDomainsGenerator:
    g = GraphDomainsGenerator()  # MiniLM embeddings (cached on disk after the first build)
    g.discover(0)
    return g


@pytest.fixture(scope="module")
def tasks(gen: GraphDomainsGenerator):
    return gen.sample(240, seed=0)


def test_builtin_pool_gives_at_least_20_domains(gen: GraphDomainsGenerator, tmp_path: Path) -> None:
    report = gen.report()
    print(f"\n[graph-domains] {report['tools']} tools, {len(report['domains'])} domains, modularity "
          f"{report['modularity']} ({report['embedding']}), sizes {[d['tools'] for d in report['domains']]}")
    assert report["tools"] >= 300 and len({s.area for s in gen.specs}) >= 20
    assert len(report["domains"]) >= 20 and report["modularity"] > 0.5
    # domains are coherent: most of each domain's tools come from one application area
    purity = [max(d["areas"].values()) / d["tools"] for d in report["domains"]]
    assert min(purity) >= 0.8
    png = gen.graph.draw(tmp_path / "graph.png")
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100


def test_tfidf_fallback_also_splits_the_pool() -> None:
    g = GraphDomainsGenerator(embedding="tfidf")
    domains = g.discover(0)
    assert len(domains) >= 15 and g.graph.modularity > 0.5 and g.graph.method == "tfidf"


def test_same_seed_same_domains_and_tasks(gen: GraphDomainsGenerator, tasks) -> None:
    again = GraphDomainsGenerator()
    assert [d.name for d in again.discover(0)] == [d.name for d in gen.domains]
    assert [t.id for t in again.sample(60, seed=0)] == [t.id for t in tasks[:60]]
    assert [t.id for t in GraphDomainsGenerator().sample(20, seed=1)] != [t.id for t in tasks[:20]]


def test_tasks_are_dependent_walks_with_a_gold_state(tasks) -> None:
    assert len(tasks) == 240 and len({t.domain for t in tasks}) >= 20
    for t in tasks:
        calls = [s for s in t.workflow if s.tool]
        assert 2 <= len(calls) <= 6 and 1 <= len(t.user_context) <= 3
        assert any(b.startswith("step:") for s in calls for b in s.bindings.values())
        db = SQLiteDatabase(t.initial_state)
        for s in calls:
            assert "error" not in db.execute(t.tool(s.tool), s.arguments)
        assert db.digest() == t.gold_state.digest
        db.close()
        if not any(s.writes for s in calls):
            assert t.answer  # a read-only task needs positive evidence


async def verdicts(tasks, corruption: str) -> list[bool]:
    builder, scorer = VerifiedRubricBuilder(exact_writes=True), RubricScorer()
    out = []
    for task in tasks:
        session = await SQLiteToolSimulator().start(task, 0)
        traj = await run_episode(task, policy=OracleBackend(corruption), tools=session,
                                 user=await RuleUser().start(task, 0), max_turns=40)
        await session.aclose()
        score = await scorer.score(task, builder.build(task, [traj]), traj)
        state = next(r for r in score.breakdown if r.criterion_id == "final-state")
        out.append((score.success, state.passed))
    return out


def test_oracle_passes_every_verification(tasks) -> None:
    results = asyncio.run(verdicts(tasks, "none"))
    assert all(state for _, state in results) and all(ok for ok, _ in results)


@pytest.mark.parametrize("corruption,applies", [
    ("wrong_argument", lambda t: True),
    ("skip_step", lambda t: any(s.writes for s in t.workflow)),      # a missing write
    ("extra_write", lambda t: True),
    ("wrong_row", lambda t: any(s.writes for s in t.workflow)),
    ("nothing", lambda t: True),
])
def test_every_corruption_fails_verification(tasks, corruption: str, applies) -> None:
    chosen = [t for t in tasks if applies(t)]
    assert len(chosen) >= 200 or corruption in ("skip_step", "wrong_row")
    results = asyncio.run(verdicts(chosen, corruption))
    passed = [t.id for t, (ok, _) in zip(chosen, results) if ok]
    assert passed == [], f"{corruption}: {len(passed)} of {len(chosen)} corrupted trajectories passed"
    if corruption in ("skip_step", "wrong_row", "nothing"):
        writes = [r for t, r in zip(chosen, results) if any(s.writes for s in t.workflow)]
        assert not any(state for _, state in writes)  # the state check alone catches them


def test_pool_formats_and_offline_annotation(tmp_path: Path) -> None:
    fn = {"name": "get_invoice", "description": "Get an invoice.",
          "parameters": {"type": "object", "properties": {"invoice_id": {"type": "string"}}, "required": ["invoice_id"]}}
    (tmp_path / "pool.json").write_text(json.dumps([{"type": "function", "function": fn},
                                                    {"name": "cancel_invoice", "description": "Cancel.",
                                                     "parameters": fn["parameters"]}]))
    specs, counts = load_pool(tmp_path / "pool.json")
    assert counts["annotated_by_rules"] == 2
    assert specs[0].effect["kind"] == "read" and specs[1].effect == {
        "kind": "update", "entity": "invoice", "key": "invoice_id", "where": {"invoice_id": "invoice_id"},
        "set": {}, "const": {"status": "cancelled"}}
    tb = tmp_path / "toolbench" / "Finance"
    tb.mkdir(parents=True)
    (tb / "quotes.json").write_text(json.dumps({"tool_name": "quotes", "api_list": [
        {"name": "Get Quote", "description": "A stock quote.",
         "required_parameters": [{"name": "symbol", "type": "STRING", "description": "Ticker"}],
         "optional_parameters": [{"name": "days", "type": "NUMBER", "description": "Window"}]}]}))
    specs, _ = load_pool(tmp_path / "toolbench")
    assert specs[0].name == "get_quote" and specs[0].area == "Finance"
    assert specs[0].parameters["required"] == ["symbol"] and specs[0].parameters["properties"]["days"]["type"] == "number"
    assert infer_effect("list_orders_by_customer", {"properties": {"customer_id": {}}})["entity"] == "order"


@pytest.mark.parametrize("effect,needle", [
    ({"kind": "read", "entity": "x; DROP TABLE y", "key": "x_id"}, "x-effect.entity must be a snake_case name"),
    ({"kind": "update", "entity": "acct", "key": "acct_id", "where": {"acct_id": "acct_id) OR 1=1 --"}},
     "is not a column name"),
    ({"kind": "update", "entity": "acct", "key": "acct_id", "where": {"acct_id": "acct_id"},
      "const": {"status'; ATTACH DATABASE 'x' AS y; --": "z"}}, "is not a column name"),
    ({"kind": "pragma", "entity": "acct", "key": "acct_id"}, "x-effect.kind must be one of"),
    ({"kind": "delete", "entity": "acct", "key": "acct_id"}, "needs x-effect.where"),
])
def test_teacher_written_specs_with_injection_are_refused(tmp_path: Path, effect, needle: str) -> None:
    spec = {"type": "function", "function": {"name": "evil_tool", "description": "x", "parameters": {
        "type": "object", "properties": {"acct_id": {"type": "string"}}, "required": ["acct_id"]}},
        "area": "test", "x-effect": effect}
    (tmp_path / "evil.jsonl").write_text(json.dumps(spec) + "\n")
    with pytest.raises(ConfigError, match="evil.jsonl:1") as err:
        load_pool(tmp_path / "evil.jsonl")
    assert needle in str(err.value)


def test_compiled_tools_only_touch_their_own_table(gen: GraphDomainsGenerator) -> None:
    domain = gen.domains[0]
    db = SQLiteDatabase(domain.state)
    before = db.digest()
    for tool in domain.tools:
        props = tool.parameters.get("properties", {})
        args = {p: ("x' OR '1'='1" if d.get("type") == "string" and "enum" not in d else
                    (d.get("enum") or [1])[0]) for p, d in props.items()}
        result = db.execute(tool, args)
        assert isinstance(result, dict)
        if tool.writes and "error" not in result and tool.effect.kind == "insert":
            continue  # an insert of odd text is a legitimate write to its own table
    changed = set(compute_changes(domain.state, db.rows()))
    writable = {t.effect.table for t in domain.tools if t.writes and t.effect.kind == "insert"}
    assert changed <= writable  # injection never changed a row through a read, update or delete
    db.close()
    assert before != "" and domain.state.digest() == SQLiteDatabase(domain.state).digest()


def test_synth_run_graph_domains_with_curriculum(synth, tmp_path: Path) -> None:
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "g", "--tasks", "60", "--set", "generator=graph-domains",
                    "--set", "rubric=verified", "--set", 'export.vertical=["banking", "travel"]'])
    assert result.returncode == 0, result.stderr
    root = tmp_path / "g"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["tasks"] == 60 and summary["success_rate"] == 1.0 and len(summary["domains"]) == 20
    assert json.loads((root / "graph.json").read_text())["modularity"] > 0.5 and (root / "graph.png").stat().st_size > 0
    general = (root / "exports/curriculum/general.jsonl").read_text().splitlines()
    vertical = [json.loads(line) for line in (root / "exports/curriculum/vertical.jsonl").read_text().splitlines()]
    assert len(general) == 60 and vertical and {r["domain"] for r in vertical} == {"banking", "travel"}
    assert Counter(json.loads(line)["domain"] for line in general)["banking"] == sum(r["domain"] == "banking" for r in vertical)


def test_teacher_annotates_unannotated_specs_and_bad_annotations_fall_back(tmp_path: Path) -> None:
    from synthagent.core.testing import ScriptedOpenAIServer
    from synthagent.plugins.backends.openai import OpenAIBackend

    pool = tmp_path / "pool.jsonl"
    params = {"type": "object", "properties": {"ticket_id": {"type": "string", "description": "the ticket"}},
              "required": ["ticket_id"]}
    lines = [{"type": "function", "function": {"name": name, "description": name, "parameters": params}}
             for name in ("get_ticket", "close_ticket", "reopen_ticket", "escalate_ticket")]
    pool.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def reply(body):
        text = body["messages"][0]["content"]
        if '"escalate_ticket"' in text:
            return '{"kind": "update", "entity": "ticket", "key": "ticket_id"}'  # no where: invalid twice
        kind = "read" if '"get_ticket"' in text else "update"
        return json.dumps({"kind": kind, "entity": "ticket", "key": "ticket_id", "where": {"ticket_id": "ticket_id"},
                           **({"const": {"status": "closed"}} if kind == "update" else {})})

    gen = GraphDomainsGenerator(pool=str(pool), annotate="teacher", min_tools=1, embedding="tfidf")
    with ScriptedOpenAIServer(reply) as server:
        asyncio.run(gen.annotate_with_teacher(OpenAIBackend(model="t", base_url=server.base_url)))
    by = {s.name: s.annotated_by for s in gen.specs}
    assert by == {"get_ticket": "teacher", "close_ticket": "teacher", "reopen_ticket": "teacher",
                  "escalate_ticket": "rules"}
    assert gen.stats["annotated_by_teacher"] == 3 and gen.stats["annotation_kept_rules"] == 1
    assert next(s for s in gen.specs if s.name == "reopen_ticket").effect["const"] == {"status": "closed"}
