"""Nested JSON values (lists, objects) in tool arguments, rows and state changes run end to end with checkers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import attrs
from click.testing import CliRunner

from synthagent.core.cli import cli
from synthagent.core.models import Task, Trajectory, from_json_dict
from synthagent.plugins.rubrics.checkers import _replay, evaluate, parse_checker

sys.path.insert(0, str(Path(__file__).parent))
from nested_pack import PASSENGERS, PAYMENT, nested_domain  # noqa: E402


def test_nested_values_run_end_to_end_with_checkers_that_discriminate(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "airline.json").write_text(json.dumps(nested_domain()))
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run", "-q", "--out", str(out), "--name", "n", "--tasks", "6",
                                      "--set", f'plugins.offline-domains.domains_dir="{pack}"'])
    assert result.exit_code == 0, (result.stderr, result.exception)
    root = out / "n"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["tasks"] == summary["scores"] == 6 and summary["success_rate"] == 1.0
    assert summary["checkers"]["kept"] > 0 and summary["checkers"]["demo_failed"] == 0

    # every record is strict JSON and the nested values survive the round trip
    for name in ("tasks", "trajectories", "rubrics", "scores"):
        for line in (root / f"{name}.jsonl").read_text().splitlines():
            json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    tasks = {t.id: t for t in (from_json_dict(Task, json.loads(x)) for x in (root / "tasks.jsonl").open())}
    trajs = [from_json_dict(Trajectory, json.loads(x)) for x in (root / "trajectories.jsonl").open()]
    task = tasks[trajs[0].task_id]
    changed = next(iter(task.gold_state.changes["bookings"].values()))
    assert changed["passengers"] == PASSENGERS and changed["payment"] == PAYMENT
    assert trajs[0].final_state_changes["bookings"] == task.gold_state.changes["bookings"]

    rubric = next(json.loads(x) for x in (root / "rubrics.jsonl").open() if json.loads(x)["task_id"] == task.id)
    checkers = [parse_checker(c["spec"]["checker"]) for c in rubric["criteria"] if c["check"] == "checker"]
    nested = [c for c in checkers if any(a.get("call", {}).get("args", {}).get("passengers") == PASSENGERS
                                         for a in c["all"])]
    state = [c for c in checkers if any(a.get("state", {}).get("field") == "passengers" for a in c["all"])]
    assert nested and state, [c["id"] for c in checkers]
    assert all(evaluate(c, task, trajs[0])[0] for c in checkers)

    # a corrupted nested argument (one passenger's seat) fails the nested checkers
    calls = [c for m in trajs[0].messages if m.role == "assistant" for c in m.tool_calls]
    bad_passengers = [dict(PASSENGERS[0], seat="99Z"), *PASSENGERS[1:]]
    corrupted = [attrs.evolve(c, arguments={**c.arguments, "passengers": bad_passengers})
                 if c.name == "rebook_passengers" else c for c in calls]
    replay = _replay(task, trajs[0], corrupted, None)
    assert replay.final_state_changes["bookings"] != task.gold_state.changes["bookings"]
    for checker in nested + state:
        assert not evaluate(checker, task, replay)[0], checker["id"]
    # and the untouched replay still passes them (the checkers compare values, not object identity)
    assert all(evaluate(c, task, _replay(task, trajs[0], calls, None))[0] for c in nested + state)


def test_checker_grammar_accepts_nested_values_and_rejects_non_json() -> None:
    checker = {"id": "c", "all": [{"call": {"tool": "t", "args": {"p": [{"a": [1, {"b": None}]}]}}},
                                  {"state": {"table": "x", "key": "k", "field": "f", "equals": {"m": [1.5]}}}]}
    assert parse_checker(checker)["all"][0]["call"]["args"]["p"] == [{"a": [1, {"b": None}]}]
    bad = {"id": "c", "all": [{"call": {"tool": "t", "args": {"p": [float("nan")]}}}]}
    try:
        parse_checker(bad)
    except ValueError as exc:
        assert "args maps names to JSON values" in str(exc)
    else:
        raise AssertionError("a NaN inside a nested argument was accepted")
