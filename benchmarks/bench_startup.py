"""Start-up time of the ``synth`` command line, side by side with a bare interpreter, in fresh processes.

    python benchmarks/bench_startup.py [--runs 7]

Measures the median (and min) wall time of N runs each of: ``python -c pass``, ``python -c "import
synthagent.core.cli"``, ``synth --help``, ``synth plugins --json``, and the time from starting ``synth run``
until its run directory exists on disk (``manifest.json`` polled in a temporary ``--out``; the run is killed
once it appears). Prints a table with each median's ratio to ``python -c pass``. Targets (issue 11, on 2
cores): ``synth --help`` < 0.5 s, ``synth plugins`` < 1 s, a run directory within 1.5 s. Results go in
docs/performance.md ("Start-up").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["main", "measure_command", "measure_run_directory"]


def _synth() -> list[str]:
    """The ``synth`` console script next to this interpreter, else ``python -m synthagent.core``."""
    script = Path(sys.executable).parent / "synth"
    return [str(script)] if script.exists() else [sys.executable, "-m", "synthagent.core"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    env["SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # built-ins only: the numbers do not depend on what else is installed
    return env


def measure_command(argv: list[str]) -> float:
    """Wall seconds of one run of ``argv`` (output discarded); a failing command stops the benchmark."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    return time.perf_counter() - start


def measure_run_directory(timeout: float = 120.0) -> float:
    """Seconds from starting ``synth run`` until ``OUT/NAME/manifest.json`` exists; the run is then killed."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "r" / "manifest.json"
        start = time.perf_counter()
        proc = subprocess.Popen([*_synth(), "run", "-q", "--out", tmp, "--name", "r", "--tasks", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        try:
            while not manifest.exists():
                if proc.poll() is not None and not manifest.exists():
                    raise SystemExit(f"synth run exited with {proc.returncode} before writing {manifest}")
                if time.perf_counter() - start > timeout:
                    raise SystemExit(f"no run directory after {timeout} s")
                time.sleep(0.005)
            return time.perf_counter() - start
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def main() -> None:
    """Run every measurement ``--runs`` times, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs of each measurement (median reported)")
    args = parser.parse_args()
    synth = _synth()
    cases: list[tuple[str, Callable[[], float]]] = [
        ("python -c pass", lambda: measure_command([sys.executable, "-c", "pass"])),
        ("python -c 'import synthagent.core.cli'", lambda: measure_command([sys.executable, "-c", "import synthagent.core.cli"])),
        ("synth --help", lambda: measure_command([*synth, "--help"])),
        ("synth plugins --json", lambda: measure_command([*synth, "plugins", "--json"])),
        ("synth run -> run directory on disk", measure_run_directory),
    ]
    for _, fn in cases:  # warm the file cache once so the first case is not penalised
        fn()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(args.runs):  # interleaved: a load spike on a shared machine hits every case alike
        for name, fn in cases:
            times[name].append(fn())
    base = statistics.median(times["python -c pass"])
    print(f"start-up, median of {args.runs} runs, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'what':<40} {'median s':>9} {'min s':>7} {'x python -c pass':>17}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<40} {median:>9.3f} {min(values):>7.3f} {median / base:>17.1f}")


if __name__ == "__main__":
    main()
