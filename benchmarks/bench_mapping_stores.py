"""P3: mapping-store lookups at 1M entries: memory, SQLite, Redis, each beside its raw baseline.

    python benchmarks/bench_mapping_stores.py [--entries 1000000] [--lookups 20000]

Fills each store with ``--entries`` responses (10,000 tasks x 100 calls; the SQLite file and the Redis hashes
are bulk-loaded in the stores' own layout), then times ``--lookups`` sequential ``get`` calls of random stored
keys through the store's async API, one at a time on one event loop (latency, not throughput), and the same
lookups through the raw client: a dict lookup; ``sqlite3`` on the calling thread; redis-py ``GET`` (sync, as
the issue's baseline) and ``HGET`` (redis.asyncio, what the store sends). Prints p50/p99 in microseconds.
Targets: SQLite p50 < 100 us; Redis within 2x of a raw redis-py GET. Needs ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

PER_TASK = 100


def keys(n: int) -> list[tuple[str, str]]:
    return [(f"task-{i // PER_TASK:06d}", f"lookup_order:{i:032x}") for i in range(n)]


def value(i: int) -> dict[str, Any]:
    return {"order_id": f"O-{i}", "status": "shipped", "items": [1, 2, 3], "total": 42.5}


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))]


async def time_async(fn: Callable[[str, str], Awaitable[Any]], probes: list[tuple[str, str]]) -> list[float]:
    for t, k in probes[:500]:  # warm
        await fn(t, k)
    out = []
    for t, k in probes:
        start = time.perf_counter_ns()
        got = await fn(t, k)
        out.append((time.perf_counter_ns() - start) / 1000)
        assert got is not None
    return out


def time_sync(fn: Callable[[str, str], Any], probes: list[tuple[str, str]]) -> list[float]:
    for t, k in probes[:500]:
        fn(t, k)
    out = []
    for t, k in probes:
        start = time.perf_counter_ns()
        got = fn(t, k)
        out.append((time.perf_counter_ns() - start) / 1000)
        assert got is not None
    return out


def row(name: str, samples: list[float], base: list[float] | None = None) -> None:
    p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
    ratio = f"{p50 / pct(base, 0.5):>8.2f}" if base else f"{'':>8}"
    print(f"{name:<46} {p50:>9.1f} {p99:>9.1f} {statistics.fmean(samples):>9.1f} {ratio}")


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH (apt-get install -y redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    all_keys = keys(args.entries)
    rng = random.Random(0)
    probes = [all_keys[rng.randrange(args.entries)] for _ in range(args.lookups)]
    texts = [json.dumps(value(i), separators=(",", ":")) for i in range(args.entries)]
    print(f"{args.entries:,} entries, {args.lookups:,} sequential lookups of random stored keys, {os.cpu_count()} CPUs")
    print(f"{'store (latency per get, us)':<46} {'p50':>9} {'p99':>9} {'mean':>9} {'p50/raw':>8}")

    # -- memory ---------------------------------------------------------------------------------------------
    from synthagent.plugins.mapping.memory import MemoryMappingStore

    mem = MemoryMappingStore()
    mem._data = {k: json.loads(t) for k, t in zip(all_keys, texts, strict=True)}
    raw_mem = time_sync(lambda t, k, d=mem._data: d.get((t, k)), probes)
    row("memory: raw dict lookup", raw_mem)
    row("memory: MemoryMappingStore.get", asyncio.run(time_async(mem.get, probes)), raw_mem)
    del mem

    with tempfile.TemporaryDirectory() as tmp:
        # -- SQLite -------------------------------------------------------------------------------------------
        from synthagent.plugins.mapping.sqlite import _SCHEMA, _SELECT, SQLiteMappingStore

        path = os.path.join(tmp, "mapping.sqlite")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(_SCHEMA)
        start = time.perf_counter()
        with conn:
            conn.executemany("INSERT INTO mapping VALUES (?, ?, ?)", ((t, k, v) for (t, k), v in zip(all_keys, texts)))
        fill = time.perf_counter() - start
        raw_sql = time_sync(lambda t, k: conn.execute(_SELECT, (t, k)).fetchone(), probes)
        conn.close()
        row("sqlite: raw sqlite3 SELECT, same thread", raw_sql)

        async def via_store() -> list[float]:
            store = SQLiteMappingStore(path)
            try:
                return await time_async(store.get, probes)
            finally:
                await store.aclose()

        sql = asyncio.run(via_store())
        row("sqlite: SQLiteMappingStore.get (worker thread)", sql, raw_sql)
        print(f"{'':<46} (bulk load {fill:.1f} s, file {os.path.getsize(path) / 2**20:.0f} MiB)")

        # -- Redis --------------------------------------------------------------------------------------------
        import redis

        from synthagent.plugins.mapping.redis import RedisMappingStore

        proc, port = start_redis(tmp)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            r = redis.Redis.from_url(url, decode_responses=True)
            prefix = "bench:"
            start = time.perf_counter()
            pipe = r.pipeline(transaction=False)
            for i, ((t, k), v) in enumerate(zip(all_keys, texts)):
                pipe.hset(prefix + t, k, v)
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            pipe = r.pipeline(transaction=False)  # plain string keys for the raw GET baseline
            for i, ((t, k), v) in enumerate(zip(all_keys, texts)):
                pipe.set(f"s:{t}:{k}", v)
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            fill = time.perf_counter() - start
            raw_get = time_sync(lambda t, k: r.get(f"s:{t}:{k}"), probes)
            row("redis: raw redis-py GET (sync)", raw_get)
            raw_hget = time_sync(lambda t, k: r.hget(prefix + t, k), probes)
            row("redis: raw redis-py HGET (sync)", raw_hget, raw_get)

            async def raw_async() -> list[float]:
                import redis.asyncio as aioredis

                client = aioredis.Redis.from_url(url, decode_responses=True)
                try:
                    return await time_async(lambda t, k: client.hget(prefix + t, k), probes)
                finally:
                    await client.aclose()

            row("redis: raw redis.asyncio HGET", asyncio.run(raw_async()), raw_get)

            async def via_store() -> list[float]:
                store = RedisMappingStore(url, prefix=prefix)
                try:
                    return await time_async(store.get, probes)
                finally:
                    await store.aclose()

            row("redis: RedisMappingStore.get (asyncio HGET+JSON)", asyncio.run(via_store()), raw_get)
            print(f"{'':<46} (load {fill:.1f} s, {r.dbsize():,} keys, "
                  f"{int(r.info('memory')['used_memory']) / 2**20:.0f} MiB)")
            r.close()
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
