"""Time the embedded default run (`synth run`) end to end and per stage, in fresh processes.

    python benchmarks/bench_default_run.py [--repeats 3] [--tasks 200]

Prints the wall time of each repeat (process start-up included), the per-stage times from the manifest, and
records per second. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    walls: list[float] = []
    stages: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "synthagent.core", "run", "-q", "--out", tmp, "--name", f"r{i}",
                            "--tasks", str(args.tasks)], check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            walls.append(time.perf_counter() - start)
            manifest = json.loads((Path(tmp) / f"r{i}" / "manifest.json").read_text())
            for stage, seconds in manifest["timings"].items():
                stages.setdefault(stage, []).append(seconds)
            summary = json.loads((Path(tmp) / f"r{i}" / "summary.json").read_text())
    print(f"default run, {args.tasks} tasks, {args.repeats} repeats, {os.cpu_count()} CPUs")
    print(f"wall (process start-up included): median {statistics.median(walls):.2f} s  "
          f"min {min(walls):.2f} s  max {max(walls):.2f} s")
    for stage, values in stages.items():
        print(f"  {stage:<9} median {statistics.median(values):.3f} s")
    sim = statistics.median(stages["simulate"])
    print(f"rollouts/s in simulate: {summary['trajectories'] / sim:.0f}; "
          f"share of wall spent in stages: {sum(statistics.median(v) for v in stages.values()) / statistics.median(walls):.2f}")


if __name__ == "__main__":
    main()
