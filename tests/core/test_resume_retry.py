"""``--resume`` retries infrastructure failures (issue 14, item 10), through the Python API on real run stores:
the failed records leave their files, the stages that made them and every later one reopen, and the resumed
run writes the same records an uninterrupted run does (no duplicate id)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from synthagent.core.config import load_config
from synthagent.core.pipeline import Pipeline
from synthagent.core.registry import load_plugins
from synthagent.core.resume import retry_infra_failures
from synthagent.core.store import RunStore

FILES = ("tasks.jsonl", "trajectories.jsonl", "demonstrations.jsonl", "rubrics.jsonl", "scores.jsonl")


def _run(root: Path, *, resume: bool) -> dict:
    config = load_config(None, ["tasks=3"])
    pipeline = Pipeline(config, load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    pipeline.open_store(root, resume=resume)
    return asyncio.run(pipeline.run())


def _records(root: Path) -> dict[str, dict[str, dict]]:
    out = {}
    for name in FILES:
        rows = [json.loads(line) for line in (root / name).read_text().splitlines()]
        for row in rows:
            row.pop("timings", None)
        out[name] = {r["id"]: r for r in rows}
        assert len(out[name]) == len(rows), f"duplicate id in {name}"
    return out


def _edit(path: Path, index: int, **fields: object) -> str:
    rows = path.read_text().splitlines()
    row = json.loads(rows[index])
    row.update(fields)
    rows[index] = json.dumps(row)
    path.write_text("\n".join(rows) + "\n")
    return str(row["id"])


def test_infra_failures_are_redone_on_resume_and_merit_failures_kept(tmp_path: Path) -> None:
    _run(tmp_path / "ok", resume=False)
    expected = _records(tmp_path / "ok")
    _run(tmp_path / "r", resume=False)
    root = tmp_path / "r"
    # as if the server had been down: one rollout, one demonstration of another task, one rubric
    failed = _edit(root / "trajectories.jsonl", 0, error="LLMUnavailableError: down", termination="infra_error",
                   messages=[], turns=0)
    demos = [json.loads(line) for line in (root / "demonstrations.jsonl").read_text().splitlines()]
    demo_index = next(i for i, d in enumerate(demos) if d["id"] != failed and d["sample"] > 0)
    _edit(root / "demonstrations.jsonl", demo_index, error="LLMUnavailableError: down", termination="infra_error")
    rubrics = [json.loads(line) for line in (root / "rubrics.jsonl").read_text().splitlines()]
    untouched = {demos[demo_index]["task_id"], expected["trajectories.jsonl"][failed]["task_id"]}
    rubric_index = next(i for i, r in enumerate(rubrics) if r["task_id"] not in untouched)
    _edit(root / "rubrics.jsonl", rubric_index, dropped="teacher_unavailable: down")

    store = RunStore.open(root)
    try:
        removed = retry_infra_failures(store, target_tasks=3, uses_demonstrations=True)
        stages = {k: v["status"] for k, v in store.manifest["stages"].items()}
    finally:
        store.close()
    # the failed rollout and its score; the demonstration and its task's rubric and scores; the dropped rubric
    rubric_task = rubrics[rubric_index]["task_id"]
    assert removed["trajectories"] == 1 and removed["demonstrations"] == 1
    assert removed["rubrics"] == len({demos[demo_index]["task_id"], rubric_task})
    assert removed["scores"] == len(untouched | {rubric_task})  # one sample per task: one score each
    assert stages == {"generate": "done", "simulate": "pending", "rubric": "pending", "score": "pending",
                      "export": "pending"}
    summary = _run(root, resume=True)
    assert _records(root) == expected  # redone, identical to the uninterrupted run, no duplicate id
    assert summary["infra_errors"] == 0 and summary["rubrics_dropped"] == {}
    assert len((root / "exports" / "sft.jsonl").read_text().splitlines()) == 3


def test_a_merit_failure_is_kept_and_a_short_generation_reopens_only_for_infrastructure(tmp_path: Path) -> None:
    _run(tmp_path / "r", resume=False)
    root = tmp_path / "r"
    _edit(root / "rubrics.jsonl", 0, dropped="too_few_successful_demonstrations: 0 of 3")
    store = RunStore.open(root)
    try:
        assert retry_infra_failures(store, target_tasks=3, uses_demonstrations=True) == {}  # kept on its merits
        assert retry_infra_failures(store, target_tasks=5, uses_demonstrations=True) == {}  # short, no infra drop
        store.manifest["stages"]["generate"]["dropped"] = {"slot_teacher_unavailable": 2}
        assert retry_infra_failures(store, target_tasks=5, uses_demonstrations=True) == {"generate": 1}
        assert all(v["status"] == "pending" for v in store.manifest["stages"].values())
    finally:
        store.close()
    saved = json.loads((root / "manifest.json").read_text())
    assert saved["stages"]["generate"]["reopened"] == "retrying infrastructure failures"
