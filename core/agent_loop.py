"""The agent loop: a LangGraph ``StateGraph`` with ``agent``, ``tools`` and ``user`` nodes.

::

    START -> agent --(tool calls)--> tools -> agent
                   --(text, user)--> user --(reply)--> agent
                                          --(stop)---> END
                   --(turn limit / no user / error)--> END

The same graph serves teacher demonstrations, evaluation and RL rollouts. The graph is compiled once per
process; each episode's policy, tool session and user session travel in the run config
(``configurable.episode``), so nothing is rebuilt per rollout. Nodes *and routers* are coroutines: under
``ainvoke`` LangGraph runs a sync node or conditional-edge function in a thread pool (a thread hop per step,
and a ``sqlite3`` connection refuses use from another thread), so nothing here is sync.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

import attrs
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from synthagent.core.models import Message, Task, Trajectory, Usage, stable_id, trajectory_id
from synthagent.core.protocols import ChatRequest, LLMBackend, ToolSession, UserSession

__all__ = ["Episode", "run_episode", "build_graph", "episode_seed", "initial_messages", "TERMINATIONS"]

#: Why an episode ended.
TERMINATIONS = ("user_stop", "final_answer", "max_turns", "infra_error")


class EpisodeState(TypedDict):
    """The graph's state: the conversation, the agent's turn count and the termination reason."""

    messages: Annotated[list[Message], operator.add]
    turns: int
    termination: str | None


@attrs.define
class Episode:
    """Everything one rollout needs, plus the counters it fills."""

    task: Task
    policy: LLMBackend
    tools: ToolSession
    user: UserSession | None
    max_turns: int
    seed: int
    params: Mapping[str, Any] = attrs.field(factory=dict)
    usage: Usage = attrs.field(factory=Usage)
    tool_errors: int = 0
    malformed_tool_calls: int = 0
    error: str | None = None


def _episode(config: RunnableConfig) -> Episode:
    episode: Episode = config["configurable"]["episode"]
    return episode


async def _agent(state: EpisodeState, config: RunnableConfig) -> dict[str, Any]:
    ep = _episode(config)
    if state["turns"] >= ep.max_turns:
        return {"termination": "max_turns"}
    request = ChatRequest(
        messages=tuple(state["messages"]), tools=ep.task.tools, params=ep.params, task=ep.task, seed=ep.seed
    )
    try:
        response = await ep.policy.chat(request)
    except Exception as exc:  # noqa: BLE001 - an infrastructure failure ends the episode, recorded as such
        ep.error = f"{type(exc).__name__}: {exc}"
        return {"termination": "infra_error"}
    u = response.usage
    ep.usage = Usage(ep.usage.prompt_tokens + u.prompt_tokens, ep.usage.completion_tokens + u.completion_tokens,
                     ep.usage.calls + max(1, u.calls))
    ep.malformed_tool_calls += sum(1 for c in response.message.tool_calls if c.error)
    return {"messages": [response.message], "turns": state["turns"] + 1}


async def _tools(state: EpisodeState, config: RunnableConfig) -> dict[str, Any]:
    ep = _episode(config)
    out: list[Message] = []
    for call in state["messages"][-1].tool_calls:
        result = await ep.tools.call(call)
        if not result.ok:
            ep.tool_errors += 1
        content = result.content if isinstance(result.content, str) else json.dumps(
            result.content, ensure_ascii=False, sort_keys=True, default=str)
        out.append(Message("tool", content, tool_call_id=call.id, name=call.name))
    return {"messages": out}


async def _user(state: EpisodeState, config: RunnableConfig) -> dict[str, Any]:
    ep = _episode(config)
    assert ep.user is not None
    turn = await ep.user.respond(tuple(state["messages"]))
    update: dict[str, Any] = {"messages": [turn.message]}
    if turn.stop:
        update["termination"] = "user_stop"
    return update


async def _after_agent(state: EpisodeState, config: RunnableConfig) -> str:
    if state.get("termination"):
        return END
    last = state["messages"][-1]
    if last.tool_calls:
        return "tools"
    return "user" if _episode(config).user is not None else "final"


async def _final(state: EpisodeState) -> dict[str, Any]:
    return {"termination": "final_answer"}


async def _after_user(state: EpisodeState) -> str:
    return END if state.get("termination") else "agent"


def build_graph() -> Any:
    """Compile the agent/tools/user graph (once per process is enough)."""
    graph = StateGraph(EpisodeState)
    graph.add_node("agent", _agent)
    graph.add_node("tools", _tools)
    graph.add_node("user", _user)
    graph.add_node("final", _final)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", _after_agent, {"tools": "tools", "user": "user", "final": "final", END: END})
    graph.add_edge("tools", "agent")
    graph.add_conditional_edges("user", _after_user, {"agent": "agent", END: END})
    graph.add_edge("final", END)
    return graph.compile()


_GRAPH: Any = None


def _graph() -> Any:
    global _GRAPH
    if _GRAPH is None:
        _GRAPH = build_graph()
    return _GRAPH


def episode_seed(task_id: str, sample: int, seed: int) -> int:
    """The per-rollout seed: differs across tasks and samples, fixed for a given run seed."""
    return int(stable_id("seed", task_id, sample, seed).split("-")[1][:8], 16)


def initial_messages(task: Task) -> list[Message]:
    """The conversation's opening: the domain policy as system prompt and the user's instruction."""
    return [Message("system", task.system_prompt), Message("user", task.instruction)]


async def run_episode(
    task: Task,
    *,
    policy: LLMBackend,
    tools: ToolSession,
    user: UserSession | None,
    max_turns: int,
    sample: int = 0,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> Trajectory:
    """Run one episode of ``policy`` on ``task`` and return its trajectory.

    :param max_turns: the most agent messages before the episode ends with ``max_turns``.
    :param sample: the sample index (several trajectories per task get distinct ids and seeds).
    """
    ep = Episode(task, policy, tools, user, max_turns, episode_seed(task.id, sample, seed), params or {})
    start = time.perf_counter()
    state: EpisodeState = {"messages": initial_messages(task), "turns": 0, "termination": None}
    final = await _graph().ainvoke(
        state, {"configurable": {"episode": ep}, "recursion_limit": 4 * max_turns + 10}
    )
    elapsed = time.perf_counter() - start
    end_state = tools.final_state()
    return Trajectory(
        id=trajectory_id(task.id, policy.name, sample, seed),
        task_id=task.id,
        policy=policy.name,
        sample=sample,
        seed=ep.seed,
        messages=final["messages"],
        termination=final.get("termination") or "final_answer",
        turns=final["turns"],
        final_state_digest=end_state.digest if end_state else None,
        final_state_changes=end_state.changes if end_state else {},
        tool_errors=ep.tool_errors,
        malformed_tool_calls=ep.malformed_tool_calls,
        usage=ep.usage,
        error=ep.error,
        timings={"episode_s": round(elapsed, 6)},
    )
