"""The LLM user's echo guard: a user model that parrots the agent is re-asked and counted, over real HTTP."""

from __future__ import annotations

import asyncio

from synthagent.core.models import Message
from synthagent.core.protocols import RunContext
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.simulators.users.llm import LLMUserSimulator, echoes

ASK = "Could you tell me the order number you want to cancel?"


def test_echoes_catches_verbatim_and_near_verbatim_but_not_answers() -> None:
    convo = [Message("user", "hi"), Message("assistant", ASK)]
    assert echoes(ASK, convo)
    assert echoes("could you tell me the order number you want to cancel", convo)  # case and punctuation
    assert echoes("Could you tell me the order number that you want to cancel?", convo)  # one word added
    assert not echoes("The order number is ORD-7.", convo)
    assert not echoes("Yes.", [Message("assistant", "Yes.")])  # too short to call an echo
    assert not echoes(ASK, [Message("user", ASK)])  # no agent message to echo


def test_an_echo_is_re_asked_and_counted() -> None:
    task = OfflineDomainsGenerator().sample(1, seed=0)[0]
    replies = iter([ASK, ASK + " ", "It is ORD-7."])
    with ScriptedOpenAIServer(lambda body: next(replies)) as server:
        sim = LLMUserSimulator(retries=2)
        sim.setup(RunContext(llm=OpenAIBackend(model="u", base_url=server.base_url), mapping=None, run_dir="", seed=0))

        async def go():
            session = await sim.start(task, 0)
            return await session.respond([Message("system", "s"), Message("user", task.instruction), Message("assistant", ASK)])

        turn = asyncio.run(go())
        last_view = server.requests[-1]["messages"]
    assert turn.message.content == "It is ORD-7." and sim.stats["echo"] == 2
    assert "repeated the agent" in last_view[-1]["content"]  # the re-ask tells the user model what went wrong


def test_a_user_that_only_echoes_is_replaced_by_a_neutral_turn() -> None:
    task = OfflineDomainsGenerator().sample(1, seed=0)[0]
    with ScriptedOpenAIServer(lambda body: ASK) as server:
        sim = LLMUserSimulator(retries=1)
        sim.setup(RunContext(llm=OpenAIBackend(model="u", base_url=server.base_url), mapping=None, run_dir="", seed=0))
        turn = asyncio.run(_respond(sim, task))
    assert turn.message.content != ASK and sim.stats["echo"] == 2 and len(server.requests) == 2


async def _respond(sim, task):
    session = await sim.start(task, 0)
    return await session.respond([Message("user", task.instruction), Message("assistant", ASK)])
