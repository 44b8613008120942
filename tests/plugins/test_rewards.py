"""Scores separate good from bad: the oracle beats each corruption by at least 0.5 on every task."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from synthagent.core.agent_loop import run_episode
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.simulators.users.rule import RuleUser
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator
from synthagent.plugins.rubrics.scorer import RubricScorer
from synthagent.plugins.rubrics.workflow import WorkflowRubricBuilder

CORRUPTIONS = ("skip_step", "never_ask", "extra_write", "nothing", "wrong_argument")


async def score_all(tasks, corruption: str) -> list[float]:
    policy, tools, users = OracleBackend(corruption), SQLiteToolSimulator(), RuleUser()
    builder, scorer = WorkflowRubricBuilder(), RubricScorer()
    out = []
    for task in tasks:
        session = await tools.start(task, 0)
        traj = await run_episode(task, policy=policy, tools=session, user=await users.start(task, 0), max_turns=30)
        await session.aclose()
        score = await scorer.score(task, builder.build(task, [traj]), traj)
        assert score.status == "ok"
        out.append(score.total)
    return out


@pytest.fixture(scope="module")
def tasks():
    return OfflineDomainsGenerator().sample(200, seed=11)


@pytest.fixture(scope="module")
def oracle_scores(tasks):
    return asyncio.run(score_all(tasks, "none"))


def test_the_oracle_passes_every_task(oracle_scores) -> None:
    assert oracle_scores == [1.0] * len(oracle_scores)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_each_corruption_scores_at_least_half_lower_on_every_task(tasks, oracle_scores, corruption: str) -> None:
    scores = asyncio.run(score_all(tasks, corruption))
    gaps = [o - c for o, c in zip(oracle_scores, scores)]
    worst = min(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[worst] >= 0.5, f"{corruption}: task {tasks[worst].id} ({tasks[worst].provenance.template}) scored {scores[worst]}"
    print(f"{corruption}: mean {statistics.fmean(scores):.3f} vs oracle {statistics.fmean(oracle_scores):.3f}")


def test_doing_nothing_never_passes_read_only_tasks(tasks) -> None:
    read_only = [t for t in tasks if not any(s.writes for s in t.workflow)]
    assert read_only, "the pack should have read-only scenarios"
    assert all(t.answer for t in read_only)
    assert max(asyncio.run(score_all(read_only, "nothing"))) == 0.0
