"""Honest evaluation (issue 13): statistics, the leak check, no free reward, and `synth eval` end to end."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from synthagent.core.config import load_config
from synthagent.core.evaluation import Episode, independent_success, mcnemar_exact, metrics, pass_hat_k, wilson
from synthagent.core.heldout import LeakError, check_heldout, fingerprint, plan_in_tools, split
from synthagent.core.models import Task
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.runtime import Runtime
from synthagent.core.stages.generate import missing_evidence
from synthagent.plugins.backends.oracle import Action, OracleBackend, plan_for
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.generators.offline_domains.pack import anchor_rows, instantiate, load_pack
from synthagent.plugins.rubrics.workflow import WorkflowRubricBuilder
from synthagent.plugins.simulators.users.rule import ONE_AT_A_TIME, RuleUserSession

# -- statistics ----------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_textbook_values() -> None:
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # Wilson 1927 / Newcombe 1998 table
    assert wilson(0, 10)[0] == 0.0 and 0.27 < wilson(0, 10)[1] < 0.28
    assert wilson(0, 0) == (0.0, 1.0)


def test_pass_hat_k_is_the_combinatorial_estimator() -> None:
    # task A: 2 of 4 trials succeed, task B: 4 of 4
    counts = [(2, 4), (4, 4)]
    assert pass_hat_k(counts, 1) == pytest.approx((0.5 + 1.0) / 2)
    assert pass_hat_k(counts, 2) == pytest.approx((math.comb(2, 2) / math.comb(4, 2) + 1.0) / 2)
    assert pass_hat_k(counts, 3) == pytest.approx((0.0 + 1.0) / 2)
    assert pass_hat_k(counts, 5) is None  # no task has 5 trials


def test_exact_mcnemar_is_the_two_sided_binomial_on_discordant_pairs() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    # 10 discordant pairs all one way: 2 * 0.5**10
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar_exact(3, 7) == pytest.approx(sum(math.comb(10, i) for i in range(4)) / 2 ** 10 * 2)
    assert mcnemar_exact(5, 5) == 1.0


def test_metrics_leave_infra_errors_out_of_the_rates() -> None:
    def ep(task: str, sample: int, success: bool | None) -> Episode:
        return Episode(f"{task}-{sample}", task, sample, "p", "d", "d/t", success,
                       "" if success else ("infra_error" if success is None else "wrong_state"),
                       None, None, 1.0 if success else 0.0, bool(success), "user_stop", 3)

    out = metrics([ep("a", 0, True), ep("a", 1, False), ep("b", 0, True), ep("b", 1, None)], repeats=2)
    assert out["infra_errors"] == 1 and out["success"]["n"] == 3 and out["success"]["successes"] == 2
    assert out["pass_hat_k"] == {"1": 0.75, "2": 0.0}  # b has one finished trial: left out of pass^2
    assert out["failures"] == {"wrong_state": 1}


# -- the held-out protocol -----------------------------------------------------------------------------


def _leaky_tasks(seed: int, count: int) -> list[Task]:
    """Tasks as the old protocol made them: the same banking templates, the gold tools first in workflow order."""
    tasks = OfflineDomainsGenerator(domains=["banking"]).sample(count, seed=seed)
    out = []
    for t in tasks:
        gold = list(dict.fromkeys(s.tool for s in t.workflow if s.tool))
        ordered = sorted(t.tools, key=lambda spec: gold.index(spec.name) if spec.name in gold else len(gold))
        out.append(attrs.evolve(t, tools=tuple(ordered[:4])))
    return out


def test_a_rebuilt_leaky_split_is_refused() -> None:
    train, heldout = _leaky_tasks(0, 120), _leaky_tasks(1, 16)  # 2 of the 16 repeat a training task (issue 13)
    assert not {t.id for t in train} & {t.id for t in heldout}  # ids never overlap: they contain the seed
    with pytest.raises(LeakError, match="content of a training task"):
        check_heldout(train, heldout)
    distinct = [t for t in heldout if fingerprint(t) not in {fingerprint(x) for x in train}]
    assert distinct, "some held-out tasks differ in content"
    with pytest.raises(LeakError, match="template the training set has"):
        check_heldout(train, distinct, "template")
    with pytest.raises(LeakError, match="spells out the plan"):
        check_heldout(train, distinct, "content")


def test_leave_one_domain_out_passes_and_fingerprints_ignore_ids() -> None:
    tasks = OfflineDomainsGenerator().sample(80, seed=5)
    train, heldout = split(tasks, "domain", ["travel"])
    assert {t.domain for t in heldout} == {"travel"} and "travel" not in {t.domain for t in train}
    report = check_heldout(train, heldout, "domain")
    assert report["content_overlap"] == 0 and report["domain_overlap"] == 0
    # the same content under another id (another seed) is caught; the tool order does not matter
    twin = attrs.evolve(heldout[0], id="task-other", tools=tuple(reversed(heldout[0].tools)))
    assert fingerprint(twin) == fingerprint(heldout[0])
    with pytest.raises(LeakError):
        check_heldout([*train, twin], heldout, "content")


def test_offered_tools_are_shuffled_not_the_plan() -> None:
    tasks = OfflineDomainsGenerator().sample(120, seed=3)
    verdicts = [v for v in (plan_in_tools(t) for t in tasks) if v is not None]
    assert verdicts and sum(verdicts) / len(verdicts) < 0.2
    reduced = OfflineDomainsGenerator(max_tools=4).sample(60, seed=3)
    assert all(len(t.tools) <= max(4, len({s.tool for s in t.workflow})) for t in reduced)
    verdicts = [v for v in (plan_in_tools(t) for t in reduced) if v is not None]
    assert sum(verdicts) / len(verdicts) < 0.5
    # the same seed gives the same order
    again = OfflineDomainsGenerator().sample(5, seed=3)
    assert [[x.name for x in t.tools] for t in again] == [[x.name for x in t.tools] for t in tasks[:5]]


# -- no free reward ------------------------------------------------------------------------------------


class AskEverything(OracleBackend):
    """The oracle's calls and answer, but one blanket question listing every fact keyword instead of one
    question per fact (the free reward the old rule user and rubric paid)."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "ask-everything"

    async def chat(self, request: ChatRequest) -> ChatResponse:
        task = request.task
        assert task is not None
        key = (task.id, request.seed)
        if key not in self._plans:
            words = sorted({k for f in (*task.user_context, *task.visible_facts) for k in f.keywords})
            blanket = Action("ask", text="Before I start, tell me everything: your " + ", ".join(words) + "?")
            self._plans[key] = [blanket] + [a for a in plan_for(task, seed=request.seed) if a.kind != "ask" or not a.facts]
        return await super().chat(request)


def _runtime(plugins: Any, rubric: str = "workflow") -> Runtime:
    runtime = Runtime(load_config(None, ["tasks=5", f"rubric={rubric}"]), plugins)
    runtime.setup()
    return runtime


async def _play(runtime: Runtime, policy: Any, tasks: list[Task]) -> list[tuple[float, bool | None]]:
    out = []
    for task in tasks:
        rubric = await runtime.build_rubric(task, [await runtime.rollout(task, k, OracleBackend()) for k in
                                                   range(runtime.demonstrations)])
        trajectory = await runtime.rollout(task, 0, policy)
        score = await runtime.score(task, rubric, trajectory)
        assert score.status == "ok" and score.total is not None
        out.append((score.total, independent_success(task, trajectory, score)[0]))
    return out


def _kinds() -> dict[str, list[Task]]:
    tasks = OfflineDomainsGenerator().sample(120, seed=9)
    read_only = [t for t in tasks if not any(s.writes for s in t.workflow) and t.answer][:4]
    writes = [t for t in tasks if any(s.writes for s in t.workflow)][:4]
    no_hidden = [attrs.evolve(t, id=f"{t.id}-nohidden", user_context=(), instruction=t.full_instruction,
                              visible_facts=(*t.visible_facts, *t.user_context)) for t in tasks[:4]]
    assert read_only and writes
    return {"read-only with an answer": read_only, "writes": writes, "no hidden facts": no_hidden}


@pytest.mark.parametrize("rubric", ["workflow", "workflow-rubric"])
def test_ask_for_everything_scores_clearly_below_the_oracle(plugins: Any, rubric: str) -> None:
    runtime = _runtime(plugins, rubric)
    tasks = [t for ts in _kinds().values() for t in ts]
    oracle = asyncio.run(_play(runtime, OracleBackend(), tasks))
    blanket = asyncio.run(_play(runtime, AskEverything(), tasks))
    mean_oracle = sum(r for r, _ in oracle) / len(oracle)
    mean_blanket = sum(r for r, _ in blanket) / len(blanket)
    assert mean_oracle == 1.0 and all(ok for _, ok in oracle)
    assert mean_blanket <= 0.34, (mean_blanket, blanket)  # the old matcher paid it up to 1.0
    assert max(r for r, _ in blanket) < 0.5


@pytest.mark.parametrize("rubric", ["workflow", "workflow-rubric"])
def test_doing_nothing_scores_zero_on_every_kind_of_task(plugins: Any, rubric: str) -> None:
    runtime = _runtime(plugins, rubric)
    for kind, tasks in _kinds().items():
        results = asyncio.run(_play(runtime, OracleBackend(corruption="nothing"), tasks))
        assert all(total == 0.0 and ok is False for total, ok in results), (kind, results)


def test_the_rule_user_answers_one_fact_per_question() -> None:
    task = next(t for t in OfflineDomainsGenerator().sample(40, seed=2) if len(t.user_context) >= 2)
    session = RuleUserSession(task)
    from synthagent.core.models import Message

    words = " and ".join(f.keywords[0] for f in task.user_context)
    reply = asyncio.run(session.respond([Message("assistant", f"What is your {words}?")])).message.content or ""
    assert reply in ONE_AT_A_TIME
    assert not any(str(f.value) in reply for f in task.user_context)
    one = task.user_context[0]
    reply = asyncio.run(session.respond([Message("assistant", f"What is your {one.keywords[0]}?")])).message.content
    assert one.statement in (reply or "")


def test_a_task_without_positive_evidence_is_dropped() -> None:
    domain = load_pack(None, ["banking"])[0]
    scenario = next(s for s in domain.scenarios if not any(domain.tool(st.tool).writes for st in s.steps))
    task = instantiate(domain, scenario, anchor_rows(domain, scenario)[0], hidden=list(scenario.hideable)[:1],
                       seed=0, generator="t")
    assert missing_evidence(task) is None  # read-only with an answer: kept
    bare = attrs.evolve(task, answer=())
    assert missing_evidence(bare) is not None and missing_evidence(bare).startswith("no_positive_evidence")
    # the rubric of such a task would reward doing nothing: a criterion with nothing to check is absent
    rubric = WorkflowRubricBuilder().build(attrs.evolve(bare, workflow=()), [])
    assert not any(c.kind == "subgoal" for c in rubric.criteria)


# -- synth eval end to end -----------------------------------------------------------------------------


def test_synth_eval_run_resume_compare_report_and_leak_check(synth: Any, tmp_path: Path) -> None:
    out = tmp_path / "evals"
    base = ["eval", "--bench", "offline-domains", "--tasks", "6", "-k", "2", "--out", str(out), "-q", "--json"]
    good = synth([*base, "--policy", "oracle", "--name", "good"])
    assert good.returncode == 0, good.stderr
    res = json.loads(good.stdout)
    assert res["success"]["successes"] == 12 and res["success"]["n"] == 12 and res["pass_hat_k"]["2"] == 1.0
    assert res["rubric"]["mean_reward"] == 1.0
    lines = (out / "good" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 12
    again = synth([*base, "--policy", "oracle", "--name", "good", "--resume"])
    assert again.returncode == 0 and len((out / "good" / "episodes.jsonl").read_text().splitlines()) == 12
    bad = synth([*base, "--policy", "oracle", "--set", "llm.corruption=wrong_argument", "--name", "bad"])
    assert bad.returncode == 0, bad.stderr
    bad_res = json.loads(bad.stdout)
    assert bad_res["success"]["successes"] < 12
    # process metrics for any policy: the oracle makes every gold call exactly; a wrong argument breaks that
    assert res["process"]["exact_args"]["rate"] == 1.0 and res["process"]["valid_calls"]["n"] == 12
    assert res["process"]["gold_tools_called"]["rate"] == 1.0
    assert bad_res["process"]["exact_args"]["rate"] < 1.0
    cmp_ = synth(["eval", "--compare", str(out / "good"), str(out / "bad"), "--json"])
    assert cmp_.returncode == 0, cmp_.stderr
    c = json.loads(cmp_.stdout)
    assert c["pairs"] == 12 and c["only_b"] == 0 and c["only_a"] > 0 and c["difference"] > 0
    assert c["mcnemar_p"] == pytest.approx(mcnemar_exact(c["only_a"], 0), rel=1e-3)
    report = synth(["report", str(out / "good")])
    assert report.returncode == 0 and (out / "good" / "report" / "success.png").is_file()
    mismatch = synth([*base, "--policy", "oracle", "--name", "good", "--resume", "--repeats", "3"])
    assert mismatch.returncode == 2 and "evaluated something else" in mismatch.stderr
    # the leak check: an evaluation on the training run's own tasks is refused before anything is written
    run = tmp_path / "runs"
    made = synth(["run", "--tasks", "8", "--out", str(run), "--name", "train", "-q"])
    assert made.returncode == 0, made.stderr
    leak = synth(["eval", "--policy", "oracle", "--run", str(run / "train"), "--train-run", str(run / "train"),
                  "--name", "leak", "-q"])
    assert leak.returncode == 2 and "content of a training task" in leak.stderr
    assert "Traceback" not in leak.stderr and not (run / "train" / "evals" / "leak").exists()
    for args, message in [(["eval", "--run", str(run / "train")], "needs --policy"),
                          (["eval", "--policy", "oracle"], "exactly one of"),
                          (["eval", "--policy", "oracle", "--bench", "nope"], "unknown benchmark"),
                          (["eval", "--policy", "oracle", "--run", str(run / "train"), "--set", "llm.bogus=1"],
                           "unknown option 'bogus'")]:
        r = synth(args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_synth_eval_on_the_bfcl_benchmark_uses_bfcl_checker(synth: Any, tmp_path: Path) -> None:
    pytest.importorskip("bfcl_eval", reason="pip install --no-deps bfcl-eval")
    base = ["eval", "--bench", "bfcl-multi-turn", "--policy", "bfcl-oracle", "--tasks", "20", "--out", str(tmp_path),
            "-q", "--json"]
    good = synth([*base, "--name", "replay"])
    assert good.returncode == 0, good.stderr
    res = json.loads(good.stdout)
    assert res["success_mode"] == "scorer" and res["success"]["successes"] == 20 and res["success"]["n"] == 20
    cut = synth([*base, "--name", "cut", "--set", "llm.corruption=drop_last_call"])
    assert cut.returncode == 0, cut.stderr
    res = json.loads(cut.stdout)
    assert res["success"]["successes"] <= 1 and res["failures"].get("checker_failed", 0) >= 19


def test_synth_eval_on_a_run_leaves_the_run_unlocked_and_unchanged(synth: Any, default_run: Any, tmp_path: Path) -> None:
    """Issue 25: ``synth eval --run R`` opened R as its writer and never closed it, so R's ``.lock`` stayed.
    Sources are now opened read-only: no lock is taken, nothing of R changes, and a writer can open R during
    and after the evaluation."""
    import shutil

    from synthagent.core.store import LOCK, RunStore

    run = tmp_path / "src"
    shutil.copytree(default_run.root, run, ignore=shutil.ignore_patterns("evals", LOCK))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = synth(["eval", "-q", "--policy", "oracle", "--run", str(run), "--tasks", "3", "--out", str(tmp_path / "e")])
    assert result.returncode == 0, result.stderr
    assert not (run / LOCK).exists()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    RunStore.open(run).close()  # the run's writer lock is free
