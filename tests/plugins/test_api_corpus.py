"""A real API corpus as the pool (issue 23.2): BFCL's function schemas normalized, graphed, split, made tasks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from synthagent.core.errors import ConfigError
from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
from synthagent.core.toolsource import snake_case
from synthagent.plugins.generators.graph_domains.corpus import (NormalizeError, corpus_records, json_type,
                                                                  normalize_function, rules_name)
from synthagent.plugins.generators.graph_domains.pool import pool_from_records
from synthagent.core.agent_loop import run_episode
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.rubrics.scorer import RubricScorer
from synthagent.plugins.rubrics.workflow import VerifiedRubricBuilder
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase, SQLiteToolSimulator
from synthagent.plugins.simulators.users.rule import RuleUser

pytest.importorskip("bfcl_eval")


async def verdicts(tasks) -> list[tuple[bool, bool]]:
    """(success, final state matched) of the oracle on each task, verified as in test_graph_domains.py."""
    builder, scorer = VerifiedRubricBuilder(exact_writes=True), RubricScorer()
    out = []
    for task in tasks:
        session = await SQLiteToolSimulator().start(task, 0)
        traj = await run_episode(task, policy=OracleBackend("none"), tools=session,
                                 user=await RuleUser().start(task, 0), max_turns=40)
        await session.aclose()
        score = await scorer.score(task, builder.build(task, [traj]), traj)
        state = next(r for r in score.breakdown if r.criterion_id == "final-state")
        out.append((score.success, state.passed))
    return out


def _fn(name: str, props: dict, required: list | None = None, description: str = "d") -> dict:
    return {"name": name, "description": description,
            "parameters": {"type": "dict", "properties": props, "required": required or []}}


@pytest.mark.parametrize("bfcl,expected", [
    ("dict", "object"), ("float", "number"), ("double", "number"), ("tuple", "array"), ("ArrayList", "array"),
    ("HashMap", "object"), ("any", "string"), ("String", "string"), ("Boolean", "boolean"), ("Array", "array"),
    ("long", "integer"), ("char", "string"), ("integer", "integer"),
])
def test_each_bfcl_type_maps_to_json_schema(bfcl: str, expected: str) -> None:
    assert json_type(bfcl) == expected
    fn = normalize_function(_fn("get_thing", {"value": {"type": bfcl, "description": "v"}}, ["value"]))
    assert fn["parameters"]["properties"]["value"]["type"] == expected


def test_nested_types_names_and_required_are_normalized() -> None:
    fn = normalize_function({"type": "function", "function": _fn("sports.ranking.getChampion", {
        "teamName": {"type": "String", "description": "team"},
        "scores": {"type": "tuple", "items": {"type": "float"}},
        "filters": {"type": "dict", "properties": {"minAge": {"type": "long"}}, "required": ["minAge", "gone"]},
        "items": {"type": "ArrayList"}, "from": {"type": "string"}}, ["teamName"])})
    assert fn["name"] == "sports_ranking_get_champion"
    props = fn["parameters"]["properties"]
    # "items" would read as a list result; a fact called "from" would be asked for by every sentence with "from"
    assert list(props) == ["team_name", "scores", "filters", "items_value", "from_value"]
    assert props["scores"] == {"type": "array", "items": {"type": "number"}}
    assert props["filters"]["type"] == "object" and props["filters"]["properties"]["minAge"]["type"] == "integer"
    assert props["filters"]["required"] == ["minAge"] and props["items_value"]["items"] == {"type": "string"}
    assert fn["parameters"]["required"] == ["team_name"] and fn["parameters"]["type"] == "object"
    assert normalize_function(_fn("Media_3_PlayMovie", {}))["name"] == "media_3_play_movie"


@pytest.mark.parametrize("fn,reason", [
    ({"description": "no name"}, "not_a_function"),
    (_fn("x" * 65, {}), "name_too_long"),
    (_fn("get_x", {"a": {"type": "complex"}}), "unknown_type"),
    (_fn("get_x", {"a": {"type": ""}}), "unknown_type"),
    (_fn("get_x", {"userId": {"type": "string"}, "user_id": {"type": "string"}}), "parameter_name_collision"),
    (_fn("get_x", {"a": {"type": "string"}}, ["b"]), "required_undeclared"),
    ({"name": "get_x", "parameters": {"type": "string"}}, "parameters_not_object"),
    (_fn("get_x", {"a": "string"}), "invalid_schema"),
    (_fn("find_2x", {"a": {"type": "string"}}), "invalid_effect"),  # the entity the rules infer is "2x"
])
def test_invalid_schemas_are_dropped_with_their_reason(fn: dict, reason: str) -> None:
    with pytest.raises(NormalizeError) as err:
        normalize_function(fn)
    assert err.value.reason == reason
    records, counts = corpus_records([("cat", "here", fn), ("cat", "there", _fn("get_ok", {}))])
    assert counts[f"dropped_{reason}"] == 1 and counts["kept"] == 1 and counts["functions"] == 2
    assert [r[2]["function"]["name"] for r in records] == ["get_ok"]


def test_duplicates_removed_and_same_name_variants_suffixed() -> None:
    weather = _fn("get.weather", {"city": {"type": "string"}}, ["city"], "Weather in a city.")
    other = _fn("get_weather", {"city": {"type": "string"}, "days": {"type": "integer"}}, ["city"])
    triples = [("simple_python", "1", weather), ("multiple", "2", dict(weather, description="Same schema.")),
               ("live_simple", "3", other), ("live_simple", "4", other),
               ("live_multiple", "5", _fn("calculate_resistance", {"volts": {"type": "float"}}))]
    records, counts = corpus_records(triples)
    names = [r[2]["function"]["name"] for r in records]
    assert names == ["get_weather", "get_weather_2", "calculate_resistance"]
    assert counts["duplicates"] == 2 and counts["renamed"] == 1 and counts["kept"] == 3
    assert [r[2]["area"] for r in records] == ["weather", "weather", "resistance"]
    specs, pool_counts = pool_from_records(records)  # strict: every normalized record is a valid pool spec
    assert pool_counts["specs"] == 3
    assert specs[0].effect["entity"] == specs[1].effect["entity"] == "weather"  # the variant keeps its entity


@pytest.mark.parametrize("raw,method,kind,entity", [
    ("sports.ranking.get_champion", "get_champion", "read", "champion"),
    ("api_token_api.APITokenApi.post_api_token", "post_api_token", "insert", "token"),
    ("Restaurants_2_ReserveRestaurant", "book_restaurant", "insert", "restaurant"),
    ("Media_3_PlayMovie", "play_movie", "read", "movie"),
    ("calculate_resistance", "calculate_resistance", "read", "resistance"),
])
def test_the_effect_rules_read_the_method_of_a_name(raw: str, method: str, kind: str, entity: str) -> None:
    assert rules_name(raw) == method
    records, _ = corpus_records([("c", "1", _fn(raw, {"title": {"type": "string"}}, ["title"]))])
    (spec,), _ = pool_from_records(records)
    assert spec.name == snake_case(raw) and (spec.effect["kind"], spec.effect["entity"]) == (kind, entity)
    assert spec.annotated_by == "rules"


def test_areas_from_prefixes_nouns_or_category() -> None:
    triples = [("c", "1", _fn("sports.ranking.get_champion", {})), ("c", "2", _fn("Media_3_PlayMovie", {})),
               ("c", "3", _fn("calculate_resistance", {})), ("simple_java", "4", _fn("get", {}))]
    records, _ = corpus_records(triples)
    assert [r[2]["area"] for r in records] == ["sports", "media", "resistance", "simple_java"]


def test_user_files_bfcl_style_and_openai(tmp_path: Path) -> None:
    bfcl = tmp_path / "mine.json"
    bfcl.write_text(json.dumps({"id": "x", "function": [_fn("book.Table", {"partySize": {"type": "integer"}})]}) + "\n")
    openai = tmp_path / "tools.json"
    openai.write_text(json.dumps([{"type": "function", "function": {"name": "getOrder", "description": "An order.",
                                   "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                  "required": ["order_id"]}}}]))
    records, counts = corpus_records([bfcl, openai])
    assert [r[2]["function"]["name"] for r in records] == ["book_table", "get_order"]
    assert records[0][2]["function"]["parameters"]["properties"] == {"party_size": {"type": "integer"}}
    with pytest.raises(ConfigError, match="not a file"):
        corpus_records([tmp_path / "missing.json"])


def test_the_bfcl_wheel_gives_at_least_2000_specs() -> None:
    records, counts = corpus_records(["bfcl"])
    specs, pool_counts = pool_from_records(records)  # strict: nothing left invalid after normalizing
    print(f"\n[corpus] {dict(counts)}")
    assert counts["functions"] > 8000 and len(specs) >= 2000 and pool_counts["specs"] == len(specs)
    assert len({s.name for s in specs}) == len(specs) and len({s.area for s in specs}) >= 100
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["kept"] + counts["duplicates"] + dropped == counts["functions"]


def test_a_few_hundred_bfcl_apis_make_domains_whose_tasks_the_oracle_solves() -> None:
    gen = GraphDomainsGenerator(pool="bfcl", max_apis=400, embedding="tfidf", resolution=4.0)
    assert len(gen.specs) == 400 and gen.pool_counts["specs"] == gen.pool_counts["annotated_by_rules"] == 400
    domains = gen.discover(0)
    tasks = gen.sample(40, seed=0)
    print(f"\n[corpus e2e] {len(domains)} domains, {len({t.domain for t in tasks})} with tasks, {len(tasks)} tasks, "
          f"modularity {gen.graph.modularity:.3f}, rejected {dict(gen.stats)}")
    assert len(domains) >= 5 and gen.graph.modularity > 0.5 and len(tasks) >= 20 and len({t.domain for t in tasks}) >= 3
    for t in tasks:
        db = SQLiteDatabase(t.initial_state)
        for step in t.workflow:
            if step.tool:
                assert "error" not in db.execute(t.tool(step.tool), step.arguments)
        assert db.digest() == t.gold_state.digest
        db.close()
    results = asyncio.run(verdicts(tasks))
    assert all(state for _, state in results) and all(ok for ok, _ in results)
    again = GraphDomainsGenerator(pool="bfcl", max_apis=400, embedding="tfidf", resolution=4.0)
    assert [t.id for t in again.sample(40, seed=0)] == [t.id for t in tasks]  # same seed, same tasks


def test_pool_names_builtin_and_bfcl() -> None:
    assert len(GraphDomainsGenerator(pool="builtin", embedding="tfidf").specs) == 335
    bfcl = GraphDomainsGenerator(pool="bfcl")
    assert bfcl.pool_counts["corpus_functions"] > 8000
    assert bfcl.options["embedding"] == "tfidf"  # auto: MiniLM would take minutes on a corpus's slots
    with pytest.raises(ConfigError, match="either pool or corpus"):
        GraphDomainsGenerator(pool="builtin", corpus=["bfcl"])
