"""The pipeline through the Python API: failure isolation and infrastructure errors never scored as 0."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from synthagent.core.config import load_config
from synthagent.core.pipeline import Pipeline
from synthagent.core.registry import load_plugins

FLAKY = """
from synthagent.core.hookspecs import hookimpl
from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator

class Flaky(SQLiteToolSimulator):
    calls = 0
    async def start(self, task, seed):
        Flaky.calls += 1
        if Flaky.calls == 3:
            raise ConnectionResetError("sandbox host went away")
        return await super().start(task, seed)

@hookimpl
def synth_register_tool_simulators(register):
    register("flaky", Flaky)
"""


def test_one_failing_rollout_is_recorded_and_the_rest_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tp_flaky.py").write_text(textwrap.dedent(FLAKY))
    monkeypatch.syspath_prepend(str(tmp_path))
    # retries=0: the failure is recorded (with the default retry it would run again on a fresh environment)
    config = load_config(None, ["tools=flaky", "tasks=12", "simulate.concurrency=4", "simulate.retries=0"])
    plugins = load_plugins(["tp_flaky"], environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    pipeline = Pipeline(config, plugins)
    pipeline.open_store(tmp_path / "runs" / "flaky", resume=False)
    summary = asyncio.run(pipeline.run())
    assert summary["trajectories"] == 12 and summary["infra_errors"] == 1
    scores = [json.loads(line) for line in (tmp_path / "runs/flaky/scores.jsonl").read_text().splitlines()]
    failed = [s for s in scores if s["status"] == "infra_error"]
    assert len(failed) == 1 and failed[0]["total"] is None
    assert all(s["total"] == 1.0 for s in scores if s["status"] == "ok")
    sft = (tmp_path / "runs/flaky/exports/sft.jsonl").read_text().splitlines()
    assert len(sft) == 11
    manifest = json.loads((tmp_path / "runs/flaky/manifest.json").read_text())
    assert manifest["stages"]["simulate"]["rollout_exceptions"] == {"ConnectionResetError": 1}


def test_summary_counts_by_domain_and_termination(tmp_path: Path) -> None:
    config = load_config(None, ["tasks=24", "plugins.oracle.corruption=nothing",
                                "plugins.workflow-rubric.demonstrator=oracle"])
    pipeline = Pipeline(config, load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    pipeline.open_store(tmp_path / "nothing", resume=False)
    summary = asyncio.run(pipeline.run())
    assert summary["success_rate"] == 0.0 and summary["score_mean"] == 0.0
    assert summary["exports"]["sft"] == 0 and summary["exports"]["rl"] == 24
    assert sum(summary["domains"].values()) == 24
    assert summary["terminations"] == {"user_stop": 24}
