"""`synth run` end to end through the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_default_run_writes_the_whole_layout(default_run) -> None:
    root = default_run.root
    for name in ("manifest.json", "tasks.jsonl", "trajectories.jsonl", "rubrics.jsonl", "scores.jsonl",
                 "summary.json", "exports/sft.jsonl", "exports/rl.jsonl", "run.log"):
        assert (root / name).is_file(), name
    summary = json.loads((root / "summary.json").read_text())
    assert summary["tasks"] >= 200 and summary["trajectories"] == summary["tasks"] == summary["scores"]
    assert len(summary["domains"]) >= 8
    assert summary["success_rate"] == 1.0 and summary["infra_errors"] == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert all(manifest["stages"][s]["status"] == "done" for s in ("generate", "simulate", "rubric", "score", "export"))
    assert {p["name"] for p in manifest["plugins"]} >= {"generators.offline_domains", "backends.oracle", "simulators.users.rule", "simulators.tools.sqlite"}
    assert manifest["implementations"]["llm"] == {"name": "oracle", "plugin": "backends.oracle", "version": manifest["synthagent"]}
    assert manifest["seed"] == 0
    sft = (root / "exports/sft.jsonl").read_text().splitlines()
    assert len(sft) == summary["tasks"]


def test_same_seed_same_records(default_run, synth, records, tmp_path: Path) -> None:
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "again"])
    assert result.returncode == 0, result.stderr
    assert records(tmp_path / "again") == records(default_run.root)
    for name in ("exports/sft.jsonl", "exports/rl.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (default_run.root / name).read_bytes()
    other = synth(["run", "-q", "--out", str(tmp_path), "--name", "seed1", "--seed", "1", "--tasks", "20"])
    assert other.returncode == 0, other.stderr
    assert not set(records(tmp_path / "seed1")["tasks.jsonl"]) & set(records(default_run.root)["tasks.jsonl"])


def test_sigkill_at_random_moments_then_resume_loses_and_duplicates_nothing(default_run, records, popen_synth,
                                                                            tmp_path: Path) -> None:
    """Five runs, each SIGKILLed at a random moment after its run directory exists, then resumed."""
    rng = random.Random(20261123)
    manifest = json.loads((default_run.root / "manifest.json").read_text())
    work = sum(manifest["timings"].values())  # seconds the stages take once the directory exists
    expected = records(default_run.root)
    moments: list[float] = []
    attempt = 0
    while len(moments) < 5:
        attempt += 1
        assert attempt <= 15, "runs kept finishing before the kill"
        args = ["run", "-q", "--out", str(tmp_path), "--name", f"k{attempt}"]
        root = tmp_path / f"k{attempt}"
        proc = popen_synth(args)
        deadline = time.monotonic() + 120
        while not (root / "manifest.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        moment = rng.uniform(0.0, work)
        time.sleep(moment)
        if proc.poll() is not None:  # finished first: this draw did not interrupt anything, draw again
            continue
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        moments.append(moment)
        resumed = popen_synth(args + ["--resume"])
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode() if resumed.stderr else ""
        assert records(root) == expected, f"kill {moment:.2f}s into the run"
        assert (root / "exports/sft.jsonl").read_bytes() == (default_run.root / "exports/sft.jsonl").read_bytes()
    print(f"killed at {[round(m, 2) for m in moments]} s after the run directory appeared")
    assert not [p for p in tmp_path.iterdir() if ".creating-" in p.name]


def test_resume_of_a_finished_run_is_a_no_op(synth, tmp_path: Path) -> None:
    args = ["run", "-q", "--out", str(tmp_path), "--name", "r", "--tasks", "16"]
    assert synth(args).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.jsonl")}
    assert synth(args + ["--resume"]).returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").glob("*.jsonl")} == before


def test_from_stage_reruns_that_stage_and_later(synth, records, tmp_path: Path) -> None:
    args = ["run", "-q", "--out", str(tmp_path), "--name", "f", "--tasks", "16"]
    assert synth(args).returncode == 0
    root = tmp_path / "f"
    tasks_before = (root / "tasks.jsonl").read_bytes()
    scores_before = records(root)["scores.jsonl"]
    (root / "scores.jsonl").write_text("")  # a damaged later stage is rebuilt by --from
    result = synth(args + ["--from", "score"])
    assert result.returncode == 0, result.stderr
    assert (root / "tasks.jsonl").read_bytes() == tasks_before
    assert records(root)["scores.jsonl"] == scores_before


def test_show_prints_the_summary(default_run, synth) -> None:
    result = synth(["show", str(default_run.root), "--json"])
    assert result.returncode == 0
    assert json.loads(result.stdout)["tasks"] >= 200
    table = synth(["show", str(default_run.root)])
    assert "success rate" in table.stdout


def test_plugins_json_lists_every_builtin(synth) -> None:
    result = synth(["plugins", "--json"])
    rows = json.loads(result.stdout)
    kinds = {(r["kind"], r["name"]) for r in rows}
    assert {("generator", "offline-domains"), ("user", "rule"), ("tools", "sqlite"), ("llm", "oracle"),
            ("rubric", "workflow"), ("scorer", "rubric"), ("mapping", "memory"), ("executor", "local")} <= kinds
    assert all(r["version"] and r["plugin"] for r in rows)


def test_help_lists_every_option(synth) -> None:
    result = synth(["run", "--help"])
    for option in ("--config", "--set", "--out", "--name", "--seed", "--tasks", "--resume", "--from", "--plugin"):
        assert option in result.stdout
