"""Mapping stores (memory, sqlite, redis): one contract, first writer wins across processes, no blocked loop.

The Redis tests start a real ``redis-server`` (Debian package ``redis-server``; ``.ci/run`` installs it) on a
free local port; without it they fail, on purpose, rather than skip.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.errors import ConfigError
from synthagent.core.mapping import call_key
from synthagent.core.registry import Plugins
from synthagent.plugins.mapping.redis import RedisMappingStore
from synthagent.plugins.mapping.sqlite import SQLiteMappingStore


# -- the contract, over every store ------------------------------------------------------------------------


async def _close(store: Any) -> None:
    close = getattr(store, "aclose", None)
    if close is not None:
        await close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, plugins: Plugins, tmp_path: Path) -> Callable[[], Any]:
    """Builds the store through the plugin registry, as a run would (call it inside the event loop)."""
    name = request.param
    options: dict[str, Any] = {}
    if name == "sqlite":
        options = {"path": str(tmp_path / "map.sqlite")}
    elif name == "redis":
        options = {"url": request.getfixturevalue("redis_url"), "prefix": f"test:{uuid.uuid4().hex}:"}
    impl = plugins.registry("mapping").get(name)
    return lambda: impl.create(options)


VALUES: list[Any] = [
    {"order": {"id": "O-1", "items": [1, 2.5, None, True]}, "status": "shipped"},
    ["a", {"b": []}, 3],
    "Grüße, 世界 🚀 \n\t quoted \"x\" \\ back",
    0, -17, 3.25, 1e300, True, False, "", [], {},
]


def test_contract(make_store: Callable[[], Any]) -> None:
    async def body() -> None:
        store = make_store()
        try:
            key = call_key("get_order", {"order_id": "O-1"})
            assert await store.get("t1", key) is None
            assert await store.put("t1", key, {"v": 1}) == {"v": 1}
            assert await store.put("t1", key, {"v": 2}) == {"v": 1}, "the first writer must win"
            assert await store.get("t1", key) == {"v": 1}
            # tasks are isolated
            assert await store.get("t2", key) is None
            assert await store.put("t2", key, {"v": 3}) == {"v": 3}
            assert await store.get("t1", key) == {"v": 1}
            # values round-trip
            for i, value in enumerate(VALUES):
                k = call_key("echo", {"i": i})
                assert await store.put("t1", k, value) == value
                got = await store.get("t1", k)
                assert got == value and type(got) is type(value), (value, got)
            # the same call, spelled differently, is the same entry
            k1 = call_key("search", {"city": "  New   York ", "nights": 2.0, "filters": {"b": 1, "a": [1.0, "x"]}})
            k2 = call_key("search", {"filters": {"a": [1, "x"], "b": 1.0}, "nights": 2, "city": "New York"})
            assert k1 == k2
            assert await store.put("t1", k1, "first") == "first"
            assert await store.get("t1", k2) == "first"
            assert await store.put("t1", k2, "second") == "first"
            assert await store.get("t1", call_key("search", {"city": "Boston"})) is None
        finally:
            await _close(store)

    asyncio.run(body())


def test_the_stores_are_registered(plugins: Plugins) -> None:
    mapping = plugins.registry("mapping")
    assert {"memory", "sqlite", "redis"} <= set(mapping.names())
    assert mapping.get("sqlite").factory is SQLiteMappingStore
    assert mapping.get("redis").factory is RedisMappingStore
    with pytest.raises(ConfigError, match="unknown option"):
        mapping.get("sqlite").create({"pth": "x"})


# -- sqlite ------------------------------------------------------------------------------------------------


def test_sqlite_stats_count_persistence_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"

    async def write() -> None:
        async with SQLiteMappingStore(str(path), timeout_s=5) as store:
            assert await store.get("t", "k") is None
            assert await store.put("t", "k", {"x": 1}) == {"x": 1}
            assert await store.put("t", "k", {"x": 2}) == {"x": 1}
            assert await store.put("u", "k", 1) == 1
            assert await store.get("t", "k") == {"x": 1}
            assert store.stats == {"hits": 1, "misses": 1, "puts": 2, "conflicts": 1}
            assert await store.count() == 2 and await store.count("t") == 1 and await store.count("none") == 0

    async def reopen() -> None:
        store = SQLiteMappingStore(str(path))
        assert await store.get("t", "k") == {"x": 1}
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await store.get("t", "k")

    asyncio.run(write())
    asyncio.run(reopen())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'mapping'").fetchone()[0]
        assert "WITHOUT ROWID" in ddl and "PRIMARY KEY (task_id, key)" in ddl
        assert json.loads(conn.execute("SELECT value FROM mapping WHERE task_id='t'").fetchone()[0]) == {"x": 1}


def test_sqlite_default_path_is_mapping_sqlite_in_the_current_directory(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def body() -> None:
        async with SQLiteMappingStore() as store:
            await store.put("t", "k", "v")

    asyncio.run(body())
    assert (tmp_path / "mapping.sqlite").is_file()


def test_sqlite_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SQLiteMappingStore(str(tmp_path / "no" / "such" / "m.sqlite"))
    with pytest.raises(ConfigError, match="timeout_s"):
        SQLiteMappingStore(str(tmp_path / "m.sqlite"), timeout_s=-1)


NEVER_BLOCKS = textwrap.dedent(
    """
    import asyncio, json, sqlite3, sys, threading, time
    from synthagent.core.mapping import call_key
    from synthagent.plugins.mapping.sqlite import SQLiteMappingStore

    path, hold_s = sys.argv[1], float(sys.argv[2])

    async def body():
        store = SQLiteMappingStore(path)
        await store.put("warm", "up", 0)  # create the file and schema first
        locked = threading.Event()

        def hold_write_lock():
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(hold_s)
            conn.execute("COMMIT")
            conn.close()

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        locked.wait(5)
        ticks, max_gap, done = 0, 0.0, False

        async def ticker():
            nonlocal ticks, max_gap
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                max_gap, last, ticks = max(max_gap, now - last), now, ticks + 1

        tick_task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(store.put("t", call_key("f", {"i": i}), {"i": i}) for i in range(500)))
        elapsed = time.perf_counter() - t0
        done = True
        await tick_task
        holder.join()
        assert results == [{"i": i} for i in range(500)]
        assert await store.count("t") == 500
        await store.aclose()
        print(json.dumps([ticks, max_gap, elapsed]))

    asyncio.run(body())
    """
)


def test_sqlite_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """A ticker keeps ticking while 500 puts run, even while another connection holds the write lock. Measured in
    a fresh process, so that nothing left by other tests in this worker (a large heap's garbage collection, other
    threads) is timed instead of the store."""
    hold_s = 0.5
    out = subprocess.run([sys.executable, "-c", NEVER_BLOCKS, str(tmp_path / "m.sqlite"), str(hold_s)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    ticks, max_gap, elapsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert elapsed >= hold_s * 0.8, "the puts should have waited for the other connection's write lock"
    assert ticks >= 10, f"the event loop ticked only {ticks} times in {elapsed:.2f}s"  # blocked: 1-2 ticks
    # SQLite on the loop thread would stall it for the whole lock hold; a busy CI machine may delay a tick a bit
    assert max_gap < hold_s * 0.8, f"the event loop was blocked for {max_gap:.3f}s (the lock was held {hold_s}s)"


# -- two processes race for the same keys ----------------------------------------------------------------

RACER = textwrap.dedent(
    """
    import asyncio, json, sys
    from synthagent.core.mapping import call_key

    kind, where, writer, n, order = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

    async def main():
        if kind == "sqlite":
            from synthagent.plugins.mapping.sqlite import SQLiteMappingStore
            store = SQLiteMappingStore(where)
        else:
            from synthagent.plugins.mapping.redis import RedisMappingStore
            url, prefix = where.split(" ", 1)
            store = RedisMappingStore(url, prefix=prefix)
        await store.count()  # connect (and create the schema) before the start line
        print("ready", flush=True)
        assert sys.stdin.readline().strip() == "go"
        indices = list(range(n)) if order == "same" or writer == 0 else list(range(n))[::-1]
        got = {}
        for i in indices:
            for task in ("task-a", "task-b"):
                key = call_key("lookup", {"i": i})
                got[f"{task}/{i}"] = await store.put(task, key, {"writer": writer, "i": i, "task": task})
        stats = dict(store.stats)
        await store.aclose()
        print(json.dumps({"got": got, "stats": stats}), flush=True)

    asyncio.run(main())
    """
)


def _race(kind: str, where: str, n: int, order: str) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, kind, where, str(writer), str(n), order],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for writer in (0, 1)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", f"racer did not start: {line!r} {p.stderr.read() if p.stderr else ''}"
        for p in procs:  # both are waiting: release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _check_race(results: list[dict[str, Any]], stored: dict[str, Any], n: int) -> None:
    a, b = results[0]["got"], results[1]["got"]
    assert len(stored) == len(a) == len(b) == 2 * n
    for name, value in stored.items():
        task, i = name.split("/")
        assert value["task"] == task and value["i"] == int(i) and value["writer"] in (0, 1)
        assert a[name] == value and b[name] == value, f"{name}: writers saw {a[name]} and {b[name]}, stored {value}"
    stats = [r["stats"] for r in results]
    assert sum(s["puts"] for s in stats) == 2 * n, "exactly one put per key stores its value"
    assert sum(s["conflicts"] for s in stats) == 2 * n


@pytest.mark.parametrize("order", ["same", "reversed"])
def test_sqlite_two_processes_race_first_writer_wins(tmp_path: Path, order: str) -> None:
    n = 200
    path = tmp_path / "race.sqlite"
    results = _race("sqlite", str(path), n, order)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT task_id, key, value FROM mapping").fetchall()
    keys = {call_key("lookup", {"i": i}): i for i in range(n)}
    stored = {f"{task}/{keys[key]}": json.loads(value) for task, key, value in rows}
    assert len(rows) == 2 * n, "every key has exactly one row"
    _check_race(results, stored, n)


@pytest.mark.parametrize("order", ["same", "reversed"])
def test_redis_two_processes_race_first_writer_wins(redis_url: str, order: str) -> None:
    n = 200
    prefix = f"race:{uuid.uuid4().hex}:"
    results = _race("redis", f"{redis_url} {prefix}", n, order)

    async def read_back() -> dict[str, Any]:
        store = RedisMappingStore(redis_url, prefix=prefix)
        try:
            assert await store.count() == 2 * n
            out = {}
            for task in ("task-a", "task-b"):
                assert await store.count(task) == n
                for i in range(n):
                    out[f"{task}/{i}"] = await store.get(task, call_key("lookup", {"i": i}))
            return out
        finally:
            await store.aclose()

    _check_race(results, asyncio.run(read_back()), n)


# -- redis -------------------------------------------------------------------------------------------------


def test_redis_stats_ttl_and_close(redis_url: str) -> None:
    prefix = f"ttl:{uuid.uuid4().hex}:"

    async def body() -> None:
        async with RedisMappingStore(redis_url, prefix=prefix, ttl_s=100) as store:
            assert await store.get("t", "k") is None
            assert await store.put("t", "k", [1, "x"]) == [1, "x"]
            assert await store.put("t", "k", "other") == [1, "x"]
            assert await store.get("t", "k") == [1, "x"]
            assert store.stats == {"hits": 1, "misses": 1, "puts": 1, "conflicts": 1}
            client = store._redis()
            assert 0 < await client.ttl(prefix + "t") <= 100
            assert await client.hget(prefix + "t", "k") == '[1,"x"]'
        async with RedisMappingStore(redis_url, prefix=prefix + "none:") as store:
            await store.put("t", "k", 1)
            assert await store._redis().ttl(prefix + "none:t") == -1  # no expiry
        with pytest.raises(RuntimeError, match="closed"):
            await store.get("t", "k")

    asyncio.run(body())


def test_redis_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="ttl_s"):
        RedisMappingStore(ttl_s=-5)
    with pytest.raises(ConfigError, match="invalid url"):
        RedisMappingStore(url="http://example.invalid")


def test_redis_without_the_package_is_a_config_error_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError, match=r"pip install redis.*synthagent\[redis\]"):
        RedisMappingStore()


def test_the_redis_module_imports_without_the_redis_package() -> None:
    code = ("import sys; sys.modules['redis'] = None; sys.modules['redis.asyncio'] = None; "
            "import synthagent.plugins.mapping.redis as m; print(m.RedisMappingStore.name)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "redis", result.stderr
