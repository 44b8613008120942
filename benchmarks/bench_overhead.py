"""P1: the agent loop's overhead per environment step, against raw LangGraph running the same graph shape.

    python benchmarks/bench_overhead.py [--tasks 200] [--concurrency 32] [--repeats 5]

Episodes come from the embedded default domains: the oracle's conversations are recorded once, then replayed
by a zero-latency scripted policy, so every step of the measured run is environment and orchestration only
(real SQLite tool execution on a private database copy per rollout, the rule-based user, LangGraph). The raw
baseline is a LangGraph StateGraph of the same shape (agent, tools, user, final; the same conditional edges and
state reducer) whose nodes do nothing but follow the same per-episode script, so both run exactly the same
number of steps. Printed side by side in one run, each the median of ``--repeats``:

* raw LangGraph, sync nodes with ``invoke`` one episode after another;
* raw LangGraph, async nodes with ``asyncio.gather`` (``--concurrency`` episodes at once);
* synthagent ``run_episode`` with the same gather (the engine's mode), and with sync routers (what LangGraph
  does to a sync router under ``ainvoke``: a thread-pool hop per step; the agent loop had them before).

Targets: synthagent keeps >= 0.6 of raw LangGraph's async rate; its per-step cost stays under 1% of a 50 ms
model call (500 us).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import time
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from synthagent.core import agent_loop
from synthagent.core.agent_loop import run_episode
from synthagent.core.models import Message, Task, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse, GenerationContext
from synthagent.core.registry import load_plugins


class Replay:
    """A zero-latency policy: replays one recorded conversation's assistant messages."""

    name = "replay"

    def __init__(self, script: Sequence[Message]) -> None:
        self.script = script
        self.i = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        message = self.script[min(self.i, len(self.script) - 1)]
        self.i += 1
        return ChatResponse(message, Usage(calls=1))


def steps_of(messages: Sequence[Message], termination: str) -> list[str]:
    """The node sequence an episode ran (agent, tools, user, final)."""
    out: list[str] = []
    for m in messages[2:]:
        if m.role == "assistant":
            out.append("agent")
            if m.tool_calls:
                out.append("tools")
        elif m.role == "user":
            out.append("user")
    if termination == "final_answer":
        out.append("final")
    return out


async def record(tasks: list[Task], plugins: Any) -> list[tuple[Task, list[Message], list[str]]]:
    oracle = plugins.registry("llm").get("oracle").create({})
    tools = plugins.registry("tools").get("sqlite").create({})
    user = plugins.registry("user").get("rule").create({})
    out = []
    for task in tasks:
        session = await tools.start(task, 0)
        traj = await run_episode(task, policy=oracle, tools=session, user=await user.start(task, 0), max_turns=30)
        await session.aclose()
        script = [m for m in traj.messages if m.role == "assistant"]
        out.append((task, script, steps_of(traj.messages, traj.termination)))
    return out


# -- raw LangGraph: the same shape, trivial nodes ------------------------------------------------------------

class RawState(TypedDict):
    messages: Annotated[list[Any], operator.add]
    i: int


def raw_graph(async_nodes: bool) -> Any:
    def nxt(state: RawState, config: RunnableConfig) -> str:
        script = config["configurable"]["script"]
        return script[state["i"]] if state["i"] < len(script) else END

    def node(state: RawState) -> dict[str, Any]:
        return {"messages": [state["i"]], "i": state["i"] + 1}

    async def anode(state: RawState) -> dict[str, Any]:
        return {"messages": [state["i"]], "i": state["i"] + 1}

    async def anxt(state: RawState, config: RunnableConfig) -> str:
        return nxt(state, config)

    fn, route = (anode, anxt) if async_nodes else (node, nxt)
    g = StateGraph(RawState)
    for name in ("agent", "tools", "user", "final"):
        g.add_node(name, fn)
    targets = {"agent": "agent", "tools": "tools", "user": "user", "final": "final", END: END}
    g.add_edge(START, "agent")
    for name in ("agent", "tools", "user"):
        g.add_conditional_edges(name, route, targets)
    g.add_edge("final", END)
    return g.compile()


def raw_config(steps: list[str]) -> dict[str, Any]:
    # the first step (agent) is the START edge; the script says where each later step goes
    return {"configurable": {"script": steps[1:]}, "recursion_limit": len(steps) + 10}


def bench_raw_sync(episodes: list[list[str]]) -> float:
    graph = raw_graph(False)
    total = sum(len(s) for s in episodes)
    start = time.perf_counter()
    for steps in episodes:
        graph.invoke({"messages": [], "i": 0}, raw_config(steps))
    return total / (time.perf_counter() - start)


async def gather_bounded(coros: list[Any], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(c: Any) -> None:
        async with sem:
            await c

    await asyncio.gather(*[one(c) for c in coros])


async def bench_raw_async(episodes: list[list[str]], concurrency: int) -> float:
    graph = raw_graph(True)
    total = sum(len(s) for s in episodes)
    start = time.perf_counter()
    await gather_bounded([graph.ainvoke({"messages": [], "i": 0}, raw_config(s)) for s in episodes], concurrency)
    return total / (time.perf_counter() - start)


async def bench_synth(recorded: list[tuple[Task, list[Message], list[str]]], plugins: Any, concurrency: int) -> float:
    tools = plugins.registry("tools").get("sqlite").create({})
    user = plugins.registry("user").get("rule").create({})
    total = 0
    checked = 0

    async def one(task: Task, script: list[Message], steps: list[str]) -> None:
        nonlocal total, checked
        session = await tools.start(task, 0)
        try:
            traj = await run_episode(task, policy=Replay(script), tools=session, user=await user.start(task, 0),
                                     max_turns=30)
        finally:
            await session.aclose()
        ran = steps_of(traj.messages, traj.termination)
        checked += ran == steps
        total += len(ran)

    start = time.perf_counter()
    await gather_bounded([one(*r) for r in recorded], concurrency)
    elapsed = time.perf_counter() - start
    assert checked == len(recorded), "replayed episodes diverged from the recording"
    return total / elapsed


def with_sync_routers() -> Any:
    """The agent loop's graph with sync routers and final node (as before this change), for comparison."""
    g = StateGraph(agent_loop.EpisodeState)

    def after_agent(state: Any, config: RunnableConfig) -> str:
        if state.get("termination"):
            return END
        last = state["messages"][-1]
        if last.tool_calls:
            return "tools"
        return "user" if config["configurable"]["episode"].user is not None else "final"

    def final(state: Any) -> dict[str, Any]:
        return {"termination": "final_answer"}

    def after_user(state: Any) -> str:
        return END if state.get("termination") else "agent"

    g.add_node("agent", agent_loop._agent)
    g.add_node("tools", agent_loop._tools)
    g.add_node("user", agent_loop._user)
    g.add_node("final", final)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", after_agent, {"tools": "tools", "user": "user", "final": "final", END: END})
    g.add_edge("tools", "agent")
    g.add_conditional_edges("user", after_user, {"agent": "agent", END: END})
    g.add_edge("final", END)
    return g.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-call-ms", type=float, default=50.0)
    args = parser.parse_args()
    plugins = load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    generator = plugins.registry("generator").get("offline-domains").create({})

    async def tasks() -> list[Task]:
        return [t async for t in generator.generate(GenerationContext(count=args.tasks, seed=0))][: args.tasks]

    recorded = asyncio.run(record(asyncio.run(tasks()), plugins))
    episodes = [steps for _, _, steps in recorded]
    n_steps = sum(len(s) for s in episodes)
    results: dict[str, list[float]] = {"raw_sync": [], "raw_async": [], "synth": [], "synth_sync_routers": []}
    fast_graph = agent_loop._graph()
    slow_graph = with_sync_routers()
    for _ in range(args.repeats):  # interleaved, so background load hits every variant alike
        results["raw_sync"].append(bench_raw_sync(episodes))
        results["raw_async"].append(asyncio.run(bench_raw_async(episodes, args.concurrency)))
        agent_loop._GRAPH = fast_graph
        results["synth"].append(asyncio.run(bench_synth(recorded, plugins, args.concurrency)))
        agent_loop._GRAPH = slow_graph
        results["synth_sync_routers"].append(asyncio.run(bench_synth(recorded, plugins, args.concurrency)))
    agent_loop._GRAPH = fast_graph
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{len(episodes)} episodes, {n_steps} steps ({n_steps / len(episodes):.1f} per episode), concurrency "
          f"{args.concurrency}, median of {args.repeats} (interleaved)")
    print(f"{'variant':<44} {'steps/s':>9} {'us/step':>8} {'vs raw async':>13}")
    labels = {"raw_sync": "raw LangGraph, sync nodes, invoke",
              "raw_async": "raw LangGraph, async nodes, gather",
              "synth": "synthagent run_episode (SQLite + rule user)",
              "synth_sync_routers": "synthagent, sync routers (as before)"}
    for key, label in labels.items():
        print(f"{label:<44} {med[key]:>9.0f} {1e6 / med[key]:>8.0f} {med[key] / med['raw_async']:>13.2f}")
    per_step = 1e6 / med["synth"]
    overhead = per_step - 1e6 / med["raw_async"]
    print(f"synthagent / raw async LangGraph: {med['synth'] / med['raw_async']:.2f} (target >= 0.6)")
    print(f"synthagent per-step cost: {per_step:.0f} us = {per_step / (10 * args.model_call_ms):.2f}% of a "
          f"{args.model_call_ms:.0f} ms model call (target < 1%); over raw LangGraph: {overhead:.0f} us")
    print(f"async routers vs sync routers: {med['synth'] / med['synth_sync_routers']:.2f}x")
    print("spread (min-max steps/s): " + ", ".join(f"{k} {min(v):.0f}-{max(v):.0f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
