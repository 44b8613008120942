"""The listening oracle (``listen = true``): arguments bound to hidden facts come from the user's answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import attrs
import pytest

from synthagent.core.agent_loop import run_episode
from synthagent.core.bindings import parse_binding
from synthagent.core.models import Message, Task
from synthagent.core.protocols import UserTurn
from synthagent.plugins.backends.oracle import OracleBackend, heard_value, listened_arguments, plan_for
from synthagent.plugins.common.corruptions import wrong_value
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.rubrics.scorer import RubricScorer
from synthagent.plugins.rubrics.workflow import WorkflowRubricBuilder
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator
from synthagent.plugins.simulators.users.rule import RuleUser, RuleUserSession


def _with_wrong_hidden_values(task: Task) -> Task:
    """The task as a user who misremembers every hidden fact sees it (same statements, wrong values)."""
    facts = tuple(attrs.evolve(f, value=wrong_value(f.value),
                               statement=f.statement.replace(str(f.value), str(wrong_value(f.value))))
                  for f in task.user_context)
    return attrs.evolve(task, user_context=facts)


class WrongUser:
    """The rule user, answering every question about a hidden fact with a wrong value."""

    name = "wrong"

    async def start(self, task: Task, seed: int) -> RuleUserSession:
        return RuleUserSession(_with_wrong_hidden_values(task), seed)


class SilentUser:
    """Says nothing useful to any question."""

    name = "silent"

    async def start(self, task: Task, seed: int) -> SilentUser:
        return self

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        return UserTurn(Message("user", "Hmm, I am not sure."))


async def _play(tasks: list[Task], policy: OracleBackend, users) -> list[tuple[float, list]]:
    tools, builder, scorer = SQLiteToolSimulator(), WorkflowRubricBuilder(), RubricScorer()
    out = []
    for task in tasks:
        session = await tools.start(task, 0)
        traj = await run_episode(task, policy=policy, tools=session, user=await users.start(task, 0), max_turns=30)
        await session.aclose()
        score = await scorer.score(task, builder.build(task, [traj]), traj)
        assert score.status == "ok"
        calls = [c for m in traj.messages if m.role == "assistant" for c in m.tool_calls]
        out.append((score.total, calls))
    return out


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    # tasks that need a hidden fact in some argument (the listening oracle must ask for it)
    every = OfflineDomainsGenerator().sample(60, seed=3)
    return [t for t in every
            if any(parse_binding(b).fact in {f.name for f in t.user_context} for s in t.workflow
                   for b in s.bindings.values())]


def test_with_the_rule_user_listening_changes_nothing(tasks) -> None:
    assert len(tasks) >= 20
    gold = asyncio.run(_play(tasks, OracleBackend(), RuleUser()))
    heard = asyncio.run(_play(tasks, OracleBackend(listen=True), RuleUser()))
    assert [s for s, _ in heard] == [s for s, _ in gold] == [1.0] * len(tasks)
    assert [c for _, c in heard] == [c for _, c in gold]  # the very same calls


def test_a_user_who_gives_wrong_values_makes_the_listening_oracle_fail(tasks) -> None:
    gold = asyncio.run(_play(tasks, OracleBackend(), WrongUser()))
    heard = asyncio.run(_play(tasks, OracleBackend(listen=True), WrongUser()))
    assert [s for s, _ in gold] == [1.0] * len(tasks)  # the plain oracle ignores the user
    assert all(s < 1.0 for s, _ in heard), [s for s, _ in heard]
    # the wrong value reached a call: for a task bound directly to a hidden fact, the call carries it
    for task, (_, calls) in zip(tasks, heard):
        hidden = {f.name: f.value for f in task.user_context}
        direct = [(s.tool, arg, hidden[b.fact]) for s in task.workflow for arg, text in s.bindings.items()
                  if (b := parse_binding(text)).kind == "fact" and b.fact in hidden]
        for tool, arg, value in direct:
            made = [c.arguments.get(arg) for c in calls if c.name == tool]
            assert made and value not in made, (task.id, tool, arg, value, made)
            if isinstance(value, (int, float)) or (" " not in str(value) and any(c.isdigit() for c in str(value))):
                    # a number or an id: heard exactly
                assert wrong_value(value) in made, (task.id, tool, arg, value, made)


def test_a_user_who_never_answers_leaves_the_arguments_out(tasks) -> None:
    heard = asyncio.run(_play(tasks[:5], OracleBackend(listen=True), SilentUser()))
    for task, (score, calls) in zip(tasks[:5], heard):
        assert score < 1.0
        for step in task.workflow:
            for arg, text in step.bindings.items():
                b = parse_binding(text)
                if b.kind == "fact" and b.fact in {f.name for f in task.user_context}:
                    # "Hmm, I am not sure." holds no token: the argument is the text itself
                    assert all(c.arguments.get(arg) == "Hmm, I am not sure." for c in calls if c.name == step.tool)


def test_listening_is_deterministic_and_named(tasks) -> None:
    one = asyncio.run(_play(tasks[:6], OracleBackend(listen=True), WrongUser()))
    two = asyncio.run(_play(tasks[:6], OracleBackend(listen=True), WrongUser()))
    assert one == two
    assert OracleBackend(listen=True).name == "oracle+listen"
    assert OracleBackend("skip_step", listen=True).name == "oracle:skip_step+listen"


def test_heard_value() -> None:
    assert heard_value("Sure: my account number is 2,407.", 2407) == 2407
    assert heard_value("It is 12.5 dollars", 12.0) == 12.5
    assert heard_value("Please move $300.", 275) == 300
    assert heard_value("My email is ann.lee@example.org, thanks", "x@y.z") == "ann.lee@example.org"
    assert heard_value("the card LC-48617999 please", "LC-48617998") == "LC-48617999"
    assert heard_value("  The red one.  ", "blue") == "The red one."
    assert heard_value("Ship to 78 Quarry Hill Road.", "77 Quarry Hill Road") == "Ship to 78 Quarry Hill Road."
    assert heard_value("no number here", 5) == "no number here"
    assert heard_value("From 2024-08-13 on.", "2024-08-12") == "2024-08-13"


async def _transcript(task: Task) -> list[Message]:
    session = await SQLiteToolSimulator().start(task, 0)
    traj = await run_episode(task, policy=OracleBackend(listen=True), tools=session,
                             user=await RuleUser().start(task, 0), max_turns=30)
    await session.aclose()
    return list(traj.messages)


def test_a_step_fact_argument_follows_the_row_the_user_named(tasks) -> None:
    """``step:N+fact:NAME``: the user names another row of step N's result -> the oracle acts on that row."""
    checked = 0
    for task in tasks:
        hidden = {f.name: f for f in task.user_context}
        for step in task.workflow:
            for arg, text in step.bindings.items():
                b = parse_binding(text)
                if b.kind != "step_fact" or b.fact not in hidden:
                    continue
                plan = plan_for(task)
                position = next(i for i, a in enumerate(plan) if a.kind == "call" and a.step == step.index)
                ask = next(i for i, a in enumerate(plan) if a.kind == "ask" and a.facts and a.facts[0].name == b.fact)
                # the gold conversation with the rule user, then another answer to the fact's question
                messages = asyncio.run(_transcript(task))
                assistants = [i for i, m in enumerate(messages) if m.role == "assistant"]
                lookup = next(i for i, a in enumerate(plan) if a.kind == "call" and a.step == b.step)
                result = json.loads(next(m.content or "" for m in messages[assistants[lookup]:] if m.role == "tool"))
                rows = result.get("items") if isinstance(result, dict) else None
                gold_fact, gold_arg = hidden[b.fact].value, step.arguments[arg]
                if not isinstance(rows, list):
                    continue
                col = next((k for r in rows for k, v in r.items() if v == gold_fact), None)
                key = next((k for r in rows for k, v in r.items() if v == gold_arg), None)
                others = [r for r in rows if col and r.get(col) != gold_fact and " " in str(r.get(col))]
                if not (col and key and others):
                    continue
                answer_at = next(i for i in range(assistants[ask] + 1, len(messages)) if messages[i].role == "user")
                messages[answer_at] = Message("user", f"It is {others[0][col]}.")
                action = plan[position]
                args = listened_arguments(task, plan, action, messages[:assistants[position]])
                assert args[arg] == others[0][key], (task.id, arg, args)
                checked += 1
    assert checked >= 3, checked
