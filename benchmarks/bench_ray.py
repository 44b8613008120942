"""Ray: the same synthesis on 1 and 2 Ray workers (and on the local executor), with the speed-up.

    python benchmarks/bench_ray.py [--tasks 400] [--samples 2] [--repeats 3] [--cpus 2] [--address ADDR]

Starts (or, with ``--address``, joins) a Ray cluster once, outside the timings, then runs the embedded offline
synthesis (generate -> simulate -> rubric -> score -> export, the oracle teacher, real SQLite) into fresh run
directories with ``executor=local``, ``executor=ray`` and ``ray.workers=1``, and ``ray.workers=2``,
interleaved ``--repeats`` times. Prints the medians of the simulate + score stages (the stages the executor
spreads; actor start-up and component building included) and of the whole pipeline, the speed-up of 2 workers
over 1, and checks that every variant wrote the same records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run(root: Path, overrides: list[str]) -> tuple[float, dict[str, float]]:
    from synthagent.core.config import load_config
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.registry import load_plugins

    pipeline = Pipeline(load_config(None, overrides), load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    pipeline.open_store(root, resume=False)
    start = time.perf_counter()
    asyncio.run(pipeline.run())
    wall = time.perf_counter() - start
    return wall, json.loads((root / "manifest.json").read_text())["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--address", default="")
    args = parser.parse_args()
    import ray

    from conftest import read_records

    start = time.perf_counter()
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - start
    common = [f"tasks={args.tasks}", f"simulate.samples={args.samples}", "seed=3"]
    variants = {"local (driver process)": ["executor=local"], "ray, 1 worker": ["executor=ray", "ray.workers=1"],
                "ray, 2 workers": ["executor=ray", "ray.workers=2"]}
    stage_s: dict[str, list[float]] = {v: [] for v in variants}
    wall_s: dict[str, list[float]] = {v: [] for v in variants}
    records: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                for i, (name, extra) in enumerate(variants.items()):
                    root = Path(tmp) / f"r{r}-{i}"
                    wall, timings = run(root, [*common, *extra])
                    stage_s[name].append(timings["simulate"] + timings["score"])
                    wall_s[name].append(wall)
                    records.setdefault(name, read_records(root))
    finally:
        ray.shutdown()
    same = all(rec == records["local (driver process)"] for rec in records.values())
    rollouts = args.tasks * args.samples
    print(f"{args.tasks} tasks x {args.samples} samples = {rollouts} rollouts (+ {rollouts} scores); Ray cluster "
          f"{args.address or f'local, {args.cpus} CPUs'} (start-up {startup:.1f} s, not counted); {os.cpu_count()} "
          f"CPUs on this machine; median of {args.repeats}, interleaved")
    print(f"{'variant':<24} {'simulate+score s':>17} {'rollouts/s':>11} {'pipeline s':>11}")
    for name in variants:
        s = statistics.median(stage_s[name])
        print(f"{name:<24} {s:>17.2f} {rollouts / s:>11.1f} {statistics.median(wall_s[name]):>11.2f}")
    one, two = statistics.median(stage_s["ray, 1 worker"]), statistics.median(stage_s["ray, 2 workers"])
    print(f"speed-up of 2 Ray workers over 1 (simulate+score): {one / two:.2f}x; records identical across "
          f"variants: {same}")
    print("spread (simulate+score s): " + "; ".join(f"{k} {min(v):.2f}-{max(v):.2f}" for k, v in stage_s.items()))


if __name__ == "__main__":
    main()
