"""The ``sqlite`` mapping store: per-task call -> response in an SQLite file (survives restarts, shared by
the processes of one host).

The database runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout. ``put`` is one ``BEGIN
IMMEDIATE`` transaction (``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT``), so concurrent writers in
several processes agree on one response per call: the first writer wins and every writer gets its response
back. SQLite calls never run on the event loop: each store owns one worker thread, and that thread owns the
store's connection (``sqlite3`` connections refuse use from another thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl

__all__ = ["DEFAULT_FILENAME", "SQLiteMappingStore"]

#: The database file used when no ``path`` is given (in the current directory).
DEFAULT_FILENAME = "mapping.sqlite"

R = TypeVar("R")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mapping ("
    "task_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (task_id, key)) WITHOUT ROWID"
)
_INSERT = "INSERT INTO mapping (task_id, key, value) VALUES (?, ?, ?) ON CONFLICT (task_id, key) DO NOTHING"
_SELECT = "SELECT value FROM mapping WHERE task_id = ? AND key = ?"


class SQLiteMappingStore:
    """(task id, canonical call) -> JSON response in an SQLite file. First writer wins, across processes.

    :param path: the database file; ``""`` means ``mapping.sqlite`` in the current directory. Its folder must
        exist; the file and its table are created on first use.
    :param timeout_s: how long a call waits for another writer's lock before failing
        (``sqlite3.OperationalError: database is locked``).

    ``stats`` counts ``hits`` and ``misses`` (``get`` found / did not find a response), ``puts`` (``put``
    stored its value) and ``conflicts`` (``put`` found a response already stored and returned it).
    Call :meth:`aclose` when done.
    """

    name = "sqlite"

    def __init__(self, path: str = "", timeout_s: float = 30.0) -> None:
        if not isinstance(path, str):
            raise ConfigError(f"mapping store 'sqlite': path must be a string, got {path!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s >= 0:
            raise ConfigError(f"mapping store 'sqlite': timeout_s must be a number >= 0, got {timeout_s!r}")
        self.path = os.path.abspath(path or DEFAULT_FILENAME)
        self._default_path = not path
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise ConfigError(
                f"mapping store 'sqlite': the folder of {self.path} does not exist; create it or choose another path"
            )
        self.timeout_s = float(timeout_s)
        #: ``hits``, ``misses``, ``puts``, ``conflicts`` (see the class docstring).
        self.stats: Counter[str] = Counter(hits=0, misses=0, puts=0, conflicts=0)
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="synthagent-mapping-sqlite"
        )
        self._conn: sqlite3.Connection | None = None  # created and used by the worker thread only

    def setup(self, ctx: Any) -> None:
        """In a run, keep the mapping inside the run directory (so it resumes with the run) unless a path
        was given. The file is created on first use, once the run directory exists."""
        run_dir: str = getattr(ctx, "run_dir", "") or ""
        if self._default_path and run_dir:
            self.path = os.path.join(os.path.abspath(run_dir), DEFAULT_FILENAME)

    # -- worker-thread side -------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The worker thread's connection, opened (and the schema created) on first use."""
        if self._conn is not None:
            return self._conn
        # isolation_level=None: autocommit; put() opens its own BEGIN IMMEDIATE transaction.
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            deadline = time.monotonic() + self.timeout_s
            while True:
                # Switching to WAL needs a moment of exclusive access; while another process opens the same
                # file it can answer "database is locked" without waiting on the busy timeout, so retry.
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    conn.execute(_SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: could not switch to WAL mode (journal_mode={mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _get_sync(self, task_id: str, key: str) -> Any | None:
        row = self._connection().execute(_SELECT, (task_id, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def _put_sync(self, task_id: str, key: str, text: str) -> tuple[Any, bool]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no read-then-upgrade race between processes
        try:
            inserted = conn.execute(_INSERT, (task_id, key, text)).rowcount == 1
            row = conn.execute(_SELECT, (task_id, key)).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return json.loads(row[0]), inserted

    def _count_sync(self, task_id: str | None) -> int:
        conn = self._connection()
        if task_id is None:
            row = conn.execute("SELECT count(*) FROM mapping").fetchone()
        else:
            row = conn.execute("SELECT count(*) FROM mapping WHERE task_id = ?", (task_id,)).fetchone()
        return int(row[0])

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- event-loop side ----------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None:
            raise RuntimeError(f"mapping store 'sqlite' ({self.path}) is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def get(self, task_id: str, key: str) -> Any | None:
        """The stored response, or None."""
        value = await self._run(self._get_sync, task_id, key)
        self.stats["misses" if value is None else "hits"] += 1
        return value

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Store ``value`` unless a response exists; return the stored response (first writer wins).

        The value is serialized to JSON when called (a ``TypeError`` for a value JSON cannot hold); the return
        value is always the stored JSON decoded, so every writer gets an equal object back.
        """
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        stored, inserted = await self._run(self._put_sync, task_id, key, text)
        self.stats["puts" if inserted else "conflicts"] += 1
        return stored

    async def count(self, task_id: str | None = None) -> int:
        """How many responses are stored: for one task, or in all (like ``len``)."""
        return await self._run(self._count_sync, task_id)

    async def aclose(self) -> None:
        """Close the connection and stop the worker thread. Idempotent; the store is unusable afterwards."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> SQLiteMappingStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@hookimpl
def synth_register_mapping_stores(register: Any) -> None:
    """Register the ``sqlite`` mapping store."""
    register("sqlite", SQLiteMappingStore, description="SQLite file, WAL (survives restarts; processes of one host)")
