"""Shared fixtures. Tests import only ``synthagent.*`` (never the top-level ``core``/``plugins`` folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from synthagent.core.registry import Plugins, load_plugins

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugins() -> Plugins:
    """A fresh plugin manager with the built-ins only (third-party autoload off)."""
    return load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"})


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@pytest.fixture
def synth() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the ``synth`` CLI in a subprocess: ``synth(args, env=..., cwd=...)``."""

    def run(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True,
            env=_env(env), cwd=cwd, timeout=timeout,
        )

    return run


def synth_popen(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start the CLI without waiting (for kill tests)."""
    return subprocess.Popen([sys.executable, "-m", "synthagent.core", *args], env=_env(env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class DefaultRun:
    """The embedded default run (``synth run --out DIR --name base``), made once per test session."""

    def __init__(self, root: Path, seconds: float, result: subprocess.CompletedProcess[str]) -> None:
        self.root = root
        self.seconds = seconds
        self.result = result


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> DefaultRun:
    import time

    out = tmp_path_factory.mktemp("default-run")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "synthagent.core", "run", "--out", str(out), "--name", "base"],
                            capture_output=True, text=True, env=_env(), timeout=600)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"\n[default run] synth run with the embedded default took {seconds:.1f} s wall")
    return DefaultRun(out / "base", seconds, result)


FILES = ("tasks.jsonl", "trajectories.jsonl", "rubrics.jsonl", "scores.jsonl")


def read_records(root: Path) -> dict[str, dict[str, dict]]:
    """file -> id -> record, with wall-clock fields removed."""
    out: dict[str, dict[str, dict]] = {}
    for name in FILES:
        rows: dict[str, dict] = {}
        lines = (root / name).read_text().splitlines()
        for line in lines:
            rec = json.loads(line)
            rec.pop("timings", None)
            assert rec["id"] not in rows, f"duplicate id {rec['id']} in {name}"
            rows[rec["id"]] = rec
        assert len(rows) == len(lines)
        out[name] = rows
    return out


@pytest.fixture
def records() -> Callable[[Path], dict[str, dict[str, dict]]]:
    """``records(run_dir)``: file -> id -> record (timings stripped; duplicate ids fail)."""
    return read_records


@pytest.fixture
def popen_synth() -> Callable[..., subprocess.Popen[bytes]]:
    """Start the CLI without waiting (for kill tests)."""
    return synth_popen
