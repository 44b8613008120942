"""Every hidden fact must be needed, and a corruption must corrupt (issue 24, point 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.models import Fact, Task
from synthagent.core.taskcheck import needs_a_question, unneeded_facts
from synthagent.plugins.common.corruptions import default_for, extra_write
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
from synthagent.plugins.simulators.tools.sqlite import SQLiteDatabase


def _pick_by_fact_task(tasks: list[Task]) -> tuple[Task, int, int]:
    """A task with a ``step:N+fact:F`` binding: (task, the picking step, N)."""
    for t in tasks:
        for i, step in enumerate(t.workflow):
            for text in step.bindings.values():
                if "+fact:" in text:
                    return t, i, int(text.split(":")[1].split("+")[0])
    raise AssertionError("no task picks a row by a fact")


def test_a_fact_that_picks_from_a_one_row_lookup_is_not_needed() -> None:
    tasks = OfflineDomainsGenerator().sample(200, seed=1)
    task, picking, lookup = _pick_by_fact_task(tasks)
    binding = next(b for b in task.workflow[picking].bindings.values() if "+fact:" in b)
    fact_name = binding.split("+fact:")[1]
    assert fact_name in {f.name for f in (*task.user_context, *task.visible_facts)}
    hidden = tuple(f for f in (*task.user_context, *task.visible_facts) if f.name == fact_name)
    as_hidden = attrs.evolve(task, user_context=hidden,
                             visible_facts=tuple(f for f in task.visible_facts if f.name != fact_name))
    spec = task.tool(task.workflow[lookup].tool or "")
    assert spec is not None and spec.effect is not None and task.initial_state is not None
    table = spec.effect.table
    rows = task.initial_state.rows[table]
    where = {col: task.workflow[lookup].arguments[p] for p, col in spec.effect.where.items()
             if p in task.workflow[lookup].arguments}
    matching = [r for r in rows if all(str(r.get(c)).lower() == str(v).lower() for c, v in where.items())]
    others = [r for r in rows if r not in matching]
    # keep one matching row: the lookup finds one, so the fact that picks among its rows picks nothing
    one = attrs.evolve(as_hidden, initial_state=attrs.evolve(task.initial_state,
                                                             rows={**task.initial_state.rows,
                                                                   table: (matching[0], *others)}))
    assert fact_name in unneeded_facts(one) and "returns 1 row" in unneeded_facts(one)[fact_name]
    if len(matching) > 1:  # with several rows to choose from, it is needed
        assert fact_name not in unneeded_facts(as_hidden)


def test_builtin_packs_hide_only_needed_facts() -> None:
    tasks = OfflineDomainsGenerator().sample(400, seed=1)
    hidden = sum(len(t.user_context) for t in tasks)
    assert hidden > 400  # most tasks hide one or more facts
    assert [t.id for t in tasks if unneeded_facts(t)] == []  # was 72 of 676 hidden facts (20 tasks with none needed)
    for t in tasks:  # a fact the agent need not ask for is stated by the user instead
        for f in t.visible_facts:
            assert f.statement in t.instruction
    assert [t.id for t in tasks if not needs_a_question(t)] == []  # those choices are drawn again


PLUGIN = """
import attrs
from synthagent.core.hookspecs import hookimpl
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator


class Bare(OfflineDomainsGenerator):
    name = "bare"

    def iter_tasks(self, count, seed, done_slots=frozenset()):
        for i, t in enumerate(super().iter_tasks(count, seed, done_slots)):
            if i % 2 == 0:  # every other task states every fact: nothing left to ask
                t = attrs.evolve(t, user_context=(), visible_facts=(*t.visible_facts, *t.user_context),
                                 instruction=t.full_instruction)
            yield t


@hookimpl
def synth_register_task_generators(register):
    register("bare", Bare, description="offline tasks, half with nothing hidden")
"""


def test_a_task_with_nothing_hidden_is_kept_and_counted(synth: Any, tmp_path: Path) -> None:
    (tmp_path / "bare_plugin.py").write_text(PLUGIN)
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "r", "--tasks", "6", "--plugin", "bare_plugin",
                    "--set", "generator=bare"], env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    root = tmp_path / "r"
    tasks = [json.loads(line) for line in (root / "tasks.jsonl").read_text().splitlines()]
    bare = sum(1 for t in tasks if not t["user_context"])
    assert len(tasks) == 6 and bare == 3
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["no_question"] == 3, manifest["stages"]["generate"]
    assert (root / "run.log").read_text().count("hides no fact the agent needs") == 3


def test_a_write_of_the_value_already_there_is_no_corruption() -> None:
    tasks = OfflineDomainsGenerator().sample(200, seed=3)
    for task in tasks:
        gold = {s.tool for s in task.workflow if s.writes}
        spare = [t for t in task.tools if t.writes and t.effect is not None and t.effect.kind == "update"
                 and t.effect.set and t.name not in gold]
        if spare and task.initial_state is not None:
            break
    else:
        raise AssertionError("no task with a spare update tool")
    spec = spare[0]
    assert spec.effect is not None and task.initial_state is not None
    props = spec.parameters.get("properties", {})
    # every row already holds the value the corruption would write: the update changes nothing
    sets = {c: default_for(props.get(p, {})) for p, c in spec.effect.set.items()}
    table = spec.effect.table
    rows = tuple({**r, **sets} for r in task.initial_state.rows[table])
    only = attrs.evolve(task, tools=(spec,), initial_state=attrs.evolve(task.initial_state,
                                                                           rows={**task.initial_state.rows, table: rows}))
    found = extra_write(only)
    if found is not None:  # a write that is offered must change the database
        db = SQLiteDatabase(only.initial_state)
        try:
            db.execute(spec, found[1])
            assert db.digest() != only.initial_state.digest()
        finally:
            db.close()
    # on the built-in tasks every offered corruption changes the state
    for t in tasks[:60]:
        x = extra_write(t)
        if x is None:
            continue
        db = SQLiteDatabase(t.initial_state)
        try:
            db.execute(t.tool(x[0]), x[1])
            assert db.digest() != t.initial_state.digest(), (t.id, x)
        finally:
            db.close()


def test_facts_without_a_database_count_as_needed() -> None:
    task = OfflineDomainsGenerator().sample(5, seed=0)[0]
    bare = attrs.evolve(task, initial_state=None, gold_state=None,
                        user_context=(*task.user_context, Fact("x", "1", "x", ("x",))))
    assert unneeded_facts(bare) == {}
