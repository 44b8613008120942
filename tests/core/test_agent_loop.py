"""The LangGraph agent loop with scripted policies and users: routing, limits and failures."""

from __future__ import annotations

import asyncio
import json

from synthagent.core.agent_loop import run_episode
from synthagent.core.models import Message, ToolCall
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.testing import ScriptedChatModel, ScriptedUser, tool_call_message
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator


def one_task():
    return OfflineDomainsGenerator(domains=["banking"]).sample(1, seed=1)[0]


async def episode(policy, user, max_turns=10, task=None):
    task = task or one_task()
    tools = await SQLiteToolSimulator().start(task, 0)
    try:
        return await run_episode(task, policy=policy, tools=tools, user=user, max_turns=max_turns)
    finally:
        await tools.aclose()


def test_tool_calls_route_to_tools_and_text_to_the_user() -> None:
    task = one_task()
    step = task.workflow[0]
    policy = ScriptedChatModel([tool_call_message(step.tool, step.arguments), "Could you tell me more?", "All done."])
    traj = asyncio.run(episode(policy, ScriptedUser(["Here you go."]), task=task))
    roles = [m.role for m in traj.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant", "user"]
    assert traj.termination == "user_stop" and traj.turns == 3
    assert "error" not in json.loads(traj.messages[3].content)
    assert traj.messages[3].tool_call_id == "call_0"


def test_turn_limit_ends_the_episode() -> None:
    policy = ScriptedChatModel([], default="Tell me more?")
    traj = asyncio.run(episode(policy, ScriptedUser(["more"] * 50), max_turns=4))
    assert traj.termination == "max_turns" and traj.turns == 4


def test_no_user_means_the_first_text_is_final() -> None:
    traj = asyncio.run(episode(ScriptedChatModel(["The answer is 4."]), None))
    assert traj.termination == "final_answer" and traj.messages[-1].content == "The answer is 4."


def test_backend_failure_is_an_infra_error_not_a_crash() -> None:
    class Down:
        name = "down"

        async def chat(self, request: ChatRequest) -> ChatResponse:
            raise ConnectionError("server went away")

    traj = asyncio.run(episode(Down(), ScriptedUser()))
    assert traj.termination == "infra_error" and "server went away" in (traj.error or "")


def test_malformed_and_unknown_calls_become_error_observations() -> None:
    bad = Message("assistant", None, (ToolCall("c1", "get_x", {}, error="arguments are not JSON: {oops"),
                                      ToolCall("c2", "no_such_tool", {})))
    traj = asyncio.run(episode(ScriptedChatModel([bad, "ok"]), ScriptedUser()))
    observations = [json.loads(m.content) for m in traj.messages if m.role == "tool"]
    assert [o["error"] for o in observations] == ["malformed_call", "unknown_tool"]
    assert traj.malformed_tool_calls == 1 and traj.tool_errors == 2


def test_concurrent_episodes_do_not_share_state() -> None:
    task = one_task()
    writes = [s for s in task.workflow if s.writes]

    async def many():
        return await asyncio.gather(*[
            episode(ScriptedChatModel([tool_call_message(s.tool, s.arguments) for s in task.workflow] + ["done"]),
                    ScriptedUser(), task=task) for _ in range(8)])

    trajs = asyncio.run(many())
    assert len({t.final_state_digest for t in trajs}) == 1
    if writes:
        assert trajs[0].final_state_digest == task.gold_state.digest
