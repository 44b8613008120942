"""The teacher-LLM mock world yields trainable data: bindings, the task-seeded world, rubrics from
demonstrations, the funnel, the scripted teacher over real HTTP, the leak guard, consistency across processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.bindings import MISSING, BindingError, binding_problems, parse_binding, resolve
from synthagent.core.models import Message, ToolCall, Trajectory, WorkflowStep, from_json_dict, to_json_dict
from synthagent.core.protocols import GenerationContext, RunContext
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.backends.scripted_teacher import CORRUPTIONS, ScriptedTeacher, teacher_server
from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator

LLM_PATH = ["--set", "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
            "--set", "llm.backend=openai", "--set", "llm.model=teacher"]


def run_llm_path(synth: Any, tmp_path: Path, name: str, tasks: int, noise: float = 0.0, *extra: str) -> dict:
    with teacher_server(noise=noise) as server:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", name, "--tasks", str(tasks), *LLM_PATH,
                        "--set", f"llm.base_url={server.base_url}", *extra], env={"OPENAI_API_KEY": "sk-test"},
                       timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / name / "summary.json").read_text())


# -- bindings ---------------------------------------------------------------------------------------------
def test_binding_syntax_parses_resolves_and_rejects_dangling_references() -> None:
    b = parse_binding("step:1:$.orders[0].id")
    assert (b.kind, b.step, b.path, b.text) == ("step_path", 1, ("orders", 0, "id"), "step:1:$.orders[0].id")
    assert resolve(b, {1: {"orders": [{"id": "O-7"}]}}, {}) == "O-7"
    assert resolve(b, {1: {"orders": []}}, {}) is MISSING and resolve(b, {}, {}) is MISSING
    assert resolve("fact:email", {}, {"email": "a@b"}) == "a@b"
    for legacy in ("literal", "fact:x", "step:2", "step:0+fact:name"):
        assert parse_binding(legacy).text == legacy
    for bad in ("step:1:orders", "step:1:$..x", "fact:", "step:x:$.a", 3, ["step:0:$.a"]):
        with pytest.raises(BindingError):
            parse_binding(bad)
    assert binding_problems({"a": "step:0:$.id"}, 1, arguments={"a": 1}) == []
    assert "not an earlier step" in binding_problems({"a": "step:1:$.id"}, 1)[0]
    assert "not an argument" in binding_problems({"b": "literal"}, 0, arguments={"a": 1})[0]
    assert binding_problems(["x"], 0)[0].startswith("bindings must be an object")


def test_a_step_without_a_seeded_response_writes_the_same_record() -> None:
    step = WorkflowStep(0, "d", "t", {"a": 1}, {"a": "literal"})
    assert "response" not in to_json_dict(step)
    seeded = WorkflowStep(0, "d", "t", {"a": 1}, {}, response={"id": "X-1"})
    assert from_json_dict(WorkflowStep, to_json_dict(seeded)) == seeded


# -- total checks -----------------------------------------------------------------------------------------
ODD = [
    {"domain": "x", "tools": [{"name": {"a": 1}, "description": "d", "parameters": {"type": "object"}}]},
    {"full_instruction": "I want this done now.", "workflow": [{"tool": ["find_customer"]}, {"tool": 3}]},
    {"instruction": "Do it please.", "hidden_facts": [{"name": "x", "value": "v", "keywords": 7}]},
]


@pytest.mark.parametrize("kind,odd,stage", [("toolset", ODD[0], "toolset"), ("task", ODD[1], "task"),
                                             ("fuzzy", ODD[2], "fuzzy")])
def test_oddly_shaped_teacher_json_is_a_problem_to_reask_never_an_exception(tmp_path: Path, kind: str, odd: dict,
                                                                             stage: str) -> None:
    personas = tmp_path / "p.jsonl"
    personas.write_text(json.dumps({"id": "p", "description": "A shopper."}) + "\n")
    good = ScriptedTeacher()

    def reply(body: dict) -> Any:  # every answer of one kind is oddly shaped, the rest are good
        return json.dumps(odd) if f"prompt={kind}]" in body["messages"][0]["content"] else good(body)

    with ScriptedOpenAIServer(reply) as server:
        gen = PersonaFuzzyGenerator(personas=str(personas), concurrency=1, max_slots_factor=1)
        llm = OpenAIBackend(model="teacher", base_url=server.base_url, backoff_s=0.01)

        async def go() -> list:
            return [t async for t in gen.generate(GenerationContext(count=1, seed=0, llm=llm))]

        assert asyncio.run(go()) == []
    assert gen.stats[f"{kind}_invalid"] == 1 and gen.stats[f"funnel:{stage}"] == 1
    assert gen.stats[f"{kind}_repair_asked"] == 1  # the problems went back to the teacher once


# -- the scripted teacher through the whole pipeline --------------------------------------------------------
def test_fifty_tasks_against_the_scripted_teacher_export_at_least_80_percent(synth, tmp_path: Path) -> None:
    summary = run_llm_path(synth, tmp_path, "fifty", 50)
    funnel = summary["funnel"]
    sft = [json.loads(line) for line in (tmp_path / "fifty/exports/sft.jsonl").read_text().splitlines()]
    exported_tasks = {r["task_id"] for r in sft}
    assert summary["tasks"] == 50 and len(exported_tasks) >= 40, funnel
    assert funnel["kept"] == len(exported_tasks) and funnel["accounted"]
    assert funnel["kept"] + sum(funnel["dropped"].values()) == funnel["slots"]
    # the seeded world answered the workflow: hits come from the store, no tool call was an error
    assert summary["stats"]["tools"]["seeded"] >= 50 and summary["tool_errors"] == 0
    tasks = [json.loads(line) for line in (tmp_path / "fifty/tasks.jsonl").read_text().splitlines()]
    assert all(any(b.startswith("step:") for s in t["workflow"] for b in s["bindings"].values()) for t in tasks)


def test_noise_on_every_drop_is_named_in_the_funnel(synth, tmp_path: Path) -> None:
    summary = run_llm_path(synth, tmp_path, "noisy", 20, 0.35)
    funnel = summary["funnel"]
    assert funnel["accounted"] and funnel["kept"] + sum(funnel["dropped"].values()) == funnel["slots"]
    assert funnel["kept"] >= 5 and sum(funnel["dropped"].values()) >= 1, funnel
    from synthagent.core.summary import FUNNEL_STAGES

    assert set(funnel["dropped"]) <= set(FUNNEL_STAGES)
    repairs = {k for k in summary["dropped"] if k.endswith("_repaired")}
    assert repairs, summary["dropped"]  # most faults were repaired by a re-ask
    root = tmp_path / "noisy"
    rubrics = [json.loads(line) for line in (root / "rubrics.jsonl").read_text().splitlines()]
    assert all(r["dropped"].split(":")[0] in ("uncovered", "infra", "teacher_invalid") for r in rubrics if r["dropped"])
    shown = synth(["show", str(root)])
    assert shown.returncode == 0 and f"{funnel['slots']} slots -> {funnel['kept']} kept" in shown.stdout


def test_rewards_discriminate_on_the_llm_path(synth, tmp_path: Path) -> None:
    """Teacher demonstrations score at least 0.5 above each corruption (docs/rewards.md, LLM-path table)."""
    from synthagent.core.runtime import Runtime

    with teacher_server() as server:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "rw", "--tasks", "8", *LLM_PATH,
                        "--set", f"llm.base_url={server.base_url}"], env={"OPENAI_API_KEY": "sk-test"})
        assert result.returncode == 0, result.stderr[-2000:]
        root = tmp_path / "rw"
        runtime = Runtime.from_run_dir(root)

        async def go() -> dict[str, list[float]]:
            from synthagent.core.store import RunStore

            store = RunStore.open(root)
            tasks, rubrics = store.tasks.load(), {r.task_id: r for r in store.rubrics}
            store.close()
            runtime.setup(root)
            out: dict[str, list[float]] = {}
            try:
                for mode in ("", *CORRUPTIONS):
                    policy = OpenAIBackend(model=f"teacher+{mode}" if mode else "teacher", base_url=server.base_url)
                    for task in tasks:
                        if rubrics[task.id].dropped:
                            continue
                        traj = await runtime.rollout(task, 7, policy)
                        score = await runtime.score(task, rubrics[task.id], traj)
                        out.setdefault(mode or "teacher", []).append(score.total)
            finally:
                await runtime.aclose()
            return out

        scores = asyncio.run(go())
    means = {k: statistics.fmean(v) for k, v in scores.items()}
    assert len(scores["teacher"]) >= 6, scores
    for mode in CORRUPTIONS:
        assert means["teacher"] - means[mode] >= 0.5, means
    print("LLM-path reward means:", json.dumps({k: round(v, 3) for k, v in means.items()}))


def _calls_and_responses(traj: Trajectory) -> dict[str, Any]:
    results = {m.tool_call_id: m.content for m in traj.messages if m.role == "tool"}
    return {json.dumps([c.name, c.arguments], sort_keys=True): results.get(c.id)
            for m in traj.messages if m.role == "assistant" for c in m.tool_calls}


def _consistent(root: Path) -> int:
    trajs = [from_json_dict(Trajectory, json.loads(line)) for line in (root / "trajectories.jsonl").read_text().splitlines()]
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajs:
        by_task.setdefault(t.task_id, []).append(t)
    shared = 0
    for pair in by_task.values():
        assert len(pair) == 2
        a, b = (_calls_and_responses(t) for t in pair)
        for key in set(a) & set(b):
            assert a[key] == b[key], key
            shared += 1
    return shared


def test_two_rollouts_agree_across_worker_processes(synth, tmp_path: Path) -> None:
    summary = run_llm_path(synth, tmp_path, "proc", 4, 0.0, "--set", "executor=process",
                           "--set", "plugins.process.workers=2", "--set", "simulate.samples=2")
    assert summary["trajectories"] == 8 and summary["funnel"]["kept"] >= 3
    assert _consistent(tmp_path / "proc") >= 4 * 3  # every workflow call made by both rollouts, same response


def test_two_rollouts_agree_with_redis_url(synth, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here (apt-get install -y redis-server)")
    redis_url = request.getfixturevalue("redis_url")
    summary = run_llm_path(synth, tmp_path, "redis", 3, 0.0, "--set", "mapping=redis",
                           "--set", f'plugins.redis.url="{redis_url}"', "--set", "executor=process",
                           "--set", "plugins.process.workers=2", "--set", "simulate.samples=2")
    assert summary["funnel"]["kept"] >= 2 and _consistent(tmp_path / "redis") >= 3 * 3


# -- the mapping store carries near-duplicate matching ----------------------------------------------------------
def test_near_duplicate_matching_goes_through_the_store(tmp_path: Path) -> None:
    """Two simulators (as two processes would have) share only the SQLite store: the second finds the first's
    call and reuses its response when the teacher judges them equivalent."""
    from synthagent.plugins.mapping.sqlite import SQLiteMappingStore
    from synthagent.plugins.simulators.tools.llm import LLMToolSimulator

    teacher = ScriptedTeacher()
    with ScriptedOpenAIServer(teacher) as server:
        gen = PersonaFuzzyGenerator(concurrency=1)
        llm = OpenAIBackend(model="teacher", base_url=server.base_url)

        async def go() -> tuple[Any, Any]:
            task = [t async for t in gen.generate(GenerationContext(count=1, seed=0, llm=llm))][0]
            spec = task.workflow[0]
            arg = next(iter(spec.arguments))
            results = []
            for text in ("Someone@Example.org", "someone@example.org"):
                sim = LLMToolSimulator(equivalence="teacher")
                store = SQLiteMappingStore(path=str(tmp_path / "m.sqlite"))
                sim.setup(RunContext(llm=llm, mapping=store, run_dir=str(tmp_path), seed=0))
                session = await sim.start(task, 0)
                results.append((await session.call(ToolCall("c", spec.tool, {**spec.arguments, arg: text})), sim))
                await store.aclose() if hasattr(store, "aclose") else None
            return results

        (first, _), (second, sim2) = asyncio.run(go())
    assert first.content == second.content and sim2.stats["equivalent_hits"] == 1


def test_the_tool_simulator_can_use_a_backend_of_its_own(tmp_path: Path) -> None:
    """``plugins.llm.tools.backend``: a call outside the seed goes to the simulator's own server (e.g. a small
    model), while the run's teacher writes the task; both over loopback HTTP."""
    from synthagent.core.config import load_config
    from synthagent.core.errors import ConfigError
    from synthagent.core.registry import load_plugins
    from synthagent.core.runtime import Runtime

    teacher = ScriptedTeacher()
    with ScriptedOpenAIServer(teacher) as server, \
            ScriptedOpenAIServer(lambda body: json.dumps({"answered_by": "own backend"})) as own:
        config = load_config(None, ["tools=llm", "llm.backend=openai", "llm.model=teacher",
                                    f"llm.base_url={server.base_url}", "plugins.llm.tools.backend=openai",
                                    f'plugins.llm.tools.backend_options={{base_url = "{own.base_url}", '
                                    'model = "small", structured_outputs = "none"}'])
        runtime = Runtime(config, load_plugins())
        sim = runtime.components.tools
        assert sim.backend == "openai" and sim.backend_options["model"] == "small"
        llm = OpenAIBackend(model="teacher", base_url=server.base_url)

        async def go() -> Any:
            task = [t async for t in PersonaFuzzyGenerator(concurrency=1).generate(
                GenerationContext(count=1, seed=0, llm=llm))][0]
            runtime.setup(tmp_path)  # the Runtime builds the simulator's own backend (RunContext.backend)
            session = await sim.start(task, 0)
            spec = task.workflow[0]
            seeded = await session.call(ToolCall("a", spec.tool, dict(spec.arguments)))
            outside = await session.call(ToolCall("b", spec.tool, {k: "not-in-the-seed" for k in spec.arguments}))
            stats = runtime.stats()
            own_llm = sim.llm
            await runtime.aclose()
            await llm.aclose()
            return seeded, outside, stats, own_llm

        seeded, outside, stats, own_llm = asyncio.run(go())
        teacher_kinds = " ".join(str(b["messages"][0]["content"])[:200] for b in server.requests)
    assert outside.content == {"answered_by": "own backend"} and seeded.content != outside.content
    assert len(own.requests) == 1 and own.requests[0]["model"] == "small"
    assert "response_format" not in own.requests[0]  # the own backend's options apply (structured_outputs)
    assert "prompt=tool_sim" not in teacher_kinds  # the teacher only wrote the task
    # issue 25: the Runtime owns it: its requests are counted apart from the teacher's, and it is closed
    assert own_llm is not runtime.components.llm and stats["tools_backend"]["requests"] == 1
    assert own_llm._clients == [] and own_llm._client is None  # aclose() ran on it
    with pytest.raises(ConfigError, match="is built by the Runtime"):  # a hand-made context cannot build one
        sim.setup(RunContext(llm=llm, mapping=None, run_dir=str(tmp_path), seed=0))


# -- the LLM user's leak guard ------------------------------------------------------------------------------
def test_the_leak_guard_counts_and_repairs_an_unasked_hidden_value() -> None:
    from synthagent.plugins.simulators.users.llm import LLMUserSimulator

    teacher = ScriptedTeacher()
    with ScriptedOpenAIServer(teacher) as server:
        llm = OpenAIBackend(model="teacher", base_url=server.base_url)
        gen = PersonaFuzzyGenerator(concurrency=1)

        async def go() -> tuple[Any, Any, Any]:
            task = [t async for t in gen.generate(GenerationContext(count=1, seed=0, llm=llm))][0]
            fact = task.user_context[0]
            replies = iter([f"Sure, and {fact.description} is {fact.value}.", "What else do you need?"])
            with ScriptedOpenAIServer(lambda body: next(replies)) as leaky:
                sim = LLMUserSimulator()
                sim.setup(RunContext(llm=OpenAIBackend(model="u", base_url=leaky.base_url), mapping=None,
                                     run_dir="", seed=0))
                session = await sim.start(task, 0)
                turn = await session.respond([Message("system", "s"), Message("user", task.instruction),
                                              Message("assistant", "I will look into it now.")])
            return turn, sim, fact

        turn, sim, fact = asyncio.run(go())
    assert sim.stats["leaked_hidden_value"] == 1 and str(fact.value) not in turn.message.content


# -- infrastructure failures are not rubric failures ----------------------------------------------------------
def test_demonstrations_failed_for_infra_reasons_drop_as_infra() -> None:
    from synthagent.plugins.rubrics.demonstrated import DemoRubricBuilder

    teacher = ScriptedTeacher()
    with ScriptedOpenAIServer(teacher) as server:
        gen = PersonaFuzzyGenerator(concurrency=1)
        llm = OpenAIBackend(model="teacher", base_url=server.base_url)

        async def go() -> Any:
            return [t async for t in gen.generate(GenerationContext(count=1, seed=0, llm=llm))][0]

        task = asyncio.run(go())
    demos = [Trajectory(f"d{i}", task.id, "teacher", i, 0, (), "infra_error", 0, error="ConnectError: refused")
             for i in range(3)]
    rubric = DemoRubricBuilder().build(task, demos)
    assert rubric.dropped.startswith("infra: 3/3 demonstrations failed for infrastructure reasons")


def test_the_scripted_judge_gives_strict_verdicts() -> None:
    from synthagent.plugins.rubrics.judge import parse_verdict

    teacher = ScriptedTeacher()
    good = teacher({"messages": [{"role": "user", "content": "[synthagent:prompt=judge]\n... All done: your "
                                                             "confirmation is DLV-12."}]})
    bad = teacher({"messages": [{"role": "user", "content": "[synthagent:prompt=judge]\n... I could not."}]})
    assert parse_verdict(good)[0] is True and parse_verdict(bad)[0] is False


def test_a_user_simulators_own_backend_is_counted_in_the_summary_and_closed(synth, tmp_path: Path) -> None:
    """Issue 25: ``plugins.llm.user.backend`` is built by the Runtime (RunContext.backend), not by the simulator
    with its own plugin loading; its requests reach summary.json and counts.jsonl under ``user_backend``."""
    import re

    def user(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        facts = re.findall(r"^- [^:\n]+: (.+)$", system, flags=re.M)
        last = body["messages"][-1]["content"] if len(body["messages"]) > 1 else ""
        if "?" in last:
            return "Sure: " + "; ".join(facts) + "."
        return "Thanks, that is all. ###STOP###"

    with ScriptedOpenAIServer(user) as own:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "u", "--tasks", "3", "--set", "user=llm",
                        "--set", "plugins.llm.user.backend=openai",
                        "--set", f'plugins.llm.user.backend_options={{base_url = "{own.base_url}", model = "user", '
                                 'structured_outputs = "none"}'])
        served = len(own.requests)
    assert result.returncode in (0, 3), result.stderr  # 3: the rules may keep no task; the counts are the point
    summary = json.loads((tmp_path / "u" / "summary.json").read_text())
    assert served > 0 and summary["stats"]["user_backend"]["requests"] == served
    assert "user_backend" not in summary["stats"].get("llm", {})  # counted apart from the run's own model
    counts = (tmp_path / "u" / "counts.jsonl").read_text()
    assert '"user_backend"' in counts
