"""Runs that cannot give anything say so (issue 24, points 3 and 5), through the real CLI.

* a run that keeps 0 tasks exits 3 with the top drop reasons and their counts (it used to exit 0, or 1 blaming
  "infrastructure reasons");
* a partial drop still exits 0, and the summary and run.log name the drop reasons;
* a model server answering HTTP 401 (a real loopback server) stops the run at once, exit 4, "authentication
  failed (HTTP 401) at <redacted url> - check llm.api_key_env", no retry and no infrastructure record;
* a plugin bug in a rollout exits 1 naming the plugin, with its traceback in run.log;
* impossible combinations exit 2 before the run directory exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from synthagent.core.testing import ScriptedOpenAIServer

pytestmark = pytest.mark.slow

WIDE = {"COLUMNS": "250"}  # the summary table on one line per row


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_run_that_keeps_no_task_exits_3_with_the_top_drop_reasons(synth, tmp_path: Path) -> None:
    """A do-nothing demonstrator: every rubric is dropped because its demonstrations cover nothing. Before:
    exit 0 with an empty SFT export."""
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "lazy", "--tasks", "3",
                    "--set", "plugins.workflow-rubric.demonstrator=oracle",
                    "--set", 'plugins.workflow-rubric.demonstrator_options={corruption="nothing"}'])
    assert result.returncode == 3, result.stderr
    line = error_line(result)
    assert "the run kept 0 of 3 tasks; top drop reasons: rubric: " in line, line
    summary = json.loads((tmp_path / "lazy" / "summary.json").read_text())
    top, count = max(summary["rubrics_dropped"].items(), key=lambda kv: kv[1])
    assert f"rubric: {top} ({count})" in line
    assert summary["exports"]["sft"] == 0 and summary["funnel"]["kept"] == 0
    assert "Traceback" not in result.stderr


def test_a_policy_below_min_score_everywhere_exits_3_naming_the_export_rejections(synth, tmp_path: Path) -> None:
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "idle", "--tasks", "3",
                    "--set", "plugins.oracle.corruption=nothing",
                    "--set", "plugins.workflow-rubric.demonstrator=oracle"])  # a clean teacher for the rubrics
    assert result.returncode == 3, result.stderr
    line = error_line(result)
    assert "the run kept 0 of 3 tasks; top drop reasons: export: below_min_score (3)" in line, line


def test_a_partial_drop_exits_0_and_the_summary_names_the_reasons(synth, tmp_path: Path) -> None:
    result = synth(["run", "--out", str(tmp_path), "--name", "half", "--tasks", "6",
                    "--set", "plugins.oracle.mistakes=0.5",
                    "--set", "plugins.workflow-rubric.demonstrator=oracle"], env=WIDE)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "half" / "summary.json").read_text())
    kept = summary["funnel"]["kept"]
    assert 0 < kept < 6, summary["funnel"]
    row = next(line for line in result.stdout.splitlines() if "drop reasons" in line)
    assert "export: below_min_score (" in row, row
    log = (tmp_path / "half" / "run.log").read_text()
    assert f"kept {kept} of 6 tasks; top drop reasons: export: below_min_score (" in log


def test_http_401_stops_the_run_at_once_as_an_authentication_error(synth, tmp_path: Path) -> None:
    """Before: every rollout and demonstration was an infra_error (teacher_unavailable), each retried, and the
    run blamed the model server; a resume retried them all again."""
    with ScriptedOpenAIServer(faults={"401": 1.0}) as server:
        url = server.base_url.replace("http://", "http://user:sk-SECRET-in-url@")
        start = time.monotonic()
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "badkey", "--tasks", "3",
                        "--set", "llm.backend=openai", "--set", f"llm.base_url={url}", "--set", "llm.model=m",
                        "--set", "plugins.openai.max_retries=6", "--set", "simulate.retries=3"],
                       env={"OPENAI_API_KEY": "sk-wrong"})
        seconds = time.monotonic() - start
        served = sum(server.served.values())
    assert result.returncode == 4, result.stderr
    line = error_line(result)
    assert "authentication failed (HTTP 401) at http://user:***@127.0.0.1:" in line, line
    assert "/v1/chat/completions - check llm.api_key_env (the key in $OPENAI_API_KEY was refused)" in line
    assert "SECRET" not in result.stderr and "sk-wrong" not in result.stderr
    assert "teacher_unavailable" not in result.stderr and "infrastructure" not in line
    assert served <= 3, served  # not retried: at most one request per rollout in flight, then the run stopped
    assert seconds < 60
    root = tmp_path / "badkey"
    trajectories = root / "trajectories.jsonl"
    assert not trajectories.exists() or trajectories.read_text() == ""  # no infra_error for --resume to retry
    assert "authentication failed (HTTP 401)" in (root / "run.log").read_text()


def test_http_401_while_the_teacher_generates_is_an_authentication_error(synth, tmp_path: Path) -> None:
    """persona-fuzzy asks the teacher for JSON (``ask_json``): a refused key there was counted as
    ``toolset_teacher_unavailable`` for every slot."""
    with ScriptedOpenAIServer(faults={"401": 1.0}) as server:
        result = synth(["run", "-q", "--out", str(tmp_path), "--name", "gen401", "--tasks", "3",
                        "--set", "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
                        "--set", "llm.backend=openai", "--set", f"llm.base_url={server.base_url}",
                        "--set", "llm.model=m"], env={"OPENAI_API_KEY": "sk-wrong"})
        served = sum(server.served.values())
    assert result.returncode == 4, result.stderr
    line = error_line(result)
    assert "authentication failed (HTTP 401)" in line and "teacher_unavailable" not in result.stderr, line
    assert served <= 3, served  # the first refusal stops generation


def test_a_plugin_bug_exits_1_naming_the_plugin_with_its_traceback_in_run_log(synth, tmp_path: Path) -> None:
    (tmp_path / "tp_loud_user.py").write_text(
        "from synthagent.core.hookspecs import hookimpl\n"
        "class Session:\n"
        "    async def respond(self, messages):\n"
        "        return messages.reply_text  # a tuple has no such attribute: a plugin bug\n"
        "class BuggyUser:\n"
        "    async def start(self, task, seed):\n"
        "        return Session()\n"
        "@hookimpl\n"
        "def synth_register_user_simulators(register):\n"
        "    register('buggy-user', BuggyUser)\n")
    out = tmp_path / "runs"
    result = synth(["run", "-q", "--out", str(out), "--name", "bug", "--tasks", "2", "--plugin", "tp_loud_user",
                    "--set", "user=buggy-user"], env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert "user 'buggy-user' (plugin 'tp_loud_user') raised AttributeError" in line, line
    assert "not an infrastructure failure" in line
    log = (out / "bug" / "run.log").read_text()
    assert "return messages.reply_text" in log and 'tp_loud_user.py", line 4' in log


@pytest.mark.parametrize("extra,needle", [
    (["--set", "user=llm"], "llm.backend='oracle' cannot run with user='llm': the oracle acts only as the agent"),
    (["--set", "generator=persona-fuzzy", "--set", "llm.backend=openai", "--set", "llm.base_url=http://127.0.0.1:9/v1",
      "--set", "llm.model=m"], "generator='persona-fuzzy' cannot run with tools='sqlite'"),
])
def test_impossible_combinations_exit_2_before_the_run_directory_exists(synth, tmp_path: Path, extra: list[str],
                                                                        needle: str) -> None:
    out = tmp_path / "runs"
    result = synth(["run", "--out", str(out), "--name", "x", *extra])
    assert result.returncode == 2, result.stderr
    assert needle in error_line(result)
    assert not out.exists() or list(out.iterdir()) == []


def test_an_unknown_plugin_table_in_a_config_file_exits_2(synth, tmp_path: Path) -> None:
    cfg = tmp_path / "synth.toml"
    cfg.write_text("[plugins.offline-domain]\nmax_hidden = 2\n")
    out = tmp_path / "runs"
    result = synth(["run", "--config", str(cfg), "--out", str(out), "--name", "x"])
    assert result.returncode == 2, result.stderr
    assert "unknown plugin table 'offline-domain'; did you mean 'offline-domains'?" in error_line(result)
    assert not out.exists() or list(out.iterdir()) == []


def test_a_nan_sqlite_timeout_exits_2(synth, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    result = synth(["run", "--out", str(out), "--name", "x", "--set", "plugins.sqlite.tools.timeout_s=nan"])
    assert result.returncode == 2, result.stderr
    assert ("plugin option plugins.sqlite.tools.timeout_s: must be a positive finite number, got nan"
            in error_line(result))
