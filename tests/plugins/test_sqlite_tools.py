"""Database tools: declarative effects, argument checks, and the sandbox around every statement."""

from __future__ import annotations

import sqlite3

import pytest

from synthagent.core.models import Column, DatabaseState, Effect, Table, ToolSpec
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase, ToolExecutionError, compute_changes

STATE = DatabaseState(
    (Table("accounts", "account_id", (Column("account_id", "TEXT"), Column("owner", "TEXT"),
                                      Column("balance", "REAL"), Column("status", "TEXT"))),
     Table("secrets", "k", (Column("k", "TEXT"), Column("v", "TEXT")))),
    {"accounts": [{"account_id": "A0001", "owner": "Ann", "balance": 10.0, "status": "open"},
                  {"account_id": "A0002", "owner": "Bo", "balance": 5.5, "status": "frozen"}],
     "secrets": [{"k": "s", "v": "hidden"}]},
)
P = {"type": "object", "properties": {"account_id": {"type": "string"}, "owner": {"type": "string"},
                                      "status": {"type": "string", "enum": ["open", "closed"]}}}


def tool(effect: Effect, required=("account_id",)) -> ToolSpec:
    return ToolSpec("t", "d", {**P, "required": list(required)}, effect=effect)


@pytest.fixture
def db():
    d = SQLiteDatabase(STATE, timeout_s=0.5)
    yield d
    d.close()


def test_read_update_insert_delete(db: SQLiteDatabase) -> None:
    get = tool(Effect(kind="read", table="accounts", where={"account_id": "account_id"}, columns=("owner",)))
    assert db.execute(get, {"account_id": "A0001"}) == {"owner": "Ann"}
    close = tool(Effect(kind="update", table="accounts", where={"account_id": "account_id"}, const={"status": "closed"},
                        require={"status": ["open"]}))
    assert db.execute(close, {"account_id": "A0001"})["status"] == "closed"
    assert db.execute(close, {"account_id": "A0002"})["error"] == "precondition_failed"
    new = tool(Effect(kind="insert", table="accounts", values={"owner": "owner"}, const={"status": "open"},
                      key="account_id", key_prefix="A"), required=("owner",))
    assert db.execute(new, {"owner": "Cy"})["account_id"] == "A0003"
    drop = tool(Effect(kind="delete", table="accounts", where={"account_id": "account_id"}))
    assert db.execute(drop, {"account_id": "A0002"}) == {"deleted": "A0002"}
    changes = compute_changes(STATE, db.rows())
    assert set(changes["accounts"]) == {"A0001", "A0002", "A0003"} and changes["accounts"]["A0002"] is None


def test_arguments_are_checked_against_the_schema(db: SQLiteDatabase) -> None:
    get = tool(Effect(kind="read", table="accounts", where={"account_id": "account_id", "status": "status"}))
    assert "missing required parameter 'account_id'" in db.execute(get, {})["message"]
    assert "unknown parameter 'acct'" in db.execute(get, {"account_id": "A0001", "acct": 1})["message"]
    assert "must be string" in db.execute(get, {"account_id": 7})["message"]
    assert "must be one of" in db.execute(get, {"account_id": "A0001", "status": "gone"})["message"]
    assert db.execute(get, {"account_id": "A9999"})["error"] == "not_found"


def test_injection_in_values_is_inert(db: SQLiteDatabase) -> None:
    get = tool(Effect(kind="read", table="accounts", where={"account_id": "account_id"}, many=True))
    before = db.digest()
    for payload in ["A0001' OR '1'='1", "x'; DROP TABLE accounts; --", "A0001\"; ATTACH DATABASE '/tmp/x' AS x; --"]:
        assert db.execute(get, {"account_id": payload}) == {"items": []}
    assert db.digest() == before


@pytest.mark.parametrize("effect", [
    Effect(kind="read", table="accounts; DROP TABLE accounts", where={"account_id": "account_id"}),
    Effect(kind="read", table="accounts", where={"account_id": "account_id) OR 1=1 --"}),
    Effect(kind="read", table="accounts", where={"account_id": "account_id"}, columns=("* FROM secrets --",)),
    Effect(kind="update", table="accounts", where={"account_id": "account_id"}, const={"status = 'x', owner": "y"}),
])
def test_injection_in_identifiers_is_refused(db: SQLiteDatabase, effect: Effect) -> None:
    before = db.digest()
    result = db.execute(tool(effect), {"account_id": "A0001"})
    assert result["error"] == "invalid_schema"
    assert db.digest() == before


def test_authorizer_denies_other_tables_attach_and_pragma(db: SQLiteDatabase) -> None:
    for sql, table, action in [
        ("SELECT * FROM secrets", "accounts", sqlite3.SQLITE_SELECT),
        ("ATTACH DATABASE ':memory:' AS other", "accounts", sqlite3.SQLITE_SELECT),
        ("PRAGMA writable_schema = 1", "accounts", sqlite3.SQLITE_SELECT),
        ("DELETE FROM accounts", "accounts", sqlite3.SQLITE_UPDATE),
        ("SELECT load_extension('x')", "accounts", sqlite3.SQLITE_SELECT),
        ("CREATE TEMP TRIGGER t AFTER INSERT ON accounts BEGIN SELECT 1; END", "accounts", sqlite3.SQLITE_INSERT),
    ]:
        with pytest.raises(ToolExecutionError) as err:
            db._guarded(sql, [], table, action)
        assert err.value.code == "denied", sql


def test_pathological_query_is_stopped_by_the_timeout(db: SQLiteDatabase) -> None:
    slow = "SELECT count(*) FROM " + ", ".join(f"accounts a{i}" for i in range(40))  # 2**40 rows
    with pytest.raises(ToolExecutionError) as err:
        db._guarded(slow, [], "accounts", sqlite3.SQLITE_SELECT)
    assert err.value.code == "timeout"


def test_final_state_reuses_untouched_tables_and_equals_the_full_computation() -> None:
    """final_state() takes the digest parts of tables no write touched from a per-state cache; over the oracle
    and its corruptions (extra writes, wrong rows, no writes) it equals the digest and changes of every row."""
    import asyncio

    from synthagent.core.agent_loop import run_episode
    from synthagent.core.models import state_digest
    from synthagent.core.protocols import GenerationContext
    from synthagent.core.registry import load_plugins
    from synthagent.plugins.simulators.tools.sqlite import compute_changes

    plugins = load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    gen = plugins.registry("generator").get("offline-domains").create({})
    tools = plugins.registry("tools").get("sqlite").create({})
    user = plugins.registry("user").get("rule").create({})

    async def main() -> int:
        tasks = [t async for t in gen.generate(GenerationContext(count=24, seed=4))]
        checked = 0
        for i, task in enumerate(tasks):
            corruption = ("none", "extra_write", "wrong_row", "nothing", "skip_step", "wrong_argument")[i % 6]
            oracle = plugins.registry("llm").get("oracle").create({"corruption": corruption})
            for _ in range(2):  # the second episode of a task hits the cache
                session = await tools.start(task, 0)
                await run_episode(task, policy=oracle, tools=session, user=await user.start(task, 0), max_turns=30)
                fast = session.final_state()
                rows = session.db.rows()
                keys = {t.name: t.primary_key for t in task.initial_state.tables}
                assert fast.digest == state_digest(rows, keys), (task.id, corruption)
                assert fast.changes == compute_changes(task.initial_state, rows), (task.id, corruption)
                await session.aclose()
                checked += 1
        return checked

    assert asyncio.run(main()) == 48
