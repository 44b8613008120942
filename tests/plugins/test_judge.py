"""The judged scorer: strict verdicts, re-asks, and judge failures recorded as failures, never as scores."""

from __future__ import annotations

import asyncio

import pytest

from synthagent.core.agent_loop import run_episode
from synthagent.core.errors import ConfigError
from synthagent.core.protocols import RunContext
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.rubrics.judge import JudgeScorer, parse_verdict
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.simulators.users.rule import RuleUser
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator
from synthagent.plugins.rubrics.workflow import WorkflowRubricBuilder

QUESTION = "Does the agent's final message tell the user what was done?"


@pytest.mark.parametrize("text,ok", [
    ('{"verdict": "pass", "reason": "turn 6 says it"}', True),
    ('  {"verdict": "fail", "reason": "never said"}\n', True),
    ("It passes.", False),
    ('{"verdict": "maybe", "reason": "x"}', False),
    ('{"verdict": "pass"}', False),
    ('{"verdict": "pass", "reason": "x", "score": 1}', False),
    ('Sure: {"verdict": "pass", "reason": "x"}', False),
    ('["pass"]', False),
])
def test_verdicts_are_parsed_strictly(text: str, ok: bool) -> None:
    assert isinstance(parse_verdict(text), tuple) is ok


def scored(replies):
    task = OfflineDomainsGenerator(domains=["clinic"]).sample(1, seed=4)[0]
    rubric = WorkflowRubricBuilder(judge=[QUESTION]).build(task, [])

    async def go():
        session = await SQLiteToolSimulator().start(task, 0)
        traj = await run_episode(task, policy=OracleBackend(), tools=session, user=await RuleUser().start(task, 0),
                                 max_turns=30)
        scorer = JudgeScorer()
        with ScriptedOpenAIServer(lambda body: next(replies)) as server:
            scorer.setup(RunContext(llm=OpenAIBackend(model="judge", base_url=server.base_url), mapping=None,
                                    run_dir="", seed=0))
            return await scorer.score(task, rubric, traj), scorer, server.requests

    return asyncio.run(go())


def test_a_well_formed_verdict_counts_like_a_subgoal() -> None:
    score, scorer, requests = scored(iter(['{"verdict": "fail", "reason": "the last turn lists no outcome"}']))
    assert score.status == "ok" and score.total is not None and not score.success
    judged = next(r for r in score.breakdown if r.criterion_id == "judge-0")
    assert judged.passed is False and judged.checker == "judged:judge"
    assert len(requests) == 1 and QUESTION in requests[0]["messages"][0]["content"]  # one criterion per call
    passed, _, _ = scored(iter(['{"verdict": "pass", "reason": "the final turn says it"}']))
    assert passed.status == "ok" and passed.total == 1.0 and passed.success


def test_a_malformed_verdict_is_reasked_then_recorded_as_a_judge_failure() -> None:
    score, scorer, requests = scored(iter(["Looks good to me!", '{"verdict": "pass"}']))
    assert score.status == "judge_error" and score.total is None and not score.success
    failure = next(r for r in score.breakdown if r.criterion_id == "judge-0")
    assert failure.checker == "judged:judge_failure" and "judge failure" in failure.evidence
    assert len(requests) == 2 and scorer.stats["judge_reasked"] == 1 and scorer.stats["judge_failures"] == 1
    repaired, scorer, _ = scored(iter(["Looks good to me!", '{"verdict": "pass", "reason": "turn 5"}']))
    assert repaired.status == "ok" and repaired.total == 1.0


def test_the_oracle_cannot_judge() -> None:
    with pytest.raises(ConfigError, match="needs a teacher model as the judge"):
        JudgeScorer().setup(RunContext(llm=OracleBackend(), mapping=None, run_dir="", seed=0))
