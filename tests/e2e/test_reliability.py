"""Reliability through the real CLI (issue 14): one writer per run, resume that needs no flags, run names,
model output that is made storable, and kill -9 / --resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthagent.core.testing import ScriptedOpenAIServer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def strict_lines(path: Path) -> list[dict]:
    """Every line of ``path`` parsed by a strict JSON reader (UTF-8, no NaN/Infinity)."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path}: non-standard constant {token}")

    text = path.read_bytes().decode("utf-8", errors="strict")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_readme_resume_example_and_a_cut_record_in_a_finished_stage(synth, records, tmp_path: Path) -> None:
    """The README's example works as written; `synth show` writes nothing; a score line cut after the run
    finished is redone by --resume (not silently lost)."""
    first = synth(["run", "--tasks", "50", "--seed", "3", "--name", "small"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = synth(["run", "--resume", "--name", "small"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    root = tmp_path / "runs" / "small"
    full = records(root)
    assert len(full["scores.jsonl"]) == 50
    differ = synth(["run", "--resume", "--name", "small", "--seed", "4", "--set", "simulate.max_turns=3"], cwd=tmp_path)
    assert differ.returncode == 2 and "Traceback" not in differ.stderr
    assert "seed: stored 3, given 4" in differ.stderr and "simulate.max_turns: stored 30, given 3" in differ.stderr

    data = (root / "scores.jsonl").read_bytes()
    (root / "scores.jsonl").write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1 + 40])  # last record cut
    (root / "summary.json").unlink()
    before = snapshot(root)
    show = synth(["show", "--json", str(root)])
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["scores"] == 49
    assert snapshot(root) == before  # no truncation, no summary.json

    resumed = synth(["run", "-q", "--resume", "--name", "small"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert records(root) == full
    assert json.loads((root / "summary.json").read_text())["scores"] == 50


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../outside", "a/b", "..", "."])
def test_run_names_that_leave_out_are_refused(synth, tmp_path: Path, name: str) -> None:
    result = synth(["run", "--out", str(tmp_path / "runs"), "--name", name, "--tasks", "2"], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"Error: --name {name!r} must be a plain folder name (no path "
                                                  "separator, no '..', not absolute); choose where runs go with --out"]
    assert list(tmp_path.iterdir()) == [] and not Path("/tmp/elsewhere").exists()


def test_two_concurrent_resumes_one_runs_the_other_is_refused(synth, records, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    common = ["--out", str(out), "--name", "r"]
    first = subprocess.Popen([sys.executable, "-m", "synthagent.core", "run", "-q", *common, "--tasks", "60",
                              "--set", "simulate.concurrency=1"], stderr=subprocess.DEVNULL)
    traj = out / "r" / "trajectories.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (traj.exists() and traj.stat().st_size > 0):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    procs = [subprocess.Popen([sys.executable, "-m", "synthagent.core", "run", "-q", "--resume", *common],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.pid, p.wait(timeout=600), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for _, code, _ in results)
    assert codes == [0, 2], results
    (winner,) = [pid for pid, code, _ in results if code == 0]
    (loser,) = [err for _, code, err in results if code == 2]
    assert f"is in use by another synth run (pid {winner} holds" in loser and "Traceback" not in loser
    rows = records(out / "r")  # duplicate ids fail here
    assert len(rows["tasks.jsonl"]) == len(rows["trajectories.jsonl"]) == len(rows["scores.jsonl"]) == 60
    assert len((out / "r" / "exports" / "sft.jsonl").read_text().splitlines()) == 60


def _hostile_reply(body: dict) -> object:
    """Replies a careless model server sends: lone surrogates, NaN arguments, bytes that are not UTF-8."""
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if turn == 0:
        return {"content": "Let me look \ud800 that up \udfff.", "tool_calls": [
            {"id": "call_\udc80", "type": "function",
             "function": {"name": "lookup\ud800", "arguments": '{"id": NaN, "note": "\\ud83d"}'}}]}
    if turn == 1:
        return {"content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": {"amount": float("inf")}}}]}
    if turn == 2:
        return (b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
                b'"content":"bad bytes \xff\xfe\xc3 here"},"finish_reason":"stop"}],"usage":{}}')
    return "All done \ud800, thank you."


def test_a_hostile_model_server_cannot_break_a_run(synth, tmp_path: Path) -> None:
    with ScriptedOpenAIServer(_hostile_reply) as server:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "h", "--tasks", "3",
                        "--set", "llm.backend=openai", "--set", "llm.model=scripted",
                        "--set", f"llm.base_url={server.base_url}", "--set", "simulate.max_turns=5"])
    # the run completes; its garbage teaches nothing, which exits 3 since issue 24 (a run that keeps no task)
    assert result.returncode == 3 and "the run kept 0 of 3 tasks" in result.stderr, result.stderr
    root = tmp_path / "h"
    files = sorted(root.glob("*.jsonl")) + sorted((root / "exports").glob("*.jsonl"))
    rows = {f.name: strict_lines(f) for f in files}
    trajectories = rows["trajectories.jsonl"]
    assert len(trajectories) == 3 and not any(t["error"] for t in trajectories)
    text = json.dumps(trajectories, ensure_ascii=False)
    assert "\ufffd" in text  # surrogates and invalid bytes were replaced (strict_lines refused bare NaN above)
    assert all(t["malformed_tool_calls"] >= 2 for t in trajectories)
    assert "not a finite number" in text  # the observation the policy saw
    assert server.served["ok"] >= 9


def test_kill_resume_script_two_kills_give_identical_records(tmp_path: Path) -> None:
    """benchmarks/bench_kill_resume.py with 2 SIGKILLs (the benchmark runs 20 per executor)."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("bench_kill_resume", REPO / "benchmarks" / "bench_kill_resume.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.kill_resume("local", 2, tasks=12, out=tmp_path, rng=random.Random(5))
    assert result["identical"], result
    assert result["kills"] == 2 and result["runs_compared"] >= 1
    assert result["records"]["scores.jsonl"] == 12


def test_a_run_whose_every_rollout_fails_exits_non_zero_with_the_reason(synth, tmp_path: Path) -> None:
    """Nothing to train on is a failure, not a success: every rollout against a dead server is an infra error."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "dead", "--tasks", "2",
                    "--set", "llm.backend=openai", "--set", f"llm.base_url=http://127.0.0.1:{port}/v1",
                    "--set", "llm.model=x", "--set", "plugins.workflow-rubric.demonstrator=oracle",
                    "--set", "plugins.openai.max_retries=0", "--set", "simulate.retries=0"])
    assert result.returncode == 3, result.stderr  # issue 24: a run that keeps no task exits 3 (was 1)
    assert "no usable trajectory: all 2 rollouts failed for infrastructure reasons" in result.stderr
    assert "top drop reasons: simulate: infra_error (2)" in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "dead" / "summary.json").read_text())
    assert summary["infra_errors"] == summary["trajectories"] == 2
