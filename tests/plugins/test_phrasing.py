"""The offline teacher and rule user vary their wording (seeded) without breaking what the rubric relies on."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from synthagent.core.agent_loop import run_episode
from synthagent.core.diversity import distinct_n, lexical_diversity, template_of
from synthagent.core.models import Message
from synthagent.plugins.backends import oracle
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.common.evidence import CONFIRM, asked_facts
from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator
from synthagent.plugins.simulators.users.rule import RuleUser

BANKS = ("ASK_PHRASES", "CONFIRM_PHRASES", "DONE_PHRASES", "LOOKUP_PHRASES", "VALUE_PHRASES", "CLOSINGS")


@pytest.fixture(scope="module")
def tasks():
    graph = GraphDomainsGenerator(embedding="tfidf")
    graph.discover(0)
    return OfflineDomainsGenerator().sample(120, seed=3) + graph.sample(120, seed=3)


async def _episodes(tasks, seed: int = 0):
    policy, tools, users = OracleBackend(), SQLiteToolSimulator(), RuleUser()
    out = []
    for task in tasks:
        session = await tools.start(task, 0)
        out.append(await run_episode(task, policy=policy, tools=session, user=await users.start(task, 0),
                                     max_turns=30, seed=seed))
        await session.aclose()
    return out


def test_no_stock_phrase_asks_for_a_fact_by_accident(tasks) -> None:
    """A phrase holding a fact keyword would ask for a fact the instruction gave (a penalty)."""
    facts = [f for t in tasks for f in tuple(t.user_context) + tuple(t.visible_facts)]
    for bank in BANKS:
        for phrase in getattr(oracle, bank):
            bare = phrase.format(facts="", done="", values="")
            assert not asked_facts(bare, facts), f"{bank}: {phrase!r} mentions a fact keyword"


def test_confirmations_are_questions_the_rubric_recognizes() -> None:
    assert len(oracle.CONFIRM_PHRASES) >= 10 and oracle.CONFIRM_TEXT in oracle.CONFIRM_PHRASES
    for phrase in oracle.CONFIRM_PHRASES:
        assert "?" in phrase and CONFIRM.search(phrase), phrase
    for phrase in oracle.ASK_PHRASES + oracle.DONE_PHRASES + oracle.LOOKUP_PHRASES + oracle.VALUE_PHRASES:
        assert not CONFIRM.search(phrase), f"{phrase!r} would count as a confirmation"
    for phrase in oracle.DONE_PHRASES + oracle.LOOKUP_PHRASES + oracle.VALUE_PHRASES + oracle.CLOSINGS:
        assert "?" not in phrase, f"{phrase!r}: a final answer must not be a question"


def test_the_oracle_varies_wording_but_not_per_seed(tasks) -> None:
    task = next(t for t in tasks if t.user_context)
    same = [a.text for a in oracle.plan_for(task, seed=7)], [a.text for a in oracle.plan_for(task, seed=7)]
    assert same[0] == same[1]
    asks = {next(a.text for a in oracle.plan_for(task, seed=s) if a.kind == "ask") for s in range(40)}
    assert len(asks) >= 10, asks
    finals = {oracle.plan_for(task, seed=s)[-1].text for s in range(40)}
    assert len(finals) >= 10, finals


def test_rule_user_varies_wording_and_still_reveals_and_confirms(tasks) -> None:
    task = next(t for t in tasks if t.user_context)
    fact = task.user_context[0]
    ask = Message("assistant", f"What is {fact.description} (your {fact.keywords[0]})?")

    async def replies(message: Message, seeds) -> list:
        return [await (await RuleUser().start(task, s)).respond([Message("user", task.instruction), message])
                for s in seeds]

    reveals = asyncio.run(replies(ask, range(30)))
    assert all(fact.statement in r.message.content and not r.stop for r in reveals)
    assert len({r.message.content for r in reveals}) >= 8
    again = asyncio.run(replies(ask, [5, 5]))
    assert again[0].message.content == again[1].message.content == reveals[5].message.content
    yes = asyncio.run(replies(Message("assistant", oracle.CONFIRM_TEXT), range(30)))
    assert len({r.message.content for r in yes}) >= 6 and not any(r.stop for r in yes)
    stops = asyncio.run(replies(Message("assistant", "Done."), range(30)))
    assert all(r.stop for r in stops) and len({r.message.content for r in stops}) >= 8


def test_default_data_has_no_dominant_template(tasks) -> None:
    trajectories = asyncio.run(_episodes(tasks[::2]))
    div = lexical_diversity(trajectories, tasks)
    print(div)
    assert div["assistant"]["turns"] >= 200 and div["user"]["turns"] >= 200
    assert div["assistant"]["top_template_share"] <= 0.10, div["assistant"]
    assert div["user"]["top_template_share"] <= 0.10, div["user"]
    assert div["assistant"]["distinct_2"] > 0.1 and div["user"]["distinct_2"] > 0.1


def test_templates_mask_the_tasks_words_and_fold_value_lists() -> None:
    assert template_of('Done: order O0012 for "Blue Mug", total 12.50.') == "done: order <v> for <v>, total <v>."
    assert template_of("Found: a@b.com, T0001 and T0002.") == template_of("Found: x@y.org.") == "found: <v>."
    assert template_of("Your card ending 4242 is Gold tier.", ["Gold tier"]) == "your card ending <v> is <v>."
    assert distinct_n(["a b a b", "a b"]) == pytest.approx(2 / 4)
    assert distinct_n([]) == 0.0
    empty = lexical_diversity([])
    assert empty["assistant"] == {"turns": 0, "distinct_2": 0.0, "templates": 0, "top_template_share": 0.0,
                                  "top_template": None}
    counts = Counter(template_of(p.format(facts="the X")) for p in oracle.ASK_PHRASES)
    assert len(counts) == len(oracle.ASK_PHRASES)
