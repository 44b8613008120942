"""BFCL v4 multi-turn as an environment: the oracle passes BFCL's own checker, a corrupted replay does not.

Real parts only: BFCL's data, API classes and checker from the installed ``bfcl-eval`` package, run through
``synth run``. Skipped only when ``bfcl-eval`` is not installed (``pip install --no-deps bfcl-eval``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("bfcl_eval", reason="bfcl-eval is not installed: pip install --no-deps bfcl-eval")

from synthagent.core.models import Message, ToolCall, Trajectory  # noqa: E402
from synthagent.plugins.benchmarks.bfcl import BENCHMARK, data  # noqa: E402
from synthagent.plugins.benchmarks.bfcl.environment import BfclTools, BfclUser, entry_task  # noqa: E402
from synthagent.plugins.benchmarks.bfcl.scoring import BfclRubric, BfclScorer  # noqa: E402

ENV = ["--set", "generator=bfcl-multi-turn", "--set", "tools=bfcl", "--set", "user=bfcl", "--set", "scorer=bfcl",
       "--set", "rubric=bfcl", "--set", "llm.backend=bfcl-oracle", "--set", "simulate.max_turns=100"]


def _scores(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]


def test_the_benchmark_overrides_name_the_bfcl_components() -> None:
    assert {k: BENCHMARK[k] for k in ("generator", "tools", "user", "rubric", "scorer")} == {
        "generator": "bfcl-multi-turn", "tools": "bfcl", "user": "bfcl", "rubric": "bfcl", "scorer": "bfcl"}


def test_the_oracle_passes_bfcl_checker_on_all_of_multi_turn_base(synth, tmp_path: Path) -> None:
    start = time.perf_counter()
    out = synth(["run", "--out", str(tmp_path), "--name", "oracle", "--set", "tasks=200", *ENV])
    assert out.returncode == 0, out.stderr
    scores = _scores(tmp_path / "oracle")
    print(f"\n[bfcl] oracle on multi_turn_base: {sum(s['success'] for s in scores)}/{len(scores)} "
          f"in {time.perf_counter() - start:.1f} s")
    assert len(scores) == 200
    assert all(s["status"] == "ok" and s["success"] and s["scorer"] == "bfcl" for s in scores), \
        [s["breakdown"] for s in scores if not s["success"]][:3]
    tasks = [json.loads(line) for line in (tmp_path / "oracle" / "tasks.jsonl").read_text().splitlines()]
    assert sorted(t["provenance"]["slot"] for t in tasks) == sorted(f"multi_turn_base_{i}" for i in range(200))


def test_dropping_the_last_call_of_each_turn_scores_near_zero(synth, tmp_path: Path) -> None:
    out = synth(["run", "--out", str(tmp_path), "--name", "drop", "--set", "tasks=40", *ENV,
                 "--set", "plugins.bfcl-oracle.corruption=drop_last_call"])
    scores = _scores(tmp_path / "drop")
    assert len(scores) == 40
    assert sum(s["success"] for s in scores) <= 2
    # issue 24: a run that keeps no task exits 3 naming the drop reasons (before: 0); with a success or two, 0
    kept = json.loads((tmp_path / "drop" / "summary.json").read_text())["funnel"]["kept"]
    if kept == 0:
        assert out.returncode == 3 and "top drop reasons: export: below_min_score (" in out.stderr, out.stderr
    else:
        assert out.returncode == 0, out.stderr
    assert all(s["breakdown"][0]["evidence"].startswith("multi_turn:") for s in scores if not s["success"])


@pytest.mark.parametrize("category", ["miss_param", "miss_func", "long_context"])
def test_the_oracle_passes_the_other_categories(synth, tmp_path: Path, category: str) -> None:
    out = synth(["run", "--out", str(tmp_path), "--name", category, "--set", "tasks=10", *ENV,
                 "--set", f"plugins.bfcl-multi-turn.category={category}"])
    assert out.returncode == 0, out.stderr
    scores = _scores(tmp_path / category)
    assert len(scores) == 10 and all(s["success"] for s in scores)


def test_a_do_nothing_trajectory_and_a_truncated_one_fail() -> None:
    task = entry_task(data.entry("multi_turn_base_0"))
    rubric = BfclRubric().build(task, [])
    assert rubric.criteria[0].spec["ground_truth"] == data.entry("multi_turn_base_0")["ground_truth"]
    turns = [Message("user", text) for text in data.turn_texts(data.entry("multi_turn_base_0"))]
    nothing = Trajectory(id="t-nothing", task_id=task.id, policy="p", sample=0, seed=0, messages=turns,
                         termination="user_stop", turns=4)
    score = asyncio.run(BfclScorer().score(task, rubric, nothing))
    assert score.status == "ok" and score.total == 0.0 and not score.success
    assert "empty_turn" in score.breakdown[0].evidence
    short = Trajectory(id="t-short", task_id=task.id, policy="p", sample=0, seed=0, messages=turns[:1],
                       termination="max_turns", turns=1)
    assert "force_terminated" in asyncio.run(BfclScorer().score(task, rubric, short)).breakdown[0].evidence


def test_tools_execute_bfcl_classes_per_episode_and_user_delivers_turns_in_order() -> None:
    task = entry_task(data.entry("multi_turn_base_0"))
    assert {"mv", "grep", "post_tweet"} <= {t.name for t in task.tools} and "cp" not in {t.name for t in task.tools}

    async def go() -> None:
        one = await BfclTools().start(task, 0)
        two = await BfclTools().start(task, 0)
        made = await one.call(ToolCall("c1", "cd", {"folder": "document"}))
        assert made.ok
        made = await one.call(ToolCall("c2", "mkdir", {"dir_name": "temp"}))
        assert made.ok and made.wrote
        assert one.final_state().changes and one.final_state().digest != two.final_state().digest
        assert (await two.call(ToolCall("c3", "ls", {}))).content == {"current_directory_content": ["document", "archive"]}
        bad = await one.call(ToolCall("c4", "__init__", {}))
        assert not bad.ok and "no function" in bad.content
        assert not (await one.call(ToolCall("c5", "cd", {"nope": 1}))).ok
        user = await BfclUser().start(task, 0)
        seen = [Message("user", task.instruction)]
        later = data.turn_texts(data.entry(task.provenance.slot))[1:]
        assert later and task.user_context == ()  # scripted turns, not facts to ask for
        for expected in later:
            turn = await user.respond(seen + [Message("assistant", "done")])
            assert turn.message.content == expected and not turn.stop
            seen.append(turn.message)
        assert (await user.respond(seen)).stop

    asyncio.run(go())


def test_calls_are_parsed_and_rendered_never_evaluated() -> None:
    row = data.entry("multi_turn_base_0")
    assert data.parse_call(row, "sort('final_report.pdf')") == ("sort", {"file_name": "final_report.pdf"})
    with pytest.raises(ValueError, match="non-literal"):
        data.parse_call(row, "cd(folder=open('/etc/passwd').read())")
    with pytest.raises(ValueError, match="plain function call"):
        data.parse_call(row, "__import__('os').system('true')")
    assert data.render_call("cd", {"folder": "a'); exit('"}) == "cd(folder=\"a'); exit('\")"
    assert data.render_call("__import__", {"name": "os"}) is None
    assert data.render_call("cd", {"folder": float("nan")}) is None


def test_a_missing_package_says_how_to_install_it(synth, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "bfcl_eval"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('bfcl_eval hidden by the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    out = synth(["run", "--out", str(tmp_path), "--name", "x", "--set", "tasks=1", *ENV], env=env)
    assert out.returncode == 2
    assert "pip install --no-deps bfcl-eval" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


def test_an_unknown_category_or_corruption_is_a_clear_error(synth, tmp_path: Path) -> None:
    out = synth(["run", "--out", str(tmp_path), "--name", "x", *ENV, "--set", "plugins.bfcl-multi-turn.category=nope"])
    assert out.returncode == 2 and "base, miss_param, miss_func, long_context" in out.stderr
    out = synth(["run", "--out", str(tmp_path), "--name", "y", *ENV, "--set", "plugins.bfcl-oracle.corruption=nope"])
    assert out.returncode == 2 and "drop_last_call" in out.stderr
