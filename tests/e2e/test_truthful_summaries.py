"""Summaries that tell the truth (issue 24 point 5): success over slots beside success over kept tasks, drops by
stage and reason in every view (show, report, trajectory pages), model requests with their faults and retries in
``synth show``, draws the generator replaced kept apart from losses, and no stale lock after a clean exit."""

from __future__ import annotations

import json
from pathlib import Path

from synthagent.core.store import LOCK
from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.scripted_teacher import ScriptedTeacher

LLM_PATH = ["--set", "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
            "--set", "llm.backend=openai", "--set", "llm.model=teacher"]


def test_a_teacher_run_with_drops_and_faults_says_so_in_show_report_and_pages(synth, tmp_path: Path) -> None:
    # a noisy teacher (invalid JSON, bad tool schemas: some slots are lost) behind a server that answers 10% of
    # requests with HTTP 500 (retried)
    with ScriptedOpenAIServer(ScriptedTeacher(0.35, 0), faults={"500": 0.1}, seed=3) as server:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "n", "--tasks", "12", *LLM_PATH,
                        "--set", f"llm.base_url={server.base_url}"], env={"OPENAI_API_KEY": "sk-test"}, timeout=600)
        served_500 = server.served["500"]
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "n"
    summary = json.loads((root / "summary.json").read_text())
    fun, success = summary["funnel"], summary["success"]
    lost = fun["slots"] - fun["kept"]
    assert lost >= 1 and fun["kept"] >= 1, fun
    # both rates, over the same numerator: success over slots can never read as success over what was kept
    assert success["kept"]["of"] == fun["kept"] and success["slots"]["of"] == fun["slots"]
    assert success["slots"]["succeeded"] == success["kept"]["succeeded"] <= fun["kept"]
    assert success["slots"]["rate"] < success["kept"]["rate"] or success["kept"]["rate"] == 0
    # every lost slot has a stage-prefixed reason
    reasons = summary["drop_reasons"]
    assert reasons and all(k.split(": ", 1)[0] in ("generate", "simulate", "rubric", "export") for k in reasons)
    assert list(reasons.values()) == sorted(reasons.values(), reverse=True)
    # the server's faults are counted as faults and retries
    llm = summary["requests"]["llm"]
    assert served_500 >= 1 and llm["faults"] >= served_500 and llm["retries"] >= 1 and llm["requests"] > llm["faults"]

    shown = synth(["show", str(root)], env={"COLUMNS": "400"})
    assert shown.returncode == 0
    out = " ".join(shown.stdout.split())
    assert f"({success['kept']['succeeded']}/{fun['kept']} kept tasks)" in out
    assert f"({success['slots']['succeeded']}/{fun['slots']} slots)" in out
    top, n = next(iter(reasons.items()))
    assert f"{top} ({n})" in out
    assert f"llm: {llm['requests']} requests, {llm['faults']} faults, {llm['retries']} retries" in out

    report = synth(["report", str(root)])
    assert report.returncode == 0, report.stderr
    page = (root / "report" / "index.html").read_text()
    assert f"drop reason: {top}" in page and "tasks succeeded / slots" in page and "model requests: llm" in page
    rejected = [json.loads(line) for line in (root / "exports" / "sft_rejected.jsonl").read_text().splitlines()]
    dropped = [r for r in rejected if r["reason"] == "task_dropped"]
    assert dropped  # a dropped task's trajectory page names why the task was dropped
    why = dropped[0]["detail"].split(":")[0].strip()
    text = (root / "report" / "data" / f"{dropped[0]['trajectory_id']}.html").read_text()
    assert f"task_dropped: {why}" in text
    assert not (root / LOCK).exists()  # a clean exit leaves no stale lock


def test_draws_the_generator_replaced_are_not_reported_as_losses(synth, tmp_path: Path) -> None:
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "d", "--tasks", "30"])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["funnel"] == {"slots": 30, "kept": 30, "dropped": {}, "accounted": True}
    assert summary["redrawn"] and summary["redrawn"] == {k: v for k, v in summary["dropped"].items()}
    assert summary["drop_reasons"] == {} and summary["success"]["slots"] == {"succeeded": 30, "of": 30, "rate": 1.0}
    out = " ".join(synth(["show", str(tmp_path / "d")], env={"COLUMNS": "400"}).stdout.split())
    assert "drop reasons │ none" in out
    assert "redrawn at generation (no slot lost) │ " + ", ".join(f"{k}={v}" for k, v in summary["redrawn"].items()) in out
    assert not (tmp_path / "d" / LOCK).exists()
