"""Environment scaling on a real API corpus (BFCL's function schemas): each step timed, and the scaling curve.

    python benchmarks/bench_api_corpus.py [--sizes 250,500,1000,2000,0] [--embedding tfidf] [--tasks 300]
                                          [--resolution 10] [--min-tools 3] [--project 30000]
    python benchmarks/bench_api_corpus.py --verify [--tasks 300] [--png docs/images/bfcl-graph.png]

For each size (0 = every API of the corpus), in a fresh process (so peak memory is that size's own), with a cold
embedding cache: load + normalize (corpus.py), effect inference (pool_from_records), embedding the slots, graph
edges (slot matches, hubs, the networkx graph), Louvain, domain building, task sampling; counts beside each time.
Then a power-law fit (time = a * n^b) of every step and of peak memory over the sizes >= 500, projected to
``--project`` APIs, with the step that dominates there. ``--verify``: the generator on the whole corpus, its tasks solved by the
oracle and verified, per domain, and the graph drawn. Results go in docs/performance.md and
docs/environment-scaling.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

STEPS = ("load_normalize", "effects", "embedding", "edges", "louvain", "domains", "tasks")


def one(size: int, embedding: str, tasks: int, resolution: float, min_tools: int) -> dict:
    """Every step once at ``size`` APIs (0 = all); returns times (s), counts and peak RSS (MiB)."""
    from collections import Counter

    import networkx as nx
    import numpy as np

    from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator, _name_hash
    from synthagent.plugins.generators.graph_domains.corpus import corpus_records
    from synthagent.plugins.generators.graph_domains.domains import build_domain
    from synthagent.plugins.generators.graph_domains.graph import ToolGraph, _slot_pairs, _tools_matched, embed, slot_texts
    from synthagent.plugins.generators.graph_domains.pool import pool_from_records

    t: dict[str, float] = {}
    c: dict[str, int | float] = {}
    start = time.perf_counter()
    records, imported = corpus_records(["bfcl"])
    if size:
        chosen = set(sorted((r[2]["function"]["name"] for r in records), key=_name_hash)[:size])
        records = [r for r in records if r[2]["function"]["name"] in chosen]
    t["load_normalize"] = time.perf_counter() - start
    c["functions_read"], c["apis"] = imported["functions"], len(records)
    c["dropped"] = sum(v for k, v in imported.items() if k.startswith("dropped_"))
    start = time.perf_counter()
    specs, _ = pool_from_records(records, strict=False)
    t["effects"] = time.perf_counter() - start
    c["writes"] = sum(s.effect["kind"] != "read" for s in specs)
    start = time.perf_counter()
    owners, texts = [], []
    for i, spec in enumerate(specs):
        for text in slot_texts(spec):
            owners.append(i)
            texts.append(text)
    vectors, used = embed(texts, embedding)
    t["embedding"] = time.perf_counter() - start
    c["slots"] = len(texts)
    start = time.perf_counter()
    thr = 0.8 if used == "minilm" else 0.6
    owner = np.array(owners, dtype=np.int64)
    pairs = _slot_pairs(vectors, owner, thr)
    hubs = _tools_matched(pairs, owner, len(texts)) > max(2, int(0.05 * len(specs)))
    c["slot_pairs"] = len(pairs)
    pairs = pairs[~hubs[pairs[:, 0]] & ~hubs[pairs[:, 1]]]
    graph = nx.Graph()
    graph.add_nodes_from(s.name for s in specs)
    lo, hi = np.minimum(owner[pairs[:, 0]], owner[pairs[:, 1]]), np.maximum(owner[pairs[:, 0]], owner[pairs[:, 1]])
    keys, first, weight = np.unique(lo * len(specs) + hi, return_index=True, return_counts=True)
    for k in np.argsort(first, kind="stable"):
        i, j = divmod(int(keys[k]), len(specs))
        graph.add_edge(specs[i].name, specs[j].name, weight=float(weight[k]))
    t["edges"] = time.perf_counter() - start
    c["edges"] = graph.number_of_edges()
    start = time.perf_counter()
    communities = sorted((sorted(x) for x in nx.community.louvain_communities(graph, weight="weight", seed=0,
                                                                              resolution=resolution)),
                         key=lambda x: (-len(x), x[0]))
    modularity = float(nx.community.modularity(graph, communities, weight="weight"))
    t["louvain"] = time.perf_counter() - start
    c["communities"], c["modularity"] = len(communities), round(modularity, 4)
    start = time.perf_counter()
    by_name = {s.name: s for s in specs}
    names: Counter[str] = Counter()
    domains = []
    for community in communities:
        if len(community) < min_tools:
            continue
        members = [by_name[n] for n in community]
        top = Counter(s.area for s in members).most_common(1)[0][0]
        names[top] += 1
        domains.append(build_domain(top if names[top] == 1 else f"{top}_{names[top]}", members))
    t["domains"] = time.perf_counter() - start
    c["domains"] = len(domains)
    gen = GraphDomainsGenerator(pool="bfcl", max_apis=1, embedding="tfidf")  # the sampler, given these domains
    start = time.perf_counter()
    gen.graph, gen.domains = ToolGraph(graph, communities, modularity, used, thr, int(hubs.sum())), domains
    made = gen.sample(tasks, seed=0)
    t["tasks"] = time.perf_counter() - start
    c["tasks"], c["domains_with_tasks"] = len(made), len({x.domain for x in made})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": len(records), "embedding": used, "times": t, "counts": c, "peak_mib": round(peak, 1)}


def verify(tasks: int, embedding: str, resolution: float, min_tools: int, png: str) -> None:
    """The generator on the whole corpus: domains, ``tasks`` tasks, each solved by the oracle and verified (final
    state digest and the verified rubric), counted per domain; the graph drawn to ``png``."""
    import asyncio
    from collections import Counter

    from synthagent.core.agent_loop import run_episode
    from synthagent.plugins.backends.oracle import OracleBackend
    from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator
    from synthagent.plugins.rubrics.scorer import RubricScorer
    from synthagent.plugins.rubrics.workflow import VerifiedRubricBuilder
    from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator
    from synthagent.plugins.simulators.users.rule import RuleUser

    start = time.perf_counter()
    gen = GraphDomainsGenerator(pool="bfcl", embedding=embedding, resolution=resolution, min_tools=min_tools)
    domains = gen.discover(0)
    discover_s = time.perf_counter() - start
    t0 = time.perf_counter()
    made = gen.sample(tasks, seed=0)
    sample_s = time.perf_counter() - t0

    async def check() -> list[bool]:
        builder, scorer, out = VerifiedRubricBuilder(exact_writes=True), RubricScorer(), []
        for task in made:
            session = await SQLiteToolSimulator().start(task, 0)
            traj = await run_episode(task, policy=OracleBackend("none"), tools=session,
                                     user=await RuleUser().start(task, 0), max_turns=40)
            await session.aclose()
            score = await scorer.score(task, builder.build(task, [traj]), traj)
            state = next(r for r in score.breakdown if r.criterion_id == "final-state")
            out.append(bool(score.success and state.passed))
        return out

    t0 = time.perf_counter()
    ok = asyncio.run(check())
    verify_s = time.perf_counter() - t0
    report = gen.report()
    print(json.dumps({"pool": report["pool"], "tools": report["tools"], "edges": report["edges"],
                      "embedding": report["embedding"], "modularity": report["modularity"],
                      "communities": report["communities"], "domains": len(domains)}))
    per_domain = Counter(t.domain for t in made)
    solved = Counter(t.domain for t, good in zip(made, ok) if good)
    writes = sum(any(s.writes for s in t.workflow) for t in made)
    print(f"tasks {len(made)} ({writes} with writes) in {len(per_domain)} of {len(domains)} domains; "
          f"verified (oracle: success and final-state digest) {sum(ok)}/{len(made)}")
    print("per domain (made/verified):", ", ".join(f"{d} {n}/{solved[d]}" for d, n in per_domain.most_common()))
    print("rejected walks:", dict(gen.stats))
    print(f"wall: discover {discover_s:.1f} s, sampling {sample_s:.1f} s, verification {verify_s:.1f} s")
    if png:
        t0 = time.perf_counter()
        gen.draw(png)
        print(f"graph drawn to {png} in {time.perf_counter() - t0:.1f} s")


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares of log y = log a + b log x: returns (a, b)."""
    pts = [(math.log(x), math.log(max(y, 1e-4))) for x, y in zip(xs, ys)]
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / max(1e-12, sum((p[0] - mx) ** 2 for p in pts))
    return math.exp(my - b * mx), b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250,500,1000,2000,0")
    parser.add_argument("--embedding", default="tfidf")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--resolution", type=float, default=10.0)
    parser.add_argument("--min-tools", type=int, default=3)
    parser.add_argument("--project", type=int, default=30000)
    parser.add_argument("--verify", action="store_true", help="the generator on the whole corpus, tasks verified")
    parser.add_argument("--png", default="", help="with --verify: draw the graph to this file")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process: one size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.embedding, args.tasks, args.resolution, args.min_tools)))
        return
    if args.verify:
        verify(args.tasks, args.embedding, args.resolution, args.min_tools, args.png)
        return
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="synth-cache-") as cache:
            env = {**os.environ, "SYNTHAGENT_CACHE": cache}
            out = subprocess.run([sys.executable, __file__, "--one", str(size), "--embedding", args.embedding,
                                  "--tasks", str(args.tasks), "--resolution", str(args.resolution),
                                  "--min-tools", str(args.min_tools)], env=env, capture_output=True, text=True,
                                 check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'APIs':>6} " + " ".join(f"{s:>14}" for s in STEPS) + f" {'total':>8} {'peak MiB':>9}")
    for r in rows:
        total = sum(r["times"].values())
        print(f"{r['size']:>6} " + " ".join(f"{r['times'][s]:>13.2f}s" for s in STEPS) + f" {total:>7.2f}s"
              f" {r['peak_mib']:>9.0f}")
    print("\ncounts:")
    for r in rows:
        print(f"{r['size']:>6} {r['counts']}")
    big = [r for r in rows if r["size"] >= 500]
    if len(big) >= 2:
        xs = [float(r["size"]) for r in big]
        print(f"\nprojection to {args.project} APIs (power-law fit over {[int(x) for x in xs]}):")
        projected = {}
        for s in STEPS:
            a, b = fit(xs, [r["times"][s] for r in big])
            projected[s] = a * args.project ** b
            print(f"  {s:<15} exponent {b:5.2f}  -> {projected[s]:9.1f} s")
        a, b = fit(xs, [r["peak_mib"] for r in big])
        pa, pb = fit(xs, [float(r["counts"]["slot_pairs"]) for r in big])
        print(f"  peak memory     exponent {b:5.2f}  -> {a * args.project ** b:9.0f} MiB")
        print(f"  slot pairs      exponent {pb:5.2f}  -> {pa * args.project ** pb:9.0f}")
        top = max(projected, key=lambda k: projected[k])
        print(f"  total -> {sum(projected.values()):.0f} s; dominant step: {top} "
              f"({projected[top] / sum(projected.values()):.0%})")


if __name__ == "__main__":
    main()
