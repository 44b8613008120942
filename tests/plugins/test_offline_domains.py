"""The built-in domain pack and the offline-domains generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthagent.core.errors import DomainError
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.generators.offline_domains.pack import builtin_domains_dir, load_domain, load_pack, problems_of
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase


def test_every_anchor_row_of_every_scenario_has_a_working_gold_path() -> None:
    for path in sorted(builtin_domains_dir().glob("*.json")):
        load_domain(path, check_anchors=None)  # raises DomainError naming the row otherwise


def test_pack_size() -> None:
    domains = load_pack()
    assert len(domains) >= 8
    assert sum(len(d.tools) for d in domains) >= 80
    kinds = {t.effect.kind for d in domains for t in d.tools}
    assert kinds == {"read", "insert", "update", "delete"}


def test_tasks_have_dependent_steps_and_hidden_facts() -> None:
    tasks = OfflineDomainsGenerator().sample(200, seed=0)
    assert len(tasks) == 200 and len({t.id for t in tasks}) == 200
    assert len({t.domain for t in tasks}) >= 8
    for t in tasks:
        calls = [s for s in t.workflow if s.tool]
        assert 2 <= len(calls) <= 6
        assert any(b.startswith("step:") for s in calls for b in s.bindings.values()), t.id
        assert 1 <= len(t.user_context) <= 3
        for fact in t.user_context:
            assert str(fact.value).lower() not in t.instruction.lower()
            assert str(fact.value) in t.full_instruction
            assert any(f"fact:{fact.name}" in b for s in calls for b in s.bindings.values())


def test_gold_path_reproduces_the_gold_state() -> None:
    for t in OfflineDomainsGenerator().sample(40, seed=3):
        db = SQLiteDatabase(t.initial_state)
        for step in t.workflow:
            assert "error" not in db.execute(t.tool(step.tool), step.arguments)
        assert db.digest() == t.gold_state.digest
        writes = any(s.writes for s in t.workflow)
        assert (db.digest() != t.initial_state.digest()) == writes
        db.close()


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    a = OfflineDomainsGenerator().sample(50, seed=4)
    b = OfflineDomainsGenerator().sample(50, seed=4)
    c = OfflineDomainsGenerator().sample(50, seed=5)
    assert a == b
    assert [t.id for t in a] != [t.id for t in c]


def test_domain_filter_and_options() -> None:
    gen = OfflineDomainsGenerator(domains=["banking"], max_hidden=1, max_tools=5)
    tasks = gen.sample(10, seed=0)
    assert {t.domain for t in tasks} == {"banking"}
    assert all(len(t.user_context) == 1 and len(t.tools) <= 6 for t in tasks)
    with pytest.raises(DomainError, match="unknown domain"):
        OfflineDomainsGenerator(domains=["atlantis"]).sample(1, seed=0)


def test_invalid_domain_file_names_file_path_and_problem(tmp_path: Path) -> None:
    raw = json.loads((builtin_domains_dir() / "banking.json").read_text())
    raw["tools"][0]["effect"]["table"] = "nope"
    raw["scenarios"][0]["steps"][0]["tool"] = "ghost"
    bad = tmp_path / "banking.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(DomainError) as err:
        load_domain(bad)
    problems = problems_of(err.value)
    assert any("banking.json: $.tools[0].effect.table: unknown table 'nope'" in p for p in problems)
    assert any("$.scenarios[0].steps[0].tool: unknown tool 'ghost'" in p for p in problems)
