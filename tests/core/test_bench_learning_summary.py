"""benchmarks/bench_learning.py's summary: the numbers docs/results.md reports are recomputed from per-task files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_learning", REPO / "benchmarks" / "bench_learning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eval(out: Path, key: str, outcomes: list[bool | None]) -> None:
    per_task = {f"t{i}": {"independent": o, "reward": 0.5 if o else 0.1, "success": bool(o), "failed": []}
                for i, o in enumerate(outcomes)}
    finished = [o for o in outcomes if o is not None]
    res = {"tasks": len(outcomes), "finished": len(finished), "independent_successes": sum(map(bool, finished)),
           "score_mean": 0.3, "success_rate": 0.0, "tool_calls_per_task": 1.0, "seconds": 1.0,
           "per_task": per_task, "transcripts": {}}
    (out / "evals").mkdir(parents=True, exist_ok=True)
    (out / "evals" / f"{key}.json").write_text(json.dumps(res))


def test_summary_pools_seeds_and_pairs_tasks_for_mcnemar(tmp_path: Path) -> None:
    bench = _bench()
    _eval(tmp_path, "base@heldout", [False] * 10)
    _eval(tmp_path, "sft-s0@heldout", [True] * 6 + [False] * 4)
    _eval(tmp_path, "sft-s1@heldout", [True] * 2 + [False] * 7 + [None])  # one infrastructure failure
    _eval(tmp_path, "grpo-s0@heldout", [True] * 5 + [False] * 4 + [True])
    bench.summarize(tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["seeds"] == [0, 1]
    pooled = res["pooled"]["sft@heldout"]
    assert (pooled["k"], pooled["n"], pooled["seeds"]) == (8, 19, 2)  # the infra episode is in no rate
    assert pooled["per_seed"] == [0.6, round(2 / 9, 4)]
    assert pooled["ci95"][0] < 8 / 19 < pooled["ci95"][1]
    cmp = res["comparisons"]
    s0 = cmp["sft-s0 vs base @heldout"]
    assert (s0["pairs"], s0["only_a"], s0["only_b"]) == (10, 6, 0)
    assert s0["mcnemar_p"] == round(2 / 2 ** 6, 4)  # exact two-sided McNemar: 2 * 0.5^6
    g0 = cmp["grpo-s0 vs sft-s0 @heldout"]
    assert (g0["only_a"], g0["only_b"], g0["mcnemar_p"]) == (1, 1, 1.0)  # t9 gained, t5 lost
    assert cmp["sft vs base @heldout (seeds pooled)"]["pairs"] == 19
    assert res["per_task"]["sft-s1@heldout"]["t9"]["independent"] is None
    assert (tmp_path / "success.png").stat().st_size > 1000
    md = (tmp_path / "results.md").read_text()
    assert "| sft-s0 | 60.0% (6/10)" in md and "| sft-s0 vs base @heldout | 10 | 6 / 0 | 6 | 0 | 0.0312 |" in md


def test_summary_pools_process_metrics_and_shows_the_ceiling(tmp_path: Path) -> None:
    bench = _bench()
    _eval(tmp_path, "base@heldout", [False] * 4)
    _eval(tmp_path, "sft-s0@heldout", [True, False, False, False])
    for key, asked in (("base@heldout", [False] * 4), ("sft-s0@heldout", [True, True, True, False])):
        path = tmp_path / "evals" / f"{key}.json"
        res = json.loads(path.read_text())
        for i, rec in enumerate(res["per_task"].values()):
            rec["process"] = {"valid_calls": asked[i], "gold_tools_called": None, "asked_before_first_write": asked[i],
                              "exact_args": [i, 3], "answer_values": False, "success": rec["independent"]}
        res["teacher_forced"] = {"turns": [{"task": "t0", "turn": 0, "action_type": True, "tool": True,
                                            "arguments": False, "asks_when_needed": None}]}
        path.write_text(json.dumps(res))
    (tmp_path / "ceiling").mkdir()
    (tmp_path / "ceiling" / "heldout.json").write_text(json.dumps(
        {"k": 4, "n": 4, "rate": 1.0, "ci95": [0.51, 1.0], "limits": {"budget": 1}, "failures": {}}))
    bench.summarize(tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    sft = res["process"]["sft@heldout"]
    assert sft["on_policy"]["asked_before_first_write"]["k"] == 3 and sft["on_policy"]["gold_tools_called"]["n"] == 0
    assert (sft["on_policy"]["exact_args"]["k"], sft["on_policy"]["exact_args"]["n"]) == (6, 12)  # pooled over calls
    assert sft["teacher_forced"]["arguments"]["rate"] == 0.0 and sft["teacher_forced"]["tool"]["rate"] == 1.0
    asked = res["process_comparisons"]["sft vs base @heldout (seeds pooled)"]["asked_before_first_write"]
    assert (asked["pairs"], asked["only_a"], asked["only_b"]) == (4, 3, 0)
    md = (tmp_path / "results.md").read_text()
    assert "**oracle ceiling** (same harness and limits) | 100.0% (4/4)" in md
    assert "on-policy asked_before_first_write" in md and "75.0% (3/4)" in md
