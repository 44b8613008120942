"""Issue 24 point 4, "Nothing lost", at the store, record and config level: deep model output cannot break the
record converter, every record is type-checked when read, a `--from` rerun keeps the previous outputs until it
succeeds (a kill included), secrets are redacted, and `JsonlFile` opens read-only unless asked to write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthagent.core.errors import RunDirectoryError, StageError
from synthagent.core.models import (MAX_DEPTH, Message, Rubric, Score, Task, ToolCall, Trajectory, from_json_dict,
                                    nesting_problem, to_json_dict)
from synthagent.core.store import RERUN, JsonlFile, RunStore, UnstorableRecord


def nested(depth: int) -> dict:
    """``{"a": {"a": ... {}}}`` with ``depth`` objects."""
    data: dict = {}
    node = data
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return data


def deep_trajectory(depth: int, tid: str = "traj-deep") -> Trajectory:
    call = ToolCall("call_0", "lookup", nested(depth))
    return Trajectory(tid, "task-1", "openai", 0, 0, (Message("user", "hi"), Message("assistant", None, (call,))),
                      "user_stop", 1)


def strict(line: bytes) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard constant {token}")

    return json.loads(line.decode("utf-8", errors="strict"), parse_constant=refuse)


# -- 1. deep JSON ---------------------------------------------------------------------------------------------


def test_a_400_deep_argument_is_refused_by_name_and_the_file_stays_readable(tmp_path: Path) -> None:
    """The 2.8 kB reply nested 400 deep raised RecursionError in ``to_json_dict``; now the store refuses it with
    the path and writes nothing, and what it did write reads back."""
    text = json.dumps(nested(400))
    assert len(text) > 2700 and json.loads(text) == nested(400)  # valid JSON a model server can send
    f = JsonlFile(tmp_path / "trajectories.jsonl", Trajectory, readonly=False)
    f.append(deep_trajectory(40, "traj-ok"))
    with pytest.raises(UnstorableRecord) as info:
        f.append(deep_trajectory(400))
    message = str(info.value)
    assert "'traj-deep'" in message and f"nested deeper than {MAX_DEPTH} levels" in message
    assert "$.messages[1].tool_calls[0].arguments.a" in message
    assert isinstance(info.value, StageError)
    f.close()
    lines = (tmp_path / "trajectories.jsonl").read_bytes().splitlines()
    assert [strict(line)["id"] for line in lines] == ["traj-ok"]
    assert [t.id for t in JsonlFile(tmp_path / "trajectories.jsonl", Trajectory)] == ["traj-ok"]


def test_nesting_is_measured_without_recursion_at_any_depth() -> None:
    assert nesting_problem(deep_trajectory(MAX_DEPTH - 5)) is None  # the arguments sit at level 6 of the record
    assert nesting_problem(deep_trajectory(MAX_DEPTH - 4)) is not None
    problem = nesting_problem({"x": [nested(100_000)]})
    assert problem is not None and problem.startswith(f"nested deeper than {MAX_DEPTH} levels at $.x[0].a.a")
    with pytest.raises(ValueError, match="nested deeper than"):
        to_json_dict(deep_trajectory(10_000))


def test_a_line_too_deep_to_parse_is_a_named_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text('{"id": "s1", "x": ' + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(StageError, match="scores.jsonl line 1 is corrupted"):
        JsonlFile(path, Score)
    path.write_text("")
    reader = JsonlFile(path, Score)
    path.write_text('{"id": "s1", "x": ' + "[" * 5000 + "]" * 5000 + "}\n")  # appended after the scan
    with pytest.raises(RunDirectoryError, match=r"scores.jsonl:1: nested too deep to read"):
        reader.load()


# -- 3. every record type-checked when read -------------------------------------------------------------------


def score_row(**change: object) -> dict:
    row = {"id": "s1", "trajectory_id": "t1", "task_id": "task1", "rubric_id": "r1", "scorer": "rubric",
           "status": "ok", "total": 1.0, "success": False, "breakdown": [], "components": {}}
    row.update(change)
    return row


@pytest.mark.parametrize("change,needle", [
    ({"success": "false"}, 'must be true or false, got "false" @ $.success'),
    ({"total": "1.0"}, 'must be a number, got "1.0" @ $.total'),
    ({"task_id": 5}, "must be a string, got 5 @ $.task_id"),
    ({"extra": 1}, "unknown field(s) 'extra' @ $"),
    ({"total": float("nan")}, "must be a finite number, got nan @ $.total"),
    ({"components": {"subgoal": float("inf")}}, "must be a finite number, got inf @ $.components.subgoal"),
    ({"status": "fine"}, "must be one of 'ok', 'infra_error', 'judge_error', 'dropped', got fine @ $.status"),
    ({"breakdown": [{"criterion_id": "c", "kind": "subgoal", "passed": 1, "score": 1.0, "evidence": "",
                     "checker": "x"}]}, "must be true or false, got 1 @ $.breakdown[0].passed"),
])
def test_a_score_of_the_wrong_type_is_refused_naming_file_line_and_field(tmp_path: Path, change: dict,
                                                                         needle: str) -> None:
    path = tmp_path / "scores.jsonl"
    good = json.dumps(score_row(id="s0"))
    bad = json.dumps(score_row(**change))  # json.dumps writes NaN and Infinity as the bare words
    path.write_text(f"{good}\n{bad}\n")
    with pytest.raises(RunDirectoryError) as info:
        JsonlFile(path, Score).load()
    message = str(info.value)
    assert message.startswith(f"{path}:2: not a valid Score record: ") and needle in message, message


def test_the_other_records_are_checked_the_same_way() -> None:
    traj = to_json_dict(deep_trajectory(3))
    for cls, data, needle in [
        (Trajectory, {**traj, "sample": "0"}, 'must be an integer, got "0" @ $.sample'),
        (Trajectory, {**traj, "sample": True}, "must be an integer, got true @ $.sample"),
        (Trajectory, {**traj, "turns": 1.0}, "must be an integer, got 1.0 @ $.turns"),
        (Trajectory, {**traj, "timings": {"total": float("nan")}}, "got nan @ $.timings.total"),
        (Trajectory, {**traj, "messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "name": "f", "arguments": {"x": float("-inf")}}]}]},
         "got -inf @ $.messages[0].tool_calls[0].arguments.x"),
        (Rubric, {"id": "r", "task_id": "t", "builder": "b", "criteria": [], "weights": {"s": "1"}},
         'must be a number, got "1" @ $.weights[\'s\']'),
        (Rubric, {"id": "r", "task_id": "t", "builder": "b", "criteria": [], "surplus": 1}, "unknown field(s)"),
    ]:
        with pytest.raises(ValueError) as info:
            from_json_dict(cls, data)
        assert needle in str(info.value), (cls, str(info.value))
    assert from_json_dict(Trajectory, traj) == deep_trajectory(3)  # what the store writes reads back
    assert from_json_dict(Score, score_row(total=1)).total == 1.0  # an integral number is a number


def test_a_real_run_reads_back_strictly(tmp_path: Path) -> None:
    """Every record the pipeline writes passes the strict reader (the records of the default generator)."""
    import asyncio

    from synthagent.core.config import load_config
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.registry import load_plugins

    pipeline = Pipeline(load_config(None, ["tasks=4"]), load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}))
    pipeline.open_store(tmp_path / "r", resume=False)
    summary = asyncio.run(pipeline.run())
    store = RunStore.open(tmp_path / "r", readonly=True)
    assert len(store.tasks.load()) == len(store.scores.load()) == summary["scores"] == 4
    assert all(isinstance(t, Task) for t in store.tasks)
    json.dumps(summary, allow_nan=False)


# -- 5. JsonlFile is read-only unless asked -------------------------------------------------------------------


def test_a_default_jsonl_file_never_modifies_a_file_with_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    whole = json.dumps(to_json_dict(Rubric("r1", "t1", "workflow", ()))) + "\n"
    cut = json.dumps(to_json_dict(Rubric("r2", "t2", "workflow", ())))[:25]  # a record being appended
    path.write_bytes((whole + cut).encode())
    before = path.read_bytes()
    reader = JsonlFile(path, Rubric)
    assert reader.readonly and [r.id for r in reader] == ["r1"] and reader.repaired_bytes == len(cut)
    with pytest.raises(StageError, match="read-only"):
        reader.append(Rubric("r3", "t3", "workflow", ()))
    with pytest.raises(StageError, match="read-only"):
        reader.reset()
    assert path.read_bytes() == before
    writer = JsonlFile(path, Rubric, readonly=False)  # the writer, asked for explicitly, drops the cut line
    assert path.read_bytes() == whole.encode() and writer.append(Rubric("r3", "t3", "workflow", ()))
    writer.close()


# -- 2. --from keeps the previous outputs until the rerun succeeds --------------------------------------------


def _finished_store(tmp_path: Path) -> tuple[RunStore, dict[str, bytes]]:
    stages = {s: {"status": "done"} for s in ("generate", "simulate", "rubric", "score", "export")}
    store = RunStore.create(tmp_path, "r", {"stages": stages, "timings": {"score": 1.0}})
    store.scores.append(from_json_dict(Score, score_row(id="s-old")))
    store.rubrics.append(Rubric("r-old", "task1", "workflow", ()))
    (store.exports / "sft.jsonl").write_text('{"old": 1}\n')
    store.close()
    root = tmp_path / "r"
    return RunStore.open(root), {p: (root / p).read_bytes() for p in ("scores.jsonl", "exports/sft.jsonl")}


def _paths(store: RunStore) -> list[Path]:
    return [store.scores.path, store.exports / "sft.jsonl", store.exports / "rl.jsonl"]


def test_a_failed_rerun_puts_the_previous_outputs_back(tmp_path: Path) -> None:
    store, before = _finished_store(tmp_path)
    root = store.root
    store.begin_rerun(["score", "export"], _paths(store))
    assert not (root / "scores.jsonl").exists() and (root / RERUN / "scores.jsonl").exists()
    assert store.manifest["stages"]["score"] == {"status": "pending"}
    store.scores.reset()
    store.scores.append(from_json_dict(Score, score_row(id="s-new")))  # the rerun's partial output
    (root / "exports" / "rl.jsonl").write_text("new\n")  # did not exist before
    assert store.undo_rerun() == ["scores.jsonl", "exports/sft.jsonl"]
    assert {p: (root / p).read_bytes() for p in before} == before
    assert not (root / "exports" / "rl.jsonl").exists() and not (root / RERUN).exists()
    assert store.manifest["stages"]["score"] == {"status": "done"} and "rerun" not in store.manifest
    assert store.scores.ids == {"s-old"}
    store.close()
    assert "rerun" not in json.loads((root / "manifest.json").read_text())


def test_a_rerun_killed_at_any_point_is_undone_or_finished_by_the_next_writer(tmp_path: Path) -> None:
    """A kill (the process gone, the lock released) leaves the manifest's ``rerun`` entry; the next writer
    puts the previous outputs back, whether the kill came during the moves or during the stages, and keeps
    the new outputs when every rerun stage had finished."""
    # killed during the stages
    store, before = _finished_store(tmp_path)
    root = store.root
    store.begin_rerun(["score", "export"], _paths(store))
    store.scores.reset()
    store.scores.append(from_json_dict(Score, score_row(id="s-new")))
    store.close()  # the kill: nothing more happens in that process
    again = RunStore.open(root)
    assert "did not finish; the previous outputs were put back" in again.recovered
    assert {p: (root / p).read_bytes() for p in before} == before and again.scores.ids == {"s-old"}
    assert again.stage_done("score") and not (root / RERUN).exists()
    # killed half-way through the moves: one file set aside, the other still in place
    again.begin_rerun(["score", "export"], _paths(again))
    (root / "exports" / "sft.jsonl").write_bytes((root / RERUN / "exports" / "sft.jsonl").read_bytes())
    (root / RERUN / "exports" / "sft.jsonl").unlink()
    again.close()
    third = RunStore.open(root)
    assert {p: (root / p).read_bytes() for p in before} == before and third.stage_done("export")
    # killed after every rerun stage was done, before the clean-up: the new outputs are kept
    third.begin_rerun(["score", "export"], _paths(third))
    third.scores.reset()
    third.scores.append(from_json_dict(Score, score_row(id="s-new")))
    third.mark_stage("score", "done")
    third.mark_stage("export", "done")
    third.close()
    fourth = RunStore.open(root)
    assert "had finished its stages; its outputs are kept" in fourth.recovered
    assert fourth.scores.ids == {"s-new"} and not (root / RERUN).exists() and "rerun" not in fourth.manifest
    fourth.close()


# -- 4. secrets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url,expected", [
    ("http://u:KEY1@host:8000/v1", "http://u:***@host:8000/v1"),
    ("https://KEY1@host/v1", "https://***@host/v1"),
    ("http://host/v1?api-key=KEY1&model=m", "http://host/v1?api-key=***&model=m"),
    ("http://host/v1?key=KEY1", "http://host/v1?key=***"),
    ("http://host/v1?token=KEY1", "http://host/v1?token=***"),
    ("redis://:KEY1@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
])
def test_urls_lose_their_secrets_and_nothing_else(url: str, expected: str) -> None:
    from synthagent.core.redact import redact_config, redact_text, redact_url

    assert redact_url(url) == expected
    assert redact_text(f"cannot reach {url!r}: refused") == f"cannot reach {expected!r}: refused"
    assert redact_config({"llm": {"base_url": url}}) == {"llm": {"base_url": expected}}


def test_secret_named_values_are_redacted_in_text_and_config() -> None:
    from synthagent.core.redact import redact_config, redact_text

    assert redact_text("unknown config key 'llm.api_key' (from --set llm.api_key=KEY1)") == \
        "unknown config key 'llm.api_key' (from --set llm.api_key=***)"
    assert redact_text("Authorization: Bearer sk-KEY1KEY1KEY1") == "Authorization: Bearer ***"
    assert redact_text("api_key_env=OPENAI_API_KEY max_tokens=5") == "api_key_env=OPENAI_API_KEY max_tokens=5"
    data = {"llm": {"api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
            "plugins": {"x": {"api_key": "KEY1", "token": "KEY1", "key": "orders", "tokenizer": "t"}}}
    assert redact_config(data) == {"llm": {"api_key_env": "OPENAI_API_KEY", "max_tokens": 5},
                                   "plugins": {"x": {"api_key": "***", "token": "***", "key": "orders",
                                                     "tokenizer": "t"}}}


def test_a_bad_set_never_echoes_the_key() -> None:
    from synthagent.core.config import load_config
    from synthagent.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, ["llm.api_key=KEY1"])
    assert "KEY1" not in str(info.value) and "llm.api_key=***" in str(info.value)


def test_resume_compares_redacted_forms_and_takes_the_secret_given_again(tmp_path: Path) -> None:
    from synthagent.core.config import load_config
    from synthagent.core.pipeline import config_digest
    from synthagent.core.redact import redact_config
    from synthagent.core.resume import explicit_keys, resume_config

    url = "http://u:KEY1@127.0.0.1:9/v1"
    sets = ["llm.backend=openai", f"llm.base_url={url}", "seed=3"]
    config = load_config(None, sets)
    manifest = {"config": redact_config(config.to_dict())}
    assert "KEY1" not in json.dumps(manifest) and manifest["config"]["llm"]["base_url"] == "http://u:***@127.0.0.1:9/v1"
    again = resume_config(manifest, config, explicit_keys(None, sets, {}), tmp_path)
    assert again.llm.base_url == url and config_digest(again) == config_digest(config)  # the secret is used
    other = load_config(None, [sets[0], "llm.base_url=http://u:KEY2@127.0.0.1:9/v1", sets[2]])
    assert config_digest(other) == config_digest(config)  # a changed secret does not change the records
    with pytest.raises(RunDirectoryError) as info:  # not given again: said, without the secret
        resume_config(manifest, load_config(None, []), [], tmp_path)
    assert "secret in llm.base_url" in str(info.value) and "KEY1" not in str(info.value)
    wrong = load_config(None, ["llm.base_url=http://u:KEY1@elsewhere:9/v1"])
    with pytest.raises(RunDirectoryError) as info:
        resume_config(manifest, wrong, [("llm", "base_url")], tmp_path)
    assert "llm.base_url: stored \"http://u:***@127.0.0.1:9/v1\", given \"http://u:***@elsewhere:9/v1\"" in \
        str(info.value) and "KEY1" not in str(info.value)
