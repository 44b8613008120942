"""The ``sqlite`` tool simulator: database-backed tools executed for real.

Each tool declares an :class:`~synthagent.core.models.Effect` (read/insert/update/delete on one table). The
effect is compiled into parameterized SQL over identifiers checked against the domain schema and executed on a
per-rollout in-memory copy of the task's initial database. Nothing generated is executed as Python. An
SQLite authorizer admits only the effect's table and statement kind (no ATTACH, PRAGMA, other tables or
functions beyond the core set), and a progress handler bounds every statement's time.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import (DatabaseState, Effect, StateChange, Task, ToolCall, ToolSpec, canonical_json,
                                    state_digest)
from synthagent.core.protocols import ToolResult
from synthagent.core.toolschema import argument_problems

__all__ = ["SQLiteDatabase", "SQLiteToolSimulator", "SQLiteSession", "validate_arguments", "compute_changes",
           "JSON_COLUMN", "encode_value", "decode_rows"]

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
#: Column type of nested values (lists, objects): stored as canonical JSON text, read back as the value.
JSON_COLUMN = "JSON"


def encode_value(value: Any) -> Any:
    """What SQLite stores for ``value``: lists and objects as canonical JSON text (sorted keys, so equal values
    compare equal in ``WHERE``), scalars as they are."""
    return canonical_json(value) if isinstance(value, (list, tuple, dict)) else value


def _json_columns(state: DatabaseState) -> dict[str, frozenset[str]]:
    return {t.name: frozenset(c.name for c in t.columns if c.type == JSON_COLUMN) for t in state.tables}


def decode_rows(rows: Any, json_columns: frozenset[str]) -> list[dict[str, Any]]:
    """Rows as dicts, with the JSON text of ``json_columns`` decoded back into lists and objects."""
    out = []
    for r in rows:
        row = dict(r)
        for col in json_columns & row.keys():
            text = row[col]
            if isinstance(text, str) and text[:1] in ("[", "{"):
                try:
                    row[col] = json.loads(text)
                except ValueError:
                    pass
        out.append(row)
    return out


class ToolExecutionError(Exception):
    """A tool call failed in a way the agent should see as an observation (not a crash)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _ident(name: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ToolExecutionError("invalid_schema", f"{name!r} is not a valid identifier")
    return f'"{name}"'


def validate_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``arguments`` against the tool's JSON-schema parameters; return them or raise.

    Unknown parameters, missing required ones, wrong JSON types and values outside an ``enum`` are errors
    the agent sees (``invalid_arguments``) so it can correct itself.
    """
    problems = argument_problems(spec, arguments)
    if problems:
        raise ToolExecutionError("invalid_arguments", "; ".join(problems))
    return dict(arguments)


def _single(rows: list[dict[str, Any]], effect: Effect, args: Mapping[str, Any]) -> dict[str, Any]:
    """The one row a single-row effect selected, or a not_found / ambiguous error for the agent."""
    if not rows:
        keys = {p: args.get(p) for p in effect.where}
        raise ToolExecutionError("not_found", f"no {effect.table} row matches {keys}")
    if len(rows) > 1:
        raise ToolExecutionError("ambiguous", f"more than one {effect.table} row matches; give a more specific key")
    return rows[0]


class SQLiteDatabase:
    """One live SQLite database built from a :class:`DatabaseState`, with guarded tool execution.

    :param state: schema and rows to load.
    :param timeout_s: wall-clock bound for any single tool statement.
    """

    def __init__(self, state: DatabaseState, *, timeout_s: float = 1.0) -> None:
        self.state = state
        self.timeout_s = timeout_s
        self._keys = {t.name: t.primary_key for t in state.tables}
        self._columns = {t.name: [c.name for c in t.columns] for t in state.tables}
        self._json = _json_columns(state)
        # check_same_thread=False: LangGraph may run a node on a worker thread; the lock serializes use.
        self.conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        #: Tables a write statement was attempted on (the others still hold the template's rows, byte for byte).
        self.dirty: set[str] = set()
        self._load(state)

    def _load(self, state: DatabaseState) -> None:
        template = _template_for(state)
        with _TEMPLATE_LOCK:
            template.backup(self.conn)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # -- execution -------------------------------------------------------------------------------
    def execute(self, spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``spec``'s effect with ``arguments``; return the result or an ``{"error": ...}`` dict."""
        if spec.effect is None:
            return {"error": "not_executable", "message": f"tool {spec.name!r} has no database effect"}
        try:
            args = validate_arguments(spec, arguments)
            with self._lock:
                return self._run(spec.effect, args)
        except ToolExecutionError as exc:
            return {"error": exc.code, "message": exc.message}

    def _check_table(self, table: str, columns: list[str]) -> None:
        if table not in self._columns:
            raise ToolExecutionError("invalid_schema", f"unknown table {table!r}")
        for col in columns:
            if col not in self._columns[table]:
                raise ToolExecutionError("invalid_schema", f"unknown column {col!r} of table {table!r}")

    def _guarded(self, sql: str, params: list[Any], table: str, action: int) -> sqlite3.Cursor:
        allowed_actions = {action, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ}
        if action == sqlite3.SQLITE_UPDATE:
            allowed_actions.add(sqlite3.SQLITE_UPDATE)

        def authorizer(code: int, arg1: str | None, arg2: str | None, dbname: str | None, src: str | None) -> int:
            if code == sqlite3.SQLITE_FUNCTION:
                return sqlite3.SQLITE_OK if (arg2 or "").lower() in _SAFE_FUNCTIONS else sqlite3.SQLITE_DENY
            if code not in allowed_actions:
                return sqlite3.SQLITE_DENY
            if code in (sqlite3.SQLITE_READ, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
                if arg1 != table or dbname not in (None, "main"):
                    return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        deadline = time.monotonic() + self.timeout_s
        self.conn.set_authorizer(authorizer)
        self.conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            return self.conn.execute(sql, [encode_value(p) for p in params])
        except (OverflowError, sqlite3.ProgrammingError) as exc:  # an integer past 64 bits, an unbindable value
            raise ToolExecutionError("invalid_arguments", f"a value cannot be stored: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            if "interrupted" in str(exc):
                raise ToolExecutionError("timeout", f"statement exceeded {self.timeout_s}s") from exc
            if "not authorized" in str(exc) or "prohibited" in str(exc):
                raise ToolExecutionError("denied", f"statement denied by the sandbox: {exc}") from exc
            raise ToolExecutionError("database_error", str(exc)) from exc
        finally:
            self.conn.set_authorizer(None)
            self.conn.set_progress_handler(None, 0)

    def _where(self, effect: Effect, args: Mapping[str, Any]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for param, column in effect.where.items():
            if param in args:
                clauses.append(f"{_ident(column)} = ?")
                params.append(args[param])
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _fetch_one(self, effect: Effect, args: Mapping[str, Any]) -> dict[str, Any]:
        table = effect.table
        where, params = self._where(effect, args)
        if not where:
            raise ToolExecutionError("invalid_arguments", "no key given to select the row")
        rows = self._guarded(f"SELECT * FROM {_ident(table)}{where} LIMIT 2", params, table, sqlite3.SQLITE_SELECT)
        return _single(decode_rows(rows.fetchall(), self._json.get(table, frozenset())), effect, args)

    def _check_require(self, effect: Effect, row: Mapping[str, Any]) -> None:
        for column, allowed in effect.require.items():
            if encode_value(row.get(column)) not in [encode_value(a) for a in allowed]:
                raise ToolExecutionError(
                    "precondition_failed",
                    f"{effect.table}.{column} is {row.get(column)!r}; this action needs one of {list(allowed)}",
                )

    def _run(self, effect: Effect, args: Mapping[str, Any]) -> dict[str, Any]:
        table = effect.table
        if effect.kind != "read":
            self.dirty.add(table)
        key = self._keys.get(table)
        self._check_table(
            table,
            list(effect.where.values()) + list(effect.set.values()) + list(effect.values.values())
            + list(effect.const) + list(effect.require) + list(effect.columns)
            + ([effect.order_by] if effect.order_by else []),
        )
        if effect.kind == "read":
            cols = ", ".join(_ident(c) for c in effect.columns) if effect.columns else "*"
            where, params = self._where(effect, args)
            order = f" ORDER BY {_ident(effect.order_by or key or '')}" if (effect.order_by or key) else ""
            limit = "" if effect.many else " LIMIT 2"
            cur = self._guarded(
                f"SELECT {cols} FROM {_ident(table)}{where}{order}{limit}", params, table, sqlite3.SQLITE_SELECT
            )
            rows = decode_rows(cur.fetchall(), self._json.get(table, frozenset()))
            return {"items": rows} if effect.many else _single(rows, effect, args)
        if effect.kind == "insert":
            if not key:
                raise ToolExecutionError("invalid_schema", f"table {table!r} has no primary key")
            values = {column: args[param] for param, column in effect.values.items() if param in args}
            values.update(effect.const)
            values[key] = self._next_key(table, key, effect.key_prefix)
            names = list(values)
            sql = (
                f"INSERT INTO {_ident(table)} ({', '.join(_ident(c) for c in names)}) "
                f"VALUES ({', '.join('?' for _ in names)})"
            )
            self._guarded(sql, [values[c] for c in names], table, sqlite3.SQLITE_INSERT)
            return self._fetch_one(Effect(kind="read", table=table, where={"k": key}), {"k": values[key]})
        if effect.kind == "update":
            row = self._fetch_one(effect, args)
            self._check_require(effect, row)
            changes = {column: args[param] for param, column in effect.set.items() if param in args}
            changes.update(effect.const)
            if not changes:
                raise ToolExecutionError("invalid_arguments", "nothing to update: give at least one field")
            sets = ", ".join(f"{_ident(c)} = ?" for c in changes)
            self._guarded(
                f"UPDATE {_ident(table)} SET {sets} WHERE {_ident(key or '')} = ?",
                [*changes.values(), row[key or ""]],
                table,
                sqlite3.SQLITE_UPDATE,
            )
            return self._fetch_one(Effect(kind="read", table=table, where={"k": key or ""}), {"k": row[key or ""]})
        if effect.kind == "delete":
            row = self._fetch_one(effect, args)
            self._check_require(effect, row)
            self._guarded(
                f"DELETE FROM {_ident(table)} WHERE {_ident(key or '')} = ?", [row[key or ""]], table, sqlite3.SQLITE_DELETE
            )
            return {"deleted": row[key or ""]}
        raise ToolExecutionError("invalid_schema", f"unknown effect kind {effect.kind!r}")

    def _next_key(self, table: str, key: str, prefix: str) -> str:
        cur = self._guarded(f"SELECT {_ident(key)} FROM {_ident(table)}", [], table, sqlite3.SQLITE_SELECT)
        best = 0
        for (value,) in cur.fetchall():
            text = str(value)
            if text.startswith(prefix) and text[len(prefix):].isdigit():
                best = max(best, int(text[len(prefix):]))
        return f"{prefix}{best + 1:04d}"

    # -- state -----------------------------------------------------------------------------------
    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Every table's rows, ordered by primary key."""
        with self._lock:
            out = {}
            for table, key in self._keys.items():
                cur = self.conn.execute(f"SELECT * FROM {_ident(table)} ORDER BY {_ident(key)}")
                out[table] = decode_rows(cur.fetchall(), self._json.get(table, frozenset()))
            return out

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        """One table's rows, ordered by primary key."""
        with self._lock:
            cur = self.conn.execute(f"SELECT * FROM {_ident(table)} ORDER BY {_ident(self._keys[table])}")
            return decode_rows(cur.fetchall(), self._json.get(table, frozenset()))

    def digest(self) -> str:
        """Canonical digest of the current state (comparable with :meth:`DatabaseState.digest`)."""
        return state_digest(self.rows(), self._keys)


_SAFE_FUNCTIONS = frozenset({"count", "lower", "upper", "length", "abs", "coalesce", "min", "max", "sum"})
_TEMPLATES: dict[str, sqlite3.Connection] = {}
_TEMPLATE_LOCK = threading.Lock()
_TEMPLATE_LIMIT = 64
# id(state) -> (state, template key): the key is a canonical digest of every row, too costly to recompute for
# each rollout (it was ~20% of a rollout's CPU); the state is kept so its id cannot be reused while cached.
_KEYS: dict[int, tuple[DatabaseState, str]] = {}
_KEY_LIMIT = 4096


def _template_key(state: DatabaseState) -> str:
    hit = _KEYS.get(id(state))
    if hit is not None and hit[0] is state:
        return hit[1]
    key = state.digest() + "|" + repr([(t.name, t.primary_key, t.columns) for t in state.tables])
    with _TEMPLATE_LOCK:
        if len(_KEYS) >= _KEY_LIMIT:
            _KEYS.pop(next(iter(_KEYS)))
        _KEYS[id(state)] = (state, key)
    return key


def _template_for(state: DatabaseState) -> sqlite3.Connection:
    """A cached, fully loaded in-memory database for ``state``; rollouts copy it with ``backup``."""
    digest = _template_key(state)
    with _TEMPLATE_LOCK:
        conn = _TEMPLATES.get(digest)
        if conn is not None:
            return conn
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        for table in state.tables:
            cols = ", ".join(
                f"{_ident(c.name)} {c.type if c.type in ('TEXT', 'INTEGER', 'REAL') else 'TEXT'}"
                + (" PRIMARY KEY" if c.name == table.primary_key else "")
                for c in table.columns
            )
            conn.execute(f"CREATE TABLE {_ident(table.name)} ({cols})")
            names = [c.name for c in table.columns]
            conn.executemany(
                f"INSERT INTO {_ident(table.name)} ({', '.join(_ident(n) for n in names)}) "
                f"VALUES ({', '.join('?' for _ in names)})",
                [[encode_value(row.get(n)) for n in names] for row in state.rows.get(table.name, ())],
            )
        if len(_TEMPLATES) >= _TEMPLATE_LIMIT:
            _TEMPLATES.pop(next(iter(_TEMPLATES))).close()
        _TEMPLATES[digest] = conn
        return conn


def _table_changes(initial: DatabaseState, table: Any, final: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    key = table.primary_key
    before = {str(r[key]): dict(r) for r in initial.rows.get(table.name, ())}
    after = {str(r[key]): dict(r) for r in final}
    diff: dict[str, dict[str, Any] | None] = {}
    for k, row in after.items():
        if before.get(k) != row:
            diff[k] = row
    for k in before:
        if k not in after:
            diff[k] = None
    return dict(sorted(diff.items()))


def compute_changes(
    initial: DatabaseState, final_rows: Mapping[str, list[dict[str, Any]]]
) -> dict[str, dict[str, dict[str, Any] | None]]:
    """Rows of ``final_rows`` that differ from ``initial``: table -> key -> row (None when deleted)."""
    changes: dict[str, dict[str, dict[str, Any] | None]] = {}
    for table in initial.tables:
        diff = _table_changes(initial, table, final_rows.get(table.name, []))
        if diff:
            changes[table.name] = diff
    return changes


def _table_json(rows: list[dict[str, Any]], key: str) -> str:
    """One table's part of :func:`state_digest`'s canonical JSON (rows sorted as it sorts them)."""
    return canonical_json(sorted(rows, key=lambda r: str(r.get(key, ""))))


# template key -> table -> (canonical JSON of the template's rows, their changes from the initial state)
_CLEAN: dict[str, dict[str, tuple[str, dict[str, dict[str, Any] | None]]]] = {}


def _clean_tables(state: DatabaseState) -> dict[str, tuple[str, dict[str, dict[str, Any] | None]]]:
    """Per table, what :meth:`SQLiteSession.final_state` needs when no write touched it: computed once per
    initial state from the template database (the rows exactly as SQLite returns them)."""
    tkey = _template_key(state)
    cached = _CLEAN.get(tkey)
    if cached is not None:
        return cached
    template = _template_for(state)
    out = {}
    with _TEMPLATE_LOCK:
        template.row_factory = sqlite3.Row
        for table in state.tables:
            cur = template.execute(f"SELECT * FROM {_ident(table.name)} ORDER BY {_ident(table.primary_key)}")
            rows = decode_rows(cur.fetchall(), _json_columns(state)[table.name])
            out[table.name] = (_table_json(rows, table.primary_key), _table_changes(state, table, rows))
        if len(_CLEAN) >= _TEMPLATE_LIMIT:
            _CLEAN.pop(next(iter(_CLEAN)))
        _CLEAN[tkey] = out
    return out


class SQLiteSession:
    """One rollout's tools: a private copy of the task's database."""

    def __init__(self, task: Task, *, timeout_s: float) -> None:
        if task.initial_state is None:
            raise ValueError(f"task {task.id} has no initial_state; the sqlite tool simulator needs a database")
        self.task = task
        self.db = SQLiteDatabase(task.initial_state, timeout_s=timeout_s)
        self._tools = {t.name: t for t in task.tools}

    async def call(self, call: ToolCall) -> ToolResult:
        """Execute one tool call and return its observation."""
        if call.error:
            return ToolResult(content={"error": "malformed_call", "message": call.error}, ok=False)
        spec = self._tools.get(call.name)
        if spec is None:
            return ToolResult(
                content={"error": "unknown_tool", "message": f"no tool named {call.name!r}; use one of {sorted(self._tools)}"},
                ok=False,
            )
        result = self.db.execute(spec, call.arguments)
        return ToolResult(content=result, ok="error" not in result, wrote=spec.writes and "error" not in result)

    def final_state(self) -> StateChange:
        """The session's end state: digest and rows changed from the initial state.

        Equal to ``state_digest(rows)`` and ``compute_changes(initial, rows)`` over every table, but tables no
        write touched reuse their template's parts (cached per initial state): most rollouts write one table
        or none, and the digest of the whole database was ~17% of a rollout's CPU."""
        initial = self.task.initial_state
        assert initial is not None
        clean = _clean_tables(initial)
        parts: dict[str, str] = {}
        changes: dict[str, dict[str, dict[str, Any] | None]] = {}
        for table in initial.tables:
            if table.name in self.db.dirty:
                rows = self.db.table_rows(table.name)
                parts[table.name] = _table_json(rows, table.primary_key)
                diff = _table_changes(initial, table, rows)
            else:
                parts[table.name], diff = clean[table.name]
            if diff:
                changes[table.name] = json.loads(json.dumps(diff)) if table.name not in self.db.dirty else diff
        text = "{" + ",".join(json.dumps(name, ensure_ascii=False) + ":" + parts[name] for name in sorted(parts)) + "}"
        return StateChange(
            digest=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            changes=changes,
        )

    async def aclose(self) -> None:
        """Release the database."""
        self.db.close()


class SQLiteToolSimulator:
    """Executes database tools for real on a per-rollout copy of the task's initial state.

    Options (``[plugins.sqlite]``): ``timeout_s`` (float, default 1.0) bounds each statement.
    """

    name = "sqlite"

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = float(timeout_s)

    async def start(self, task: Task, seed: int) -> SQLiteSession:
        """Open a fresh session on a private copy of the task's database."""
        return SQLiteSession(task, timeout_s=self.timeout_s)


@hookimpl
def synth_register_tool_simulators(register: Any) -> None:
    """Register the ``sqlite`` tool simulator."""
    register("sqlite", SQLiteToolSimulator, description="execute declarative read/write tools on a real SQLite copy")
