"""SIGKILL a run at random moments across every stage, resume it each time, and compare with an uninterrupted run.

    python benchmarks/bench_kill_resume.py [--kills 20] [--executors local,process] [--tasks 40] [--seed 0]

For each executor: one uninterrupted run (the reference), then a run that is started, SIGKILLed after a random
delay (uniform over the reference's wall time, so kills land in every stage), resumed with ``--resume`` and
killed again until ``--kills`` kills have landed, and finally resumed to completion. A resume that finishes the
run before its kill ends that run (it is compared) and a new one is started. The records (tasks, trajectories,
demonstrations, rubrics, scores and the SFT/RL exports; wall-clock ``timings`` removed) must equal the
reference's, with no duplicate id. ``simulate.concurrency`` is small so stages last long enough to be hit.
Prints a table: kills by the stage that was running, and whether the records are identical. Exit code 1 when
any executor's records differ. Results go in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

FILES = ("tasks.jsonl", "trajectories.jsonl", "demonstrations.jsonl", "rubrics.jsonl", "scores.jsonl",
         "exports/sft.jsonl", "exports/rl.jsonl")


def read_records(root: Path) -> dict[str, Any]:
    """file -> id (or row number for exports) -> record without ``timings``; raises on a duplicate id."""
    out: dict[str, Any] = {}
    for name in FILES:
        path = root / name
        rows: dict[str, Any] = {}
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for i, line in enumerate(lines):
            rec = json.loads(line)
            if isinstance(rec, dict):
                rec.pop("timings", None)
            key = rec.get("id", f"row{i}") if isinstance(rec, dict) and name.count("/") == 0 else f"row{i}"
            if key in rows:
                raise AssertionError(f"duplicate id {key} in {name}")
            rows[key] = rec
        out[name] = rows
    return out


def _cmd(out: Path, name: str, tasks: int, seed: int, executor: str, concurrency: int, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(out), "--name", name,
            "--set", f"simulate.concurrency={concurrency}"]
    if resume:
        return [*args, "--resume"]
    return [*args, "--tasks", str(tasks), "--seed", str(seed), "--set", f"executor={executor}",
            "--set", "plugins.process.workers=2"]


def _running_stage(root: Path) -> str:
    try:
        stages = json.loads((root / "manifest.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return "startup"
    running = [s for s, info in stages.items() if info.get("status") == "running"]
    if running:
        return running[0]
    done = [i.get("status") == "done" for i in stages.values()]
    if done and all(done):
        return "finishing"  # every stage done: writing the summary, closing, exiting
    return "between" if any(done) else "startup"


def kill_resume(executor: str, kills: int, *, tasks: int = 40, seed: int = 0, concurrency: int = 1,
                out: Path, rng: random.Random) -> dict[str, Any]:
    """Run the reference and the killed-and-resumed run for ``executor``; return the comparison."""
    start = time.perf_counter()
    ref = subprocess.run(_cmd(out, f"{executor}-ref", tasks, seed, executor, concurrency, False),
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if ref.returncode != 0:
        raise SystemExit(f"reference run failed: {ref.stderr[-2000:]}")
    stages: Counter[str] = Counter()
    finished_early, rounds, problems = 0, 0, []
    name, root = f"{executor}-killed-0", out / f"{executor}-killed-0"

    def finish_round() -> None:
        """Resume the current run to completion and compare it with the reference."""
        final = subprocess.run(_cmd(out, name, tasks, seed, executor, concurrency, root.exists()),
                               capture_output=True, text=True)
        if final.returncode != 0:
            problems.append(f"final resume of {name} exited {final.returncode}: {final.stderr[-500:]}")
            return
        try:
            if read_records(root) != read_records(out / f"{executor}-ref"):
                problems.append(f"{name}: records differ")
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")

    attempts = 0
    while sum(stages.values()) < kills and attempts < 4 * kills:
        attempts += 1
        proc = subprocess.Popen(_cmd(out, name, tasks, seed, executor, concurrency, root.exists()),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + rng.uniform(0.2, wall)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is not None:  # this resume finished the run: check it, then start a new one
            finished_early += 1
            err = proc.stderr.read().decode() if proc.stderr else ""
            if proc.returncode != 0:
                problems.append(f"resume of {name} exited {proc.returncode}: {err[-500:]}")
            finish_round()
            rounds += 1
            name, root = f"{executor}-killed-{rounds}", out / f"{executor}-killed-{rounds}"
            continue
        stages[_running_stage(root)] += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    finish_round()
    rounds += 1
    identical, problem = not problems, "; ".join(problems)[:500]
    return {"executor": executor, "kills": sum(stages.values()), "finished_before_kill": finished_early,
            "runs_compared": rounds,
            "stages": dict(stages), "reference_wall_s": round(wall, 2), "identical": identical, "problem": problem,
            "records": {k: len(v) for k, v in read_records(out / f"{executor}-ref").items()}}


def main() -> None:
    """Parse the options, run every executor, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per executor")
    parser.add_argument("--executors", default="local,process")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1, help="simulate.concurrency (small: long stages)")
    parser.add_argument("--rng", type=int, default=1, help="seed of the kill moments")
    args = parser.parse_args()
    rng = random.Random(args.rng)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for executor in args.executors.split(","):
            results.append(kill_resume(executor, args.kills, tasks=args.tasks, seed=args.seed,
                                       concurrency=args.concurrency, out=Path(tmp), rng=rng))
            print(json.dumps(results[-1]), flush=True)
    stage_names = ("startup", "generate", "simulate", "rubric", "score", "export", "between", "finishing")
    print(f"\n| executor | kills | {' | '.join(stage_names)} | runs compared | records | identical |")
    print("|---" * (len(stage_names) + 5) + "|")
    for r in results:
        counts = " | ".join(str(r["stages"].get(s, 0)) for s in stage_names)
        records = ", ".join(f"{k.split('/')[-1].split('.')[0]}={v}" for k, v in r["records"].items())
        print(f"| {r['executor']} | {r['kills']} | {counts} | {r['runs_compared']} | {records} | "
              f"{'yes' if r['identical'] else 'NO: ' + r['problem']} |")
    sys.exit(0 if all(r["identical"] for r in results) else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
