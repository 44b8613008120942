"""The user-query term judges a question by what it asks, not by the task's keywords (issue 24, point 1).

The gamed policy is the one the issue measured from outside: the oracle's calls and answer, but every question
it asks replaced by one fixed list of details ("your date, branch, day, code, seat and <the fact's keyword>"),
so it names the task's one fact among things the task never needed. Before the fix the rubric counted that as a
one-fact question and paid it 0.925 on the persona-fuzzy path. The comparisons below are made on the reward,
with the user's reply left as it was (the most favourable case for the gamer: a user that answered anyway).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from synthagent.core.config import load_config
from synthagent.core.models import Fact, Message, Task, Trajectory
from synthagent.core.runtime import Runtime
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.common.evidence import asked_one_fact, question_asks
from synthagent.plugins.rubrics.judge import JudgeScorer
from synthagent.plugins.simulators.users.rule import ONE_AT_A_TIME, RuleUserSession

GENERIC = "date, branch, day, code, seat"


def blanket(fact: Fact) -> str:
    return f"Before I start, tell me your {GENERIC} and {fact.keywords[0]}?"


def gamed(task: Task, trajectory: Trajectory) -> Trajectory:
    """``trajectory`` with every question for a hidden fact replaced by the blanket list (answers kept)."""
    facts = [*task.user_context, *task.visible_facts]
    out = []
    for m in trajectory.messages:
        fact = asked_one_fact(m.content or "", facts) if m.role == "assistant" and not m.tool_calls else None
        out.append(attrs.evolve(m, content=blanket(fact)) if fact is not None and "?" in (m.content or "") else m)
    assert out != list(trajectory.messages), "the oracle asked no question to replace"
    return attrs.evolve(trajectory, messages=tuple(out))


async def _scores(runtime: Runtime, tasks: list[Task], scorer: Any = None) -> list[tuple[float, float]]:
    pairs = []
    for task in tasks:
        demos = [await runtime.rollout(task, k, OracleBackend()) for k in range(runtime.demonstrations)]
        rubric = await runtime.build_rubric(task, demos)
        oracle = await runtime.rollout(task, 0, OracleBackend())
        score = scorer.score if scorer is not None else runtime.score
        a, b = await score(task, rubric, oracle), await score(task, rubric, gamed(task, oracle))
        assert a.status == b.status == "ok", (a, b)
        pairs.append((float(a.total or 0.0), float(b.total or 0.0)))
    return pairs


def _assert_clear_margin(pairs: list[tuple[float, float]]) -> None:
    oracle = sum(a for a, _ in pairs) / len(pairs)
    blanket_mean = sum(b for _, b in pairs) / len(pairs)
    print(f"oracle {oracle:.3f} blanket {blanket_mean:.3f} over {len(pairs)} tasks")
    assert oracle == 1.0, pairs
    assert blanket_mean <= 0.5, (blanket_mean, pairs)  # the old term paid it 0.925 on persona-fuzzy
    assert all(b < a for a, b in pairs), pairs


def _hidden(tasks: list[Task], n: int) -> list[Task]:
    picked = [t for t in tasks if t.user_context][:n]
    assert len(picked) == n
    return picked


@pytest.mark.parametrize("rubric", ["workflow", "workflow-rubric"])
def test_blanket_scores_clearly_below_the_oracle_on_offline_domains(plugins: Any, rubric: str) -> None:
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    runtime = Runtime(load_config(None, [f"rubric={rubric}"]), plugins)
    runtime.setup()
    tasks = _hidden(OfflineDomainsGenerator().sample(60, seed=4), 8)
    assert sum(len(t.user_context) == 1 for t in tasks) >= 2  # one-fact tasks: where the old term was fooled
    _assert_clear_margin(asyncio.run(_scores(runtime, tasks)))


def test_blanket_scores_clearly_below_the_oracle_on_graph_domains(plugins: Any) -> None:
    runtime = Runtime(load_config(None, ["generator=graph-domains", "rubric=verified"]), plugins)
    runtime.setup()
    gen = runtime.components.generator
    gen.discover(0)
    tasks = _hidden(gen.sample(80, seed=1), 6)
    _assert_clear_margin(asyncio.run(_scores(runtime, tasks)))


class _PassingJudge:
    """A judge that passes every language criterion: the blanket cannot hide behind the judge."""

    def __call__(self, body: dict) -> str:
        return json.dumps({"verdict": "pass", "reason": "fine"})


def _persona_fuzzy_teacher() -> Any:
    """The scripted teacher of the persona-fuzzy tests (tests are not a package: loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pf_tests", Path(__file__).with_name("test_persona_fuzzy.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Teacher


@pytest.mark.parametrize("judge", [False, True])
def test_blanket_scores_clearly_below_the_oracle_on_persona_fuzzy(plugins: Any, tmp_path: Path, judge: bool) -> None:
    Teacher = _persona_fuzzy_teacher()
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(json.dumps({"id": f"t{n}", "description": f"A shopper, persona number {n}."}) + "\n"
                                for n in (0, 5, 6, 11, 12, 17)))
    with ScriptedOpenAIServer(Teacher()) as server, ScriptedOpenAIServer(_PassingJudge()) as judge_server:
        judged = ["rubric=workflow", 'plugins.workflow.judge=["Was the agent polite?"]'] if judge else []
        config = load_config(None, ["generator=persona-fuzzy", "tools=llm", "user=rule", "llm.backend=openai",
                                    f"llm.base_url={server.base_url}", "llm.model=teacher",
                                    f'plugins.persona-fuzzy.personas="{personas}"', *judged])
        runtime = Runtime(config, plugins)
        runtime.setup(str(tmp_path))
        scorer: Any = None
        if judge:
            from synthagent.plugins.backends.openai import OpenAIBackend
            scorer = JudgeScorer()
            scorer.llm = OpenAIBackend(model="judge", base_url=judge_server.base_url)

        async def go() -> list[tuple[float, float]]:
            from synthagent.core.protocols import GenerationContext

            gen = runtime.components.generator
            tasks = [t async for t in gen.generate(GenerationContext(count=4, seed=0, llm=runtime.components.llm))]
            assert len(tasks) == 4 and all(len(t.user_context) == 1 for t in tasks)
            try:
                return await _scores(runtime, tasks, scorer)
            finally:
                await runtime.aclose()
                if scorer is not None:
                    await scorer.llm.aclose()

        pairs = asyncio.run(go())
        if judge:
            assert scorer.stats["judged_pass"] >= 8  # the judge was asked about both trajectories and passed them
    _assert_clear_margin(pairs)


def test_a_question_is_judged_by_what_it_asks() -> None:
    branch = Fact("branch", "Riverside", "the branch you visit", ("branch",))
    date = Fact("date", "2026-05-01", "the date of your visit", ("date", "day"))
    assert question_asks(blanket(branch), [branch]).count == 5  # the branch, and four details the task lacks
    assert asked_one_fact(blanket(branch), [branch]) is None        # one task fact among five other details
    assert asked_one_fact("Which branch do you visit?", [branch]) == branch
    assert asked_one_fact("Could you tell me the date of your visit (your day)?", [branch, date]) == date
    # the fact's own description may use detail words: "the date and time" of one fact asks for one thing
    slot = Fact("slot", "9:00", "the date and time of your appointment", ("appointment",))
    assert asked_one_fact("What is the date and time of your appointment?", [slot]) == slot
    assert question_asks("Please tell me everything about your booking?", [branch]).extras
    assert asked_one_fact("Which branch? Also, what is your seat and flight number?", [branch]) is None


def test_the_rule_user_answers_nothing_of_a_blanket_list() -> None:
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    task = next(t for t in OfflineDomainsGenerator().sample(40, seed=2) if len(t.user_context) == 1)
    fact = task.user_context[0]
    reply = asyncio.run(RuleUserSession(task).respond([Message("assistant", blanket(fact))])).message.content
    assert reply in ONE_AT_A_TIME and str(fact.value) not in (reply or "")
    plain = asyncio.run(RuleUserSession(task).respond([Message("assistant", f"What is your {fact.keywords[0]}?")]))
    assert str(fact.value).lower() in (plain.message.content or "").lower()
