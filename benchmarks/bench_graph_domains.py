"""Environment scaling on the built-in pool: graph, Louvain domains and 1,000 tasks, timed.

    python benchmarks/bench_graph_domains.py [--tasks 1000] [--embedding auto]

Prints the time to build the graph with a cold embedding cache and a warm one, the time to sample the tasks,
the domains and the modularity, side by side in one run. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--embedding", default="auto")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="synth-cache-")
    os.environ["SYNTHAGENT_CACHE"] = cache
    from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator

    rows = []
    for label in ("cold cache", "warm cache"):
        start = time.perf_counter()
        gen = GraphDomainsGenerator(embedding=args.embedding)
        gen.discover(0)
        graph_s = time.perf_counter() - start
        t0 = time.perf_counter()
        tasks = gen.sample(args.tasks, seed=0)
        sample_s = time.perf_counter() - t0
        rows.append((label, graph_s, sample_s, len(tasks)))
    shutil.rmtree(cache, ignore_errors=True)
    report = gen.report()
    print(f"{report['tools']} tools -> {len(report['domains'])} domains (of {report['communities']} communities), "
          f"modularity {report['modularity']} ({report['embedding']})")
    print(f"{'':<11} {'graph+domains':>14} {'sampling':>9} {'total':>8} {'tasks':>6}")
    for label, g, s, n in rows:
        print(f"{label:<11} {g:>13.2f}s {s:>8.2f}s {g + s:>7.2f}s {n:>6}")
    print(f"warm/cold total ratio: {(rows[1][1] + rows[1][2]) / (rows[0][1] + rows[0][2]):.3f}; "
          f"tasks/s when sampling: {rows[1][3] / rows[1][2]:.0f}")
    print("rejected walks:", dict(gen.stats))


if __name__ == "__main__":
    main()
