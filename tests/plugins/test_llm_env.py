"""The LLM tool simulator (mapping-store consistency) and the LLM user simulator (guards), over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from synthagent.core.mapping import call_key
from synthagent.core.models import Message, ToolCall
from synthagent.core.protocols import RunContext
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.simulators.tools.llm import LLMToolSimulator
from synthagent.plugins.simulators.users.llm import STOP, LLMUserSimulator
from synthagent.plugins.mapping.memory import MemoryMappingStore
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.backends.openai import OpenAIBackend


@pytest.fixture(scope="module")
def task():
    return OfflineDomainsGenerator(domains=["banking"]).sample(1, seed=2)[0]


def tool_sim(server, **options):
    sim = LLMToolSimulator(**options)
    backend = OpenAIBackend(model="teacher", base_url=server.base_url, backoff_s=0.01)
    sim.setup(RunContext(llm=backend, mapping=MemoryMappingStore(), run_dir="", seed=0))
    return sim


def counting_reply():
    counter = itertools.count(1)
    return lambda body: json.dumps({"value": next(counter)})


def test_same_call_in_any_key_order_gets_the_identical_response(task) -> None:
    spec = next(t for t in task.tools if len(t.parameters.get("properties", {})) >= 2)
    props = list(spec.parameters["properties"])
    args = {p: ("x" if spec.parameters["properties"][p]["type"] == "string" else 1) for p in props}
    args = {k: (spec.parameters["properties"][k].get("enum") or [v])[0] for k, v in args.items()}
    with ScriptedOpenAIServer(counting_reply()) as server:
        sim = tool_sim(server)

        async def go():
            s1, s2 = await sim.start(task, 0), await sim.start(task, 1)
            a = await s1.call(ToolCall("c1", spec.name, args))
            b = await s2.call(ToolCall("c2", spec.name, dict(reversed(list(args.items())))))
            spaced = {k: (f"  {v} " if isinstance(v, str) and not spec.parameters["properties"][k].get("enum") else v)
                      for k, v in args.items()}
            c = await s1.call(ToolCall("c3", spec.name, spaced))
            return a, b, c

        a, b, c = asyncio.run(go())
    assert a.content == b.content == c.content and a.ok
    assert len(server.requests) == 1  # the teacher was asked once; the rest came from the mapping store
    assert sim.stats["hits"] == 2 and sim.stats["misses"] == 1


def test_concurrent_rollouts_agree_through_first_writer_wins(task) -> None:
    spec = task.tools[0]
    args = {p: "same" for p in spec.parameters.get("required", [])}
    with ScriptedOpenAIServer(counting_reply(), latency_s=0.05) as server:
        sim = tool_sim(server)

        async def go():
            sessions = [await sim.start(task, i) for i in range(6)]
            return await asyncio.gather(*[s.call(ToolCall(f"c{i}", spec.name, args)) for i, s in enumerate(sessions)])

        results = asyncio.run(go())
    assert len({json.dumps(r.content) for r in results}) == 1
    assert sim.stats["stored_by_other"] == len(server.requests) - 1


def test_malformed_teacher_output_is_reasked_and_never_stored(task) -> None:
    spec = task.tools[0]
    args = {p: "x" for p in spec.parameters.get("required", [])}
    replies = iter(["Sure! here you go", '{"ok": true}'])
    with ScriptedOpenAIServer(lambda body: next(replies)) as server:
        sim = tool_sim(server)
        session = asyncio.run(sim.start(task, 0))
        result = asyncio.run(session.call(ToolCall("c", spec.name, args)))
    assert result.content == {"ok": True} and sim.stats["tool_response_repair_asked"] == 1
    with ScriptedOpenAIServer(lambda body: "never json") as server:
        sim = tool_sim(server)
        session = asyncio.run(sim.start(task, 0))
        result = asyncio.run(session.call(ToolCall("c", spec.name, args)))
        assert result.content["error"] == "tool_unavailable" and not result.ok
        assert sim.stats["failures"] == 1
        assert asyncio.run(sim.mapping.get(task.id, call_key(spec.name, args))) is None


def test_bad_calls_never_reach_the_teacher(task) -> None:
    with ScriptedOpenAIServer(counting_reply()) as server:
        sim = tool_sim(server)
        session = asyncio.run(sim.start(task, 0))
        errors = [asyncio.run(session.call(c)).content["error"] for c in (
            ToolCall("a", "nope", {}), ToolCall("b", task.tools[0].name, {"bogus": 1}),
            ToolCall("c", task.tools[0].name, {}, error="not JSON"))]
    assert errors == ["unknown_tool", "invalid_arguments", "malformed_call"] and server.requests == []


def test_equivalence_judgement_reuses_a_near_duplicate(task) -> None:
    spec = next(t for t in task.tools if t.parameters.get("required"))
    req = spec.parameters["required"][0]

    def reply(body):
        text = body["messages"][-1]["content"]
        return '{"same": true}' if "Would a real system return the same response" in text else '{"v": 1}'

    with ScriptedOpenAIServer(reply) as server:
        sim = tool_sim(server, equivalence="teacher")
        session = asyncio.run(sim.start(task, 0))
        first = asyncio.run(session.call(ToolCall("a", spec.name, {req: "ACME corp"})))
        second = asyncio.run(session.call(ToolCall("b", spec.name, {req: "acme corporation"})))
    assert first.content == second.content and sim.stats["equivalent_hits"] == 1


def user_sim(server, **options):
    sim = LLMUserSimulator(**options)
    sim.setup(RunContext(llm=OpenAIBackend(model="u", base_url=server.base_url), mapping=None, run_dir="", seed=0))
    return sim


def test_user_guards_fire_and_are_counted(task) -> None:
    replies = iter(["", "   ", "Fine.", f"Bye {STOP}", '<tool_call>{"name": "x"}</tool_call>', "My email is a@b.c",
                    f"Thanks! {STOP}"])
    with ScriptedOpenAIServer(lambda body: next(replies)) as server:
        sim = user_sim(server, retries=2)

        async def go():
            session = await sim.start(task, 0)
            convo = [Message("system", "s"), Message("user", task.instruction), Message("assistant", "Can I get your ID?")]
            t1 = await session.respond(convo)  # two empty replies re-asked, then "Fine."
            t2 = await session.respond(convo)  # stop before the agent acted: refused
            t3 = await session.respond(convo)  # tool-call markup stripped, re-asked
            done = convo + [Message("assistant", None, (ToolCall("c", "x", {}),)), Message("tool", "{}", tool_call_id="c"),
                            Message("assistant", "All set.")]
            t4 = await session.respond(done)
            return t1, t2, t3, t4, server.requests[0]["messages"]

        t1, t2, t3, t4, first_view = asyncio.run(go())
    assert (t1.message.content, t1.stop) == ("Fine.", False)
    assert t2.stop is False and STOP not in t2.message.content
    assert (t3.message.content, t3.stop) == ("My email is a@b.c", False)
    assert t4.stop is True and STOP not in t4.message.content
    assert sim.stats["empty_turn"] == 2 and sim.stats["premature_stop"] == 1 and sim.stats["tool_call_from_user"] == 1
    # the user model sees the conversation from its side and the hidden facts in its system prompt
    assert first_view[0]["role"] == "system" and all(str(f.value) in first_view[0]["content"] for f in task.user_context)
    assert [m["role"] for m in first_view[1:]] == ["assistant", "user"]


WORKER = r"""
import asyncio, json, sys
from synthagent.core.models import ToolCall
from synthagent.core.protocols import RunContext
from synthagent.plugins.simulators.tools.llm import LLMToolSimulator
from synthagent.plugins.mapping.redis import RedisMappingStore
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.backends.openai import OpenAIBackend

base_url, redis_url, prefix = sys.argv[1:4]
task = OfflineDomainsGenerator(domains=["banking"]).sample(1, seed=2)[0]
spec = next(t for t in task.tools if t.parameters.get("required"))
param = spec.parameters["required"][0]

async def main():
    sim = LLMToolSimulator()
    store = RedisMappingStore(url=redis_url, prefix=prefix)
    sim.setup(RunContext(llm=OpenAIBackend(model="t", base_url=base_url), mapping=store, run_dir="", seed=0))
    session = await sim.start(task, 0)
    out = [(await session.call(ToolCall(f"c{i}", spec.name, {param: f"value-{i}"}))).content for i in range(15)]
    await store.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_two_processes_share_responses_through_redis(redis_url: str, tmp_path) -> None:
    import subprocess
    import sys
    import uuid

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with ScriptedOpenAIServer(counting_reply(), latency_s=0.02) as server:
        prefix = f"test:{uuid.uuid4().hex}:"
        procs = [subprocess.Popen([sys.executable, str(script), server.base_url, redis_url, prefix],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    first, second = (json.loads(o[0]) for o in outs)
    assert first == second and len({json.dumps(r) for r in first}) == 15  # same call, same response; distinct calls differ
    # in lockstep both processes may miss and ask the teacher; first-writer-wins still makes them agree
    assert 15 <= len(server.requests) <= 30
