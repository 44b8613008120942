"""Reward validation table: the oracle against each corruption, rubric stability over K, checker counts.

    python benchmarks/bench_rewards.py --tasks 200 --stability-tasks 100

Prints markdown tables (pasted into docs/rewards.md) and a JSON line with every figure. Rubrics come from the
``workflow-rubric`` builder with K=3 demonstrations of the offline teacher (``vary`` on); the scorer is the
default ``rubric`` scorer. A corruption that leaves a task's conversation identical to the oracle's (asking
again for a given fact when the instruction gave none) does not apply to that task and is left out of its
mean; the table says on how many tasks each one applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.rubrics.demonstrated import DemoRubricBuilder
from synthagent.plugins.rubrics.validation import TABLE_CORRUPTIONS, corruption_table, stability
from synthagent.plugins.rubrics.scorer import RubricScorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per family")
    parser.add_argument("--stability-tasks", type=int, default=100)
    parser.add_argument("--mistakes", type=float, default=0.15, help="teacher error rate for the stability run")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    families = {
        "offline domains": OfflineDomainsGenerator().sample(args.tasks, seed=args.seed),
        "environment-scaling domains": GraphDomainsGenerator().sample(args.tasks, seed=args.seed),
    }
    out: dict[str, object] = {}
    start = time.perf_counter()
    for name, tasks in families.items():
        out[name] = asyncio.run(corruption_table(tasks, DemoRubricBuilder(demos=3), RubricScorer()))
    print(f"| policy | {' | '.join(families)} |\n|---|" + "---|" * len(families))
    print("| oracle | " + " | ".join(f"{out[f]['oracle']:.3f} ({out[f]['tasks']} tasks)" for f in families) + " |")
    for c in TABLE_CORRUPTIONS:
        cells = []
        for f in families:
            r = out[f]
            if c in r["corruptions"]:
                cells.append(f"{r['corruptions'][c]:.3f} (lead {r['lead'][c]:.3f}, min gap {r['min_task_gap'][c]:.3f}, "
                             f"n={r['applicable'][c]})")
            else:
                cells.append("n/a")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("\n| checkers | " + " | ".join(families) + " |\n|---|" + "---|" * len(families))
    for k in ("kept", "cannot_fail", "demo_failed"):
        print(f"| {k} | " + " | ".join(str(out[f]["checkers"].get(k, 0)) for f in families) + " |")
    stab = {}
    for name, tasks in families.items():
        stab[name] = asyncio.run(stability(tasks[: args.stability_tasks], lambda k: DemoRubricBuilder(demos=k),
                                           mistakes=args.mistakes, seed=args.seed))
    print(f"\n| rubric agreement (teacher mistakes {args.mistakes}) | " + " | ".join(families) + " |\n|---|"
          + "---|" * len(families))
    for pair in ("2-3", "2-4", "3-4"):
        print(f"| K={pair.replace('-', ' vs K=')} | " + " | ".join(f"{stab[f]['agreement'][pair]:.4f}" for f in families) + " |")
    print("| mean | " + " | ".join(f"{stab[f]['mean']:.4f}" for f in families) + " |")
    print("| tasks dropped at K=2/3/4 | " + " | ".join("/".join(str(v) for v in stab[f]["dropped"].values())
                                                      for f in families) + " |")
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
    print(json.dumps({"table": out, "stability": stab}))


if __name__ == "__main__":
    main()
