"""The LLM path against the scripted teacher: the funnel (with and without noise) and the reward table.

    python benchmarks/bench_llm_world.py --tasks 50 --noise 0 0.2 --reward-tasks 40

Prints JSON: per noise level the funnel, wall time and exported tasks; per corruption the mean reward, the
teacher's lead and the smallest per-task gap (docs/rewards.md, docs/llm.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthagent.plugins.backends.openai import OpenAIBackend
from synthagent.plugins.backends.scripted_teacher import CORRUPTIONS, teacher_server

LLM_PATH = ["--set", "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
            "--set", "llm.backend=openai", "--set", "llm.model=teacher"]


def run(out: Path, name: str, tasks: int, base_url: str) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(out), "--name", name,
                           "--tasks", str(tasks), *LLM_PATH, "--set", f"llm.base_url={base_url}"],
                          capture_output=True, text=True, env={"OPENAI_API_KEY": "sk-bench", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    summary = json.loads((out / name / "summary.json").read_text())
    return {"wall_s": round(time.monotonic() - t0, 1), "funnel": summary["funnel"],
            "guards": summary["stats"].get("user", {}), "generation": summary["dropped"]}


async def rewards(root: Path, base_url: str) -> dict:
    from synthagent.core.runtime import Runtime
    from synthagent.core.store import RunStore

    store = RunStore.open(root)
    tasks, rubrics = store.tasks.load(), {r.task_id: r for r in store.rubrics}
    store.close()
    runtime = Runtime.from_run_dir(root)
    runtime.setup(root)
    scores: dict[str, dict[str, float]] = {}
    try:
        for mode in ("teacher", *CORRUPTIONS):
            policy = OpenAIBackend(model="teacher" if mode == "teacher" else f"teacher+{mode}", base_url=base_url)
            for task in tasks:
                if not rubrics[task.id].dropped:
                    traj = await runtime.rollout(task, 7, policy)
                    scores.setdefault(mode, {})[task.id] = (await runtime.score(task, rubrics[task.id], traj)).total
    finally:
        await runtime.aclose()
    teacher = scores["teacher"]
    out = {"teacher": {"mean": round(statistics.fmean(teacher.values()), 3), "n": len(teacher)}}
    for mode in CORRUPTIONS:
        s = scores[mode]
        out[mode] = {"mean": round(statistics.fmean(s.values()), 3),
                     "lead": round(statistics.fmean(teacher.values()) - statistics.fmean(s.values()), 3),
                     "min_gap": round(min(teacher[t] - s[t] for t in s), 3), "n": len(s)}
    return out


def main() -> None:
    """Run the benchmark and print its JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2])
    ap.add_argument("--reward-tasks", type=int, default=40)
    args = ap.parse_args()
    report: dict = {"funnel": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for noise in args.noise:
            with teacher_server(noise=noise) as server:
                report["funnel"][str(noise)] = run(out, f"noise{noise}", args.tasks, server.base_url)
        with teacher_server() as server:
            run(out, "rewards", args.reward_tasks, server.base_url)
            report["rewards"] = asyncio.run(rewards(out / "rewards", server.base_url))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
