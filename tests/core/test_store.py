"""The run store: idempotent appends, repair of a killed write, atomic run-directory creation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from synthagent.core.errors import RunDirectoryError, StageError
from synthagent.core.models import Rubric
from synthagent.core.store import JsonlFile, RunStore


def rubric(i: int) -> Rubric:
    return Rubric(f"r{i}", f"t{i}", "workflow", (), {})


def test_append_is_idempotent_by_id(tmp_path: Path) -> None:
    f = JsonlFile(tmp_path / "r.jsonl", Rubric, readonly=False)
    assert f.append(rubric(1)) and not f.append(rubric(1)) and f.append(rubric(2))
    f.close()
    again = JsonlFile(tmp_path / "r.jsonl", Rubric, readonly=False)
    assert not again.append(rubric(2))
    assert [r.id for r in again.load()] == ["r1", "r2"]


def test_partial_last_line_from_a_kill_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    f = JsonlFile(path, Rubric, readonly=False)
    f.append(rubric(1))
    f.close()
    with open(path, "ab") as fh:
        fh.write(b'{"id": "r2", "task_id": "t2", "buil')
    again = JsonlFile(path, Rubric, readonly=False)
    assert again.repaired_bytes > 0 and again.ids == {"r1"}
    assert again.append(rubric(2))
    again.close()
    assert [r.id for r in JsonlFile(path, Rubric).load()] == ["r1", "r2"]


def test_corrupted_middle_line_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(StageError, match="line 2 is corrupted"):
        JsonlFile(path, Rubric)


def test_create_refuses_existing_and_leaves_no_temporary(tmp_path: Path) -> None:
    RunStore.create(tmp_path, "a", {"x": 1})
    with pytest.raises(RunDirectoryError, match="already exists; pass --resume"):
        RunStore.create(tmp_path, "a", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert (tmp_path / "a" / "manifest.json").is_file() and (tmp_path / "a" / "exports").is_dir()


def test_unwritable_parent_is_refused(tmp_path: Path) -> None:
    # /proc refuses new folders even for root (CI runs as root, so chmod alone would not do).
    with pytest.raises(RunDirectoryError, match="cannot create a run in|not writable"):
        RunStore.create(Path("/proc/synthagent-unwritable"), "a", {})
    if os.geteuid() != 0:  # as a normal user, a read-only folder is refused before anything is made
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(RunDirectoryError, match="not writable"):
            RunStore.create(ro / "sub", "a", {})


def test_out_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="is not a directory"):
        RunStore.create(tmp_path / "file" / "runs", "a", {})
