"""The workflow-rubric builder, executable checkers, reward composition and what the agent never sees."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from synthagent.core.config import load_config
from synthagent.core.errors import ConfigError
from synthagent.core.models import CriterionResult
from synthagent.core.pipeline import Pipeline
from synthagent.core.protocols import ChatRequest, ChatResponse, RunContext
from synthagent.core.registry import load_plugins
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.backends.oracle import OracleBackend
from synthagent.plugins.rubrics.demonstrated import DemoRubricBuilder, rubric_agreement
from synthagent.plugins.rubrics.checkers import (
    CheckerError,
    derive_checkers,
    evaluate,
    parse_checker,
    perturbations,
    validate_checkers,
)
from synthagent.plugins.rubrics.compose import Reward, compile_reward
from synthagent.plugins.rubrics.validation import demonstrations, rollout
from synthagent.plugins.common.evidence import report_values
from synthagent.plugins.rubrics.scorer import RubricScorer


@pytest.fixture(scope="module")
def tasks():
    return OfflineDomainsGenerator().sample(40, seed=5)


def with_delete(tasks):
    return next(t for t in tasks if any(s.writes and t.tool(s.tool).effect.kind == "delete" for s in t.workflow))


def run(coro):
    return asyncio.run(coro)


# -- composition -------------------------------------------------------------------------------------
def results(**passed: bool) -> list[CriterionResult]:
    kinds = {"s": "subgoal", "i": "interaction", "f": "forbidden", "c": "check", "p": "penalty"}
    return [CriterionResult(name, kinds[name[0]], ok, float(ok), "", "") for name, ok in passed.items()]


def test_default_reward_gates_and_weighs() -> None:
    reward = Reward()
    assert reward(results(s1=True, s2=True, i1=True, f1=True, c1=True)) == 1.0
    assert reward(results(s1=True, s2=True, i1=True, f1=False, c1=True)) == 0.0  # the gate
    assert reward(results(s1=True, s2=False, i1=True, f1=True, c1=True)) == pytest.approx(0.125 + 0.25)
    # a failed penalty (over-asking) zeroes the interaction term and success
    assert reward(results(s1=True, i1=True, p1=False, f1=True)) == pytest.approx(0.25)
    # not over-asking earns nothing by itself: doing nothing with a hidden fact to ask for scores 0
    assert reward(results(s1=False, i1=False, p1=True, f1=True)) == 0.0


def test_custom_compositions() -> None:
    rs = results(s1=True, s2=False, i1=True, f1=True, c1=False)
    checks = {"s1": "tool_call", "s2": "answer_contains", "c1": "checker"}
    assert compile_reward({"sum": [{"weight": 3, "of": "check:tool_call"}, {"weight": 1, "of": "check:checker"}]})(rs, checks) == 0.75
    assert compile_reward({"all_of": ["kind:subgoal"]})(rs) == 0.0
    assert compile_reward({"any_of": ["id:s*", "kind:check"]})(rs) == 0.0
    assert compile_reward({"min": ["kind:interaction", {"const": 0.3}]})(rs) == 0.3
    assert compile_reward({"gate": "kind:forbidden", "then": {"select": "kind:subgoal+kind:check"}})(rs) == pytest.approx(1 / 3)


@pytest.mark.parametrize("spec,where", [
    ({"sum": [{"weight": 1}]}, "reward.sum[0]"),
    ({"gate": "kind:forbidden"}, "needs 'then'"),
    ({"all_of": ["colour:red"]}, "bad selector"),
    ({"sum": [{"weight": -1, "of": "*"}]}, "weight"),
    ({"select": "kind:subgoal", "const": 1}, "exactly one"),
    ({"python": "__import__('os')"}, "exactly one"),
    (42, "expected a selector"),
])
def test_bad_compositions_name_the_node(spec, where) -> None:
    with pytest.raises(ConfigError, match="reward") as info:
        compile_reward(spec)
    assert where in str(info.value)


def test_a_composition_from_the_config_file_drives_a_run(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('tasks = 16\n[plugins.rubric.reward]\ngate = { all_of = ["kind:forbidden"] }\n'
                      'then = { sum = [ { weight = 1, of = "check:final_state" } ] }\n'
                      '[plugins.oracle]\ncorruption = "never_ask"\n[plugins.workflow-rubric]\ndemonstrator = "oracle"\n')
    pipeline = Pipeline(load_config(config, []), load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    pipeline.open_store(tmp_path / "r", resume=False)
    run(pipeline.run())
    scores = [json.loads(x) for x in (tmp_path / "r/scores.jsonl").read_text().splitlines()]
    # never asking still reaches the gold state: this reward looks only at the final state and the gate, so
    # it pays 1.0 unless a forbidden criterion failed (an irreversible write without confirmation)
    assert scores and not any(s["success"] for s in scores)
    for s in scores:
        gated = any(r["kind"] == "forbidden" and not r["passed"] for r in s["breakdown"])
        assert s["total"] == (0.0 if gated else 1.0)
    assert {s["total"] for s in scores} == {0.0, 1.0}


def test_a_bad_composition_in_config_fails_before_anything_is_written(synth, tmp_path: Path) -> None:
    result = synth(["run", "--out", str(tmp_path), "--name", "x", "--set", 'plugins.rubric.reward={all_of = "x"}'])
    assert result.returncode == 2 and "reward.all_of" in result.stderr
    assert not (tmp_path / "x").exists()


# -- the builder -------------------------------------------------------------------------------------
def test_rubric_from_demonstrations(tasks) -> None:
    task = with_delete(tasks)
    rubric = DemoRubricBuilder().build(task, run(demonstrations(task, 3)))
    ids = {c.id for c in rubric.criteria}
    assert rubric.dropped is None and rubric.provenance["successful"] == 3
    assert {f"step-{s.index}" for s in task.workflow if s.tool} <= ids
    assert {f"ask-{f.name}" for f in task.user_context} <= ids
    assert {"answer", "no-unexpected-write", "no-foreign-tool", "final-state"} <= ids
    delete = next(s.tool for s in task.workflow if s.writes and task.tool(s.tool).effect.kind == "delete")
    assert f"confirm-{delete}" in ids  # every demonstration asked before the irreversible write
    assert any(c.check == "checker" for c in rubric.criteria)
    assert rubric.provenance["checkers"]["kept"] >= 1


def test_tasks_whose_demonstrations_miss_the_workflow_are_dropped_with_the_reason(tasks) -> None:
    task = tasks[0]

    async def bad_demos():
        return [await rollout(task, OracleBackend(c), sample=i) for i, c in enumerate(("skip_step", "nothing", "wrong_argument"))]

    rubric = DemoRubricBuilder().build(task, run(bad_demos()))
    assert rubric.dropped and rubric.dropped.startswith("uncovered: 0/3 demonstrations cover the workflow")
    assert "step" in rubric.dropped and rubric.criteria == ()
    # with two successful demonstrations out of three, a quorum keeps the task
    async def mixed():
        good = await demonstrations(task, 2)
        return [*good, await rollout(task, OracleBackend("skip_step"), sample=2)]

    kept = DemoRubricBuilder(min_success=2).build(task, run(mixed()))
    assert kept.dropped is None and kept.provenance["successful"] == 2
    assert DemoRubricBuilder().build(task, []).dropped.startswith("no demonstrations")


def test_interactions_follow_what_the_demonstrations_asked(tasks) -> None:
    task = next(t for t in tasks if t.user_context)

    async def demos():  # two of three demonstrations never ask (but still reach the gold state)
        return [await rollout(task, OracleBackend("never_ask"), sample=0),
                await rollout(task, OracleBackend("never_ask"), sample=1), await rollout(task, OracleBackend(), sample=2)]

    asks = {c.id for c in DemoRubricBuilder().build(task, run(demos())).criteria if c.kind == "interaction"}
    assert asks == set()  # support 1/3 is under the quorum
    low = {c.id for c in DemoRubricBuilder(quorum=0.3).build(task, run(demos())).criteria if c.kind == "interaction"}
    assert low == {f"ask-{f.name}" for f in task.user_context}


def test_rubric_stability_over_k(tasks) -> None:
    from synthagent.plugins.rubrics.validation import stability

    report = run(stability(tasks[:20], lambda k: DemoRubricBuilder(demos=k), mistakes=0.15))
    assert report["mean"] is not None and report["mean"] >= 0.9, report
    same = DemoRubricBuilder().build(tasks[1], run(demonstrations(tasks[1], 3)))
    assert rubric_agreement(same, same) == 1.0


@pytest.mark.parametrize("corruption", ["never_ask", "forbidden_tool", "ask_given", "wrong_answer", "skip_step"])
def test_the_oracle_leads_each_corruption_by_half(tasks, corruption) -> None:
    scorer = RubricScorer()

    async def go():
        gaps = []
        for task in tasks[:15]:
            rubric = DemoRubricBuilder().build(task, await demonstrations(task, 3))
            good = await scorer.score(task, rubric, await rollout(task, OracleBackend()))
            bad_traj = await rollout(task, OracleBackend(corruption))
            if bad_traj.messages == (await rollout(task, OracleBackend())).messages:
                continue  # the corruption does not apply (e.g. nothing was given to ask again for)
            gaps.append(good.total - (await scorer.score(task, rubric, bad_traj)).total)
        return gaps

    gaps = run(go())
    assert gaps and min(gaps) >= 0.5, gaps


# -- checkers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,where", [
    ({"id": "x", "all": [{"python": "import os"}]}, "unknown assertion"),
    ({"id": "x", "all": [{"state": {"table": "t", "key": "k"}}]}, "state takes"),
    ({"id": "x", "all": [{"call": {"tool": "f", "min": -1}}]}, "min"),
    ({"id": "x", "all": [{"answer": {"contains": {"nested": 1}}}]}, "answer"),
    ({"id": "x", "all": []}, "non-empty"),
    ({"id": "x", "all": [{"order": ["a"]}], "run": "rm -rf /"}, "unknown keys"),
    ("not a table", "expected a table"),
])
def test_checkers_follow_a_closed_grammar(bad, where) -> None:
    with pytest.raises(CheckerError, match=where):
        parse_checker(bad)


def test_checker_validation_counts(tasks) -> None:
    task = next(t for t in tasks if any(s.writes for s in t.workflow))
    demo = run(demonstrations(task, 1))[0]
    table = next(iter(task.gold_state.changes))
    key = next(iter(task.gold_state.changes[table]))
    candidates = derive_checkers(task, report_values(task))
    tautology = parse_checker({"id": "always", "all": [{"call": {"tool": task.workflow[0].tool, "min": 0}}]})
    wrong = parse_checker({"id": "wrong", "all": [{"state": {"table": table, "key": key, "deleted": True}}]}) \
        if task.gold_state.changes[table][key] is not None else \
        parse_checker({"id": "wrong", "all": [{"state": {"table": table, "key": key, "field": "zz", "equals": 1}}]})
    kept, counts = validate_checkers([*candidates, tautology, wrong], task, [demo], report_values(task))
    assert counts["demo_failed"] >= 1 and counts["cannot_fail"] >= 1 and counts["kept"] >= 1
    assert sum(counts.values()) == len(candidates) + 2
    assert "always" not in {c["id"] for c in kept} and "wrong" not in {c["id"] for c in kept}
    # every kept checker really passes on the demonstration and fails on some perturbation
    perturbed = [t for _, t in perturbations(task, demo, report_values(task))]
    for checker in kept:
        assert evaluate(checker, task, demo)[0]
        assert any(not evaluate(checker, task, p)[0] for p in perturbed)


def test_state_checkers_see_the_replayed_database(tasks) -> None:
    task = next(t for t in tasks if any(s.writes for s in t.workflow))
    demo = run(demonstrations(task, 1))[0]
    named = dict(perturbations(task, demo, report_values(task)))
    write = next(k for k in named if k.startswith("drop ") and task.tool(k.split()[1].split("#")[0]).writes)
    assert named[write].final_state_digest != demo.final_state_digest
    assert named["no answer"].final_state_digest == demo.final_state_digest


# -- the LLM teacher -------------------------------------------------------------------------------
def llm_rubric(task, replies):
    builder = DemoRubricBuilder(teacher="llm")

    async def go():
        demos = await demonstrations(task, 2)
        with ScriptedOpenAIServer(lambda body: next(replies)) as server:
            builder.setup(RunContext(llm=OpenAIBackend(model="teacher", base_url=server.base_url), mapping=None,
                                     run_dir="", seed=0))
            return await builder.build(task, demos), server.requests

    rubric, requests = run(go())
    return rubric, requests, builder


def test_the_llm_teacher_writes_criteria_parsed_against_the_vocabulary(tasks) -> None:
    task = with_delete(tasks)
    step = next(s for s in task.workflow if s.tool)
    delete = next(s.tool for s in task.workflow if s.writes and task.tool(s.tool).effect.kind == "delete")
    fact = task.user_context[0].name
    rubric_reply = json.dumps({"covered": True, "missing": "", "subgoals": [
        {"description": "look up", "evidence": {"type": "tool_call", "tool": step.tool, "arguments": step.arguments}},
        {"description": "bogus tool", "evidence": {"type": "tool_call", "tool": "rm_rf", "arguments": {}}},
        {"description": "code", "evidence": {"type": "python", "source": "import os"}},
        {"description": "polite", "evidence": {"type": "language", "question": "Is the agent polite?"}}],
        "interactions": [{"fact": fact}, {"fact": "not-a-fact"}],
        "forbidden": [{"description": "confirm", "evidence": {"type": "write_without_confirmation", "tool": delete}}]})
    checker_reply = json.dumps({"checkers": [
        {"id": "bad", "all": [{"exec": "x"}]},
        {"id": "called", "all": [{"call": {"tool": step.tool, "args": step.arguments, "min": 1}}]}]})
    rubric, requests, builder = llm_rubric(task, iter(["Here it is: " + rubric_reply, checker_reply]))
    checks = {c.id: c.check for c in rubric.criteria}
    assert rubric.dropped is None and len(requests) == 2
    assert checks["llm-step-0"] == "tool_call" and checks["llm-judge-3"] == "judge"
    assert checks[f"ask-{fact}"] == "asked_for_fact" and checks[f"confirm-{delete}"] == "write_without_confirmation"
    assert {"no-foreign-tool", "no-unexpected-write", "final-state"} <= set(checks)
    assert rubric.provenance["teacher_discarded"] == {"subgoal_bad_evidence": 2, "interaction_unknown_fact": 1}
    assert rubric.provenance["checkers"]["invalid"] == 1
    assert "Demonstration 1" in requests[0]["messages"][0]["content"]


def test_the_llm_teacher_can_drop_a_task_and_bad_json_is_a_recorded_drop(tasks) -> None:
    uncovered = json.dumps({"covered": False, "missing": "step 2 never happens", "subgoals": [], "interactions": [],
                            "forbidden": []})
    rubric, _, _ = llm_rubric(tasks[2], iter([uncovered]))
    assert rubric.dropped == "uncovered: the teacher says step 2 never happens"
    rubric, requests, builder = llm_rubric(tasks[2], iter(["no json here", "still none"]))
    assert rubric.dropped.startswith("teacher_invalid") and len(requests) == 2
    assert builder.stats["dropped:teacher_invalid"] == 1


# -- the pipeline: demonstrations, drops, filtering, and nothing of the reward in the agent's view ----------
class Recording:
    """The oracle as the policy, keeping every request the agent saw."""

    def __init__(self, corruption: str = "none") -> None:
        self.inner = OracleBackend(corruption)
        self.name = self.inner.name
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        return await self.inner.chat(request)


def test_sft_filtering_records_reasons_and_the_agent_never_sees_the_reward(tmp_path: Path) -> None:
    config = load_config(None, ["tasks=12", "plugins.oracle.corruption=skip_step", "export.min_score=0.9",
                                "plugins.workflow-rubric.demonstrator=oracle"])
    pipeline = Pipeline(config, load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    policy = Recording("skip_step")
    pipeline.components.llm = policy
    pipeline.open_store(tmp_path / "r", resume=False)
    summary = run(pipeline.run())
    root = tmp_path / "r"
    assert summary["sft_rejected"] == {"below_min_score": 12} and summary["exports"]["sft"] == 0
    rejected = [json.loads(x) for x in (root / "exports/sft_rejected.jsonl").read_text().splitlines()]
    assert all(r["reason"] == "below_min_score" and "failed step-" in r["detail"] for r in rejected)
    demos = [json.loads(x) for x in (root / "demonstrations.jsonl").read_text().splitlines()]
    assert len(demos) == 36 and {d["policy"] for d in demos} == {"oracle"}
    # the policy's view: its messages and tools only; no criterion, checker or reward anywhere in it
    rubrics = [json.loads(x) for x in (root / "rubrics.jsonl").read_text().splitlines()]
    secrets = {c["description"] for r in rubrics for c in r["criteria"]} | {"rubric", "reward", "checker"}
    tasks = {json.loads(x)["id"]: json.loads(x) for x in (root / "tasks.jsonl").read_text().splitlines()}
    assert policy.requests
    for request in policy.requests:
        seen = json.dumps([m.content for m in request.messages]).lower()
        public = tasks[request.task.id]["system_prompt"].lower()  # the domain's policy may word a step alike
        assert not any(s.lower() in seen for s in secrets
                       if (len(s) > 12 and s.lower() not in public) or s in ("rubric", "reward", "checker"))
        assert {t.name for t in request.tools} == {t["name"] for t in tasks[request.task.id]["tools"]}


def test_resume_keeps_demonstrations_exact(tmp_path: Path, synth) -> None:
    args = ["run", "-q", "--out", str(tmp_path), "--name", "a", "--tasks", "10"]
    assert synth(args).returncode == 0
    first = (tmp_path / "a/demonstrations.jsonl").read_text()
    assert synth(args[:5] + ["b"] + args[6:]).returncode == 0
    def strip(text: str) -> list[dict]:  # records without timings, in id order (append order follows completion)
        return sorted(({k: v for k, v in json.loads(x).items() if k != "timings"} for x in text.splitlines()),
                      key=lambda r: r["id"])

    assert strip(first) == strip((tmp_path / "b/demonstrations.jsonl").read_text())
    again = synth(["run", "-q", "--out", str(tmp_path), "--name", "a", "--tasks", "10", "--resume", "--from", "rubric"])
    assert again.returncode == 0 and strip((tmp_path / "a/demonstrations.jsonl").read_text()) == strip(first)


def test_graph_domains_rewards_separate_the_oracle_from_every_corruption() -> None:
    from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
    from synthagent.plugins.rubrics.validation import TABLE_CORRUPTIONS, corruption_table

    tasks = GraphDomainsGenerator().sample(12, seed=3)
    table = run(corruption_table(tasks, DemoRubricBuilder(), RubricScorer()))
    assert table["oracle"] == 1.0 and table["rubrics_dropped"] == 0
    for name in TABLE_CORRUPTIONS:
        if table["applicable"][name]:
            assert table["min_task_gap"][name] >= 0.5, (name, table)
    assert table["applicable"]["never_ask"] > 0 and table["applicable"]["forbidden_tool"] == len(tasks)
