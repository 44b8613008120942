"""Bad input: one clear line on stderr, exit code 2, and no partial or corrupted run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def check_usage_error(result, needle: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert needle in lines[0], lines[0]


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("extra,needle", [
    (["--set", "generator=persona-fuzzzy"], "unknown generator 'persona-fuzzzy'; known: graph-domains, offline-domains, persona-fuzzy. Did you mean 'persona-fuzzy'?"),
    (["--set", "llm.backend=nope"], "unknown llm 'nope'; known: openai, oracle"),
    (["--set", "taks=3"], "Did you mean 'tasks'"),
    (["--set", "tasks=lots"], "'tasks' (from --set tasks=lots) must be an integer"),
    (["--set", "simulate.max_turns=-1"], "must be positive"),
    (["--set", "plugins.offline-domains.domain=[\"x\"]"], "unknown option 'domain' for generator 'offline-domains'"),
    (["--set", "plugins.offline-domains.domains=[\"atlantis\"]"], "unknown domain(s) ['atlantis']"),
    (["--plugin", "tp_missing_module"], "plugin 'tp_missing_module' failed to import"),
])
def test_bad_arguments(synth, tmp_path: Path, extra: list[str], needle: str) -> None:
    out = tmp_path / "runs"
    check_usage_error(synth(["run", "--out", str(out), "--name", "x", *extra]), needle)
    assert listing(out) == []


def test_plugin_that_raises_on_import(synth, tmp_path: Path) -> None:
    (tmp_path / "tp_explodes.py").write_text("raise ImportError('needs libfoo 2.0')\n")
    out = tmp_path / "runs"
    result = synth(["run", "--out", str(out), "--plugin", "tp_explodes"], env={"PYTHONPATH": str(tmp_path)})
    check_usage_error(result, "plugin 'tp_explodes' failed to import (tp_explodes): ImportError: needs libfoo 2.0")
    assert listing(out) == []


def test_malformed_toml(synth, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("seed = \n")
    check_usage_error(synth(["run", "--config", str(cfg), "--out", str(tmp_path / "runs")]), "malformed TOML")
    assert listing(tmp_path / "runs") == []


def test_unknown_key_in_config_file(synth, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[simulate]\nturns = 3\n")
    check_usage_error(synth(["run", "--config", str(cfg), "--out", str(tmp_path / "runs")]), "unknown config key 'simulate.turns'")
    assert listing(tmp_path / "runs") == []


def test_existing_directory_without_resume_is_untouched(synth, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert synth(["run", "-q", "--out", str(out), "--name", "r", "--tasks", "8"]).returncode == 0
    before = {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()}
    check_usage_error(synth(["run", "--out", str(out), "--name", "r", "--tasks", "8"]), "already exists; pass --resume")
    assert {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()} == before


def test_resume_with_a_different_config_is_refused(synth, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert synth(["run", "-q", "--out", str(out), "--name", "r", "--tasks", "8"]).returncode == 0
    manifest = (out / "r/manifest.json").read_text()
    check_usage_error(synth(["run", "--out", str(out), "--name", "r", "--tasks", "9", "--resume"]),
                      "different configuration")
    assert (out / "r/manifest.json").read_text() == manifest


def test_unwritable_output_directory(synth, tmp_path: Path) -> None:
    check_usage_error(synth(["run", "--out", "/proc/synthagent-runs"]), "/proc/synthagent-runs")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    check_usage_error(synth(["run", "--out", str(blocker / "runs")]), "is not a directory")


def test_resume_without_a_run(synth, tmp_path: Path) -> None:
    check_usage_error(synth(["run", "--out", str(tmp_path), "--resume"]), "no run directory")
    assert json.dumps(listing(tmp_path)) == "[]"
