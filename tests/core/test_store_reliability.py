"""One writer per run directory, readers that never modify, storable records, disk full (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synthagent.core.errors import RunDirectoryError, StageError
from synthagent.core.models import Rubric
from synthagent.core.store import LOCK, JsonlFile, RunStore

DONE = {s: {"status": "done"} for s in ("generate", "simulate", "rubric", "score", "export")}


def rubric(i: int, pad: str = "") -> Rubric:
    return Rubric(f"r{i}", f"t{i}", "workflow" + pad, (), {})


def strict(line: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard constant {token}")

    return json.loads(line, parse_constant=refuse)


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = RunStore.create(tmp_path, "run", {"stages": {}})
    assert (tmp_path / "run" / LOCK).read_text().strip() == str(os.getpid())
    with pytest.raises(RunDirectoryError, match=rf"in use by another synth run \(pid {os.getpid()} holds"):
        RunStore.open(tmp_path / "run")
    reader = RunStore.open(tmp_path / "run", readonly=True)  # readers take no lock
    assert reader.readonly and reader.manifest == {"stages": {}}
    first.close()
    RunStore.open(tmp_path / "run").close()  # released by close()


def test_a_finished_writer_leaves_no_stale_lock_file(tmp_path: Path) -> None:
    RunStore.create(tmp_path, "run", {"stages": {}}).close()
    assert not (tmp_path / "run" / LOCK).exists()
    store = RunStore.open(tmp_path / "run")
    assert (tmp_path / "run" / LOCK).read_text().strip() == str(os.getpid())
    store.close()
    assert not (tmp_path / "run" / LOCK).exists()


def test_a_refused_writer_names_the_new_holder_not_the_killed_one(tmp_path: Path) -> None:
    """A new holder takes the lock first and writes its pid just after: a refused writer that reads the file in
    between must not name the previous (killed) holder."""
    root = tmp_path / "run"
    RunStore.create(tmp_path, "run", {"stages": {}}).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / LOCK).write_text(f"{dead.pid}\n")  # what a killed run leaves
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(root / LOCK)!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(0.5)  # the window between taking the lock and writing the pid, made wide
        os.ftruncate(fd, 0); os.pwrite(fd, f"{{os.getpid()}}\\n".encode(), 0)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        with pytest.raises(RunDirectoryError, match=rf"pid {holder.pid} holds"):
            RunStore.open(root)
    finally:
        holder.communicate("")


def test_reader_never_truncates_a_cut_line_and_writer_reopens_finished_stages(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run", {"stages": dict(DONE)})
    store.rubrics.append(rubric(1))
    store.close()
    path = tmp_path / "run" / "rubrics.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"id": "r2", "task_id": "t2", "buil')
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    reader = RunStore.open(tmp_path / "run", readonly=True)
    assert [r.id for r in reader.rubrics] == ["r1"] and reader.rubrics.repaired_bytes > 0
    with pytest.raises(StageError, match="read-only"):
        reader.rubrics.append(rubric(3))
    reader.close()
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
    writer = RunStore.open(tmp_path / "run")  # repair happens only here, under the lock
    assert writer.reopened == ["rubric", "score", "export"]
    assert not writer.stage_done("rubric") and writer.stage_done("simulate")
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["score"]["status"] == "pending"
    writer.close()
    assert path.read_bytes().endswith(b"\n") and len(path.read_bytes().splitlines()) == 1


WRITER = r"""
import sys
import textwrap
from pathlib import Path
from synthagent.core.models import Rubric
from synthagent.core.store import JsonlFile
f = JsonlFile(Path(sys.argv[1]), Rubric, readonly=False)
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    f.append(Rubric(f"r{i}", f"t{i}", "workflow" + "x" * 200_000, (), {}))
f.close()
"""


def test_a_reader_during_a_real_concurrent_write_loses_nothing(tmp_path: Path) -> None:
    """A writer process appends 200 records of 200 kB (each one write) while this process opens the file
    read-only again and again: no record is lost or cut, and the reader never sees a partial one."""
    path = tmp_path / "rubrics.jsonl"
    n = 200
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    reads, partial_seen = 0, 0
    while writer.poll() is None:
        reader = JsonlFile(path, Rubric, readonly=True)
        ids = [r.id for r in reader]  # every record it yields parses
        partial_seen += bool(reader.repaired_bytes)
        assert ids == [f"r{i}" for i in range(len(ids))]
        reads += 1
    assert writer.returncode == 0 and reads > 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == n
    assert [strict(line)["id"] for line in lines[:-1]] == [f"r{i}" for i in range(n)]


def test_the_store_refuses_what_a_strict_reader_could_not_read_back(tmp_path: Path) -> None:
    f = JsonlFile(tmp_path / "r.jsonl", Rubric, readonly=False)
    with pytest.raises(StageError, match=r"record 'r1' of r\.jsonl cannot be stored: .*surrogate"):
        f.append(Rubric("r1", "t1", "workflow\ud800", (), {}))
    with pytest.raises(StageError, match=r"record 'r2' of r\.jsonl cannot be stored: Out of range float"):
        f.append(Rubric("r2", "t2", "workflow", (), {"x": float("nan")}))
    assert f.append(rubric(3))
    f.close()
    assert [strict(line)["id"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == ["r3"]


def test_disk_full_reads_as_disk_full_and_leaves_no_partial_line(tmp_path: Path) -> None:
    """Writes go to /dev/full, where the kernel answers every write with ENOSPC."""
    f = JsonlFile(tmp_path / "r.jsonl", Rubric, readonly=False)
    f._fd = os.open("/dev/full", os.O_WRONLY)  # the kernel answers every write with ENOSPC
    with pytest.raises(StageError, match=r"^disk full: cannot write record 'r1'"):
        f.append(rubric(1))
    assert "r1" not in f
    os.close(f._fd)
    f._fd = None
    assert f.append(rubric(2))  # the file itself is untouched: the next record starts a clean line
    f.close()
    assert [strict(line)["id"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == ["r2"]
