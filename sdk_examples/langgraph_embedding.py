"""Embed synthagent's simulators in an agent you already have.

A prebuilt LangChain agent (``langchain.agents.create_agent``) gets a task's tools as LangChain tools, answered
by synthagent's real SQLite environment, and talks to synthagent's simulated user, which holds the facts the
agent must ask for. Run it offline (the oracle teacher drives the agent):

    python sdk_examples/langgraph_embedding.py

or with your own model behind an OpenAI-compatible server:

    python sdk_examples/langgraph_embedding.py --base-url http://127.0.0.1:8000/v1 --model my-model

(needs ``pip install langchain``).
"""

from __future__ import annotations

import argparse
import asyncio

from langchain.agents import create_agent
from langgraph.graph import START, MessagesState, StateGraph

from synthagent.core.embed import SynthChatModel, from_langchain, simulated_tools, until_user_stops, user_node
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.simulators.users.rule import RuleUser
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator
from synthagent.plugins.rubrics.scorer import RubricScorer
from synthagent.plugins.rubrics.workflow import WorkflowRubricBuilder


async def main(base_url: str = "", model: str = "", domain: str = "banking", seed: int = 0) -> dict:
    task = OfflineDomainsGenerator(domains=[domain]).sample(1, seed=seed)[0]
    tool_session = await SQLiteToolSimulator().start(task, seed)
    user_session = await RuleUser().start(task, seed)

    if base_url:
        from synthagent.plugins.backends.openai import OpenAIBackend
        backend = OpenAIBackend(model=model, base_url=base_url)
    else:
        backend = OracleBackend()

    # The agent you already have: a prebuilt ReAct-style agent with your model and, now, simulated tools.
    agent = create_agent(SynthChatModel(backend=backend, task=task), simulated_tools(task, tool_session),
                         system_prompt=task.system_prompt)

    # Your agent talks to synthagent's simulated user until the user is satisfied.
    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("user", user_node(user_session))
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "user")
    graph.add_conditional_edges("user", until_user_stops)
    result = await graph.compile().ainvoke({"messages": [("user", task.instruction)]}, {"recursion_limit": 80})

    # Judge it with synthagent's rubric: the real database state is checked against the gold state.
    from synthagent.core.models import Trajectory

    final = tool_session.final_state()
    messages = from_langchain(result["messages"])
    trajectory = Trajectory(id="embedded", task_id=task.id, policy=backend.name, sample=0, seed=seed,
                            messages=messages, termination="user_stop", turns=0,
                            final_state_digest=final.digest if final else None)
    score = await RubricScorer().score(task, WorkflowRubricBuilder().build(task, []), trajectory)
    for m in messages:
        calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
        print(f"{m.role:>9}: {m.content or ''}{calls}")
    print(f"score {score.total} (success: {score.success})")
    return {"task": task.id, "score": score.total, "success": score.success, "messages": len(messages)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--domain", default="banking")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.base_url, args.model, args.domain, args.seed))
