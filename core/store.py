"""The run store: one directory per run, append-only JSONL per stage, idempotent by record id.

Layout of ``<out>/<name>/``::

    manifest.json        config, loaded plugins with versions, prompt hashes, seed, stage status
    tasks.jsonl          one Task per line
    trajectories.jsonl   one Trajectory per line
    demonstrations.jsonl teacher demonstrations the rubric stage builds criteria from
    rubrics.jsonl        one Rubric per line
    scores.jsonl         one Score per line
    counts.jsonl         what each stage counted (requests, faults, drops), as deltas (:mod:`synthagent.core.counts`)
    summary.json         counts, rates and means (rewritten at the end of each run)
    run.log              the run's log (written by the CLI)
    exports/sft.jsonl    OpenAI messages + tools, ready for TRL SFT
    exports/sft_rejected.jsonl  trajectories left out of SFT, with score and reason
    exports/rl.jsonl     prompt + tools + task reference, for GRPO
    report/              written by ``synth report`` (HTML and plots)

Crash safety: each record is written with a single ``write`` on an ``O_APPEND`` descriptor. A process killed
mid-write can leave at most one partial last line; the next *writer* drops it and marks the stage that owns the
file (and every later stage) not done, so the dropped record is redone. Records already present (same id) are
never written twice, so a resumed run neither loses nor duplicates. ``manifest.json``, ``summary.json`` and the
exports are replaced atomically (write to a temporary file, then ``os.replace``). A new run directory appears
only once its manifest is complete.

One writer per run directory: a writer (:meth:`RunStore.create`, :meth:`RunStore.open`) holds an exclusive
``fcntl.flock`` on ``<run>/.lock`` until :meth:`RunStore.close` (or until its process dies: the kernel drops the
lock). A second writer fails at once with :class:`RunDirectoryError` naming the holder's pid. Readers
(``RunStore.open(root, readonly=True)``: ``synth show``, ``synth report``, the training environment) take no
lock and never modify a file: they read complete lines only, so a record being appended is simply not seen yet.

Storable records: a record is written only if a strict JSON reader can read it back (no NaN/Infinity, no lone
UTF-16 surrogate, nesting at most :data:`~synthagent.core.models.MAX_DEPTH` deep); otherwise
:class:`UnstorableRecord` names the record and nothing is written. Model output is cleaned where it enters
(:mod:`synthagent.core.toolcalls`); a rollout that still cannot be stored is dropped by its stage with a named
reason (``unstorable_trajectory``). Records are read strictly (:func:`~synthagent.core.models.from_json_dict`):
a wrong type, NaN or an unknown key is a :class:`RunDirectoryError` naming the file, the line and the field.

``--from STAGE``: the outputs of that stage and every later one are moved to ``<run>/.rerun/`` and put back if
the rerun fails or is killed (:meth:`RunStore.begin_rerun`); a :class:`JsonlFile` is read-only unless opened
with ``readonly=False``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from synthagent.core.errors import RunDirectoryError, StageError
from synthagent.core.models import RECORD_TYPES, RecordError, from_json_dict, to_json_dict

__all__ = ["JsonlFile", "RunStore", "write_json_atomic", "write_jsonl_atomic", "strict_json_line", "MANIFEST",
           "LOCK", "FILE_STAGES", "RERUN", "UnstorableRecord"]

T = TypeVar("T")
#: The file name of a run directory's manifest (config, plugins, stage status).
MANIFEST = "manifest.json"
#: The lock file a writer holds (``flock``) for as long as it has the run directory open.
LOCK = ".lock"
#: The pipeline stage that writes each record file (a record dropped from a file reopens that stage).
FILE_STAGES = {"tasks": "generate", "trajectories": "simulate", "demonstrations": "rubric", "rubrics": "rubric",
               "scores": "score"}
_STAGE_ORDER = ("generate", "simulate", "rubric", "score", "export")
#: The folder inside a run directory that holds the outputs a ``--from STAGE`` rerun replaces, until the rerun
#: succeeds (then it is deleted) or fails (then they are put back): :meth:`RunStore.begin_rerun`.
RERUN = ".rerun"


class UnstorableRecord(StageError):
    """A record a strict JSON reader could not read back (NaN, a lone surrogate, nesting deeper than
    :data:`~synthagent.core.models.MAX_DEPTH`): nothing was written. A stage storing model output drops the
    record with a named reason; anywhere else it stops the stage."""
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _os_problem(exc: OSError, what: str) -> StageError:
    """A one-line StageError for a failed write; a full disk says so."""
    if exc.errno in _DISK_FULL:
        return StageError(f"disk full: cannot write {what} ({exc.strerror}); free some space and continue with "
                          "`synth run --resume`")
    return StageError(f"cannot write {what}: {exc.strerror or exc}")


def strict_json_line(data: Any, what: str) -> bytes:
    """``data`` as one UTF-8 JSON line that a strict reader can parse back, or :class:`StageError` naming
    ``what`` (no NaN/Infinity, no lone surrogate)."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError as exc:
        raise UnstorableRecord(f"{what} cannot be stored: {exc} (a strict JSON reader could not read it back)") from exc
    except RecursionError:
        raise UnstorableRecord(f"{what} cannot be stored: it is nested too deep") from None
    try:
        return (text + "\n").encode("utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise UnstorableRecord(f"{what} cannot be stored: it holds a lone UTF-16 surrogate ({exc.reason} at character "
                         f"{exc.start})") from exc


def _fsync_dir(path: Path) -> None:
    """Make renames in folder ``path`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as pretty JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is retried; a full disk then raises ENOSPC)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would (0644 under umask 022)
            _write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _os_problem(exc, str(path)) from exc
        raise


def _umask() -> int:
    """The process umask: from /proc on Linux (no change to it), else by setting it and restoring it at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_jsonl_atomic(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` as JSON lines to ``path`` atomically (each row must be storable: :func:`strict_json_line`)."""
    write_text_atomic(path, "".join(strict_json_line(r, f"row {i + 1} of {path.name}").decode("utf-8")
                                    for i, r in enumerate(rows)))


class JsonlFile(Generic[T]):
    """An append-only JSONL file of one record type, with a set of the ids it holds.

    Read-only unless asked: ``JsonlFile(path, cls)`` never modifies the file (a script reading a live run
    cannot truncate the record being appended); the run store's writer passes ``readonly=False``.

    :param readonly: read without modifying anything (the default): a cut last line (a killed write, or a
        record being appended right now by the writer) is ignored, not truncated, and :meth:`append` refuses.
        ``readonly=False``: the writer, who drops a cut last line and appends.
    """

    def __init__(self, path: Path, cls: type[T], *, readonly: bool = True) -> None:
        self.path = path
        self.cls = cls
        self.readonly = readonly
        self._ids: set[str] = set()
        self._fd: int | None = None
        #: Bytes of a cut last line: dropped by a writer, ignored by a reader.
        self.repaired_bytes = 0
        self._scan()

    def _scan(self) -> None:
        self._ids.clear()
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = data.rfind(b"\n") + 1  # everything after the last newline is a partial (killed) write
        if good < len(data):
            self.repaired_bytes = len(data) - good
            if not self.readonly:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
        for lineno, line in enumerate(data[:good].splitlines(), 1):
            if not line.strip():
                continue
            try:
                self._ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise StageError(
                    f"{self.path} line {lineno} is corrupted ({exc}); remove that line and run with --resume"
                ) from exc

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> frozenset[str]:
        """The ids already written."""
        return frozenset(self._ids)

    def append(self, record: T) -> bool:
        """Write ``record`` unless its id is present; return True when written.

        :raises UnstorableRecord: the record is not storable (:func:`strict_json_line`, or nested deeper than
            :data:`~synthagent.core.models.MAX_DEPTH`); nothing was written.
        :raises StageError: the disk is full, or the file was opened read-only. A failed write leaves the file
            as it was.
        """
        if self.readonly:
            raise StageError(f"{self.path} was opened read-only")
        try:
            data = to_json_dict(record)
        except RecordError as exc:  # nested deeper than MAX_DEPTH: checked before the recursive converter
            raise UnstorableRecord(f"cannot be stored in {self.path.name}: {exc}") from None
        record_id = data["id"]
        if record_id in self._ids:
            return False
        line = strict_json_line(data, f"record {record_id!r} of {self.path.name}")
        self._open_for_append()
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, line)
        except OSError as exc:
            with contextlib.suppress(OSError):  # no partial line left for the next record to run into
                os.ftruncate(self._fd, size)
            raise _os_problem(exc, f"record {record_id!r} to {self.path}") from exc
        self._ids.add(record_id)
        return True

    def _open_for_append(self) -> None:
        if self.readonly:
            raise StageError(f"{self.path} was opened read-only")
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _os_problem(exc, str(self.path)) from exc

    def load(self) -> list[T]:
        """Every record, in file order."""
        return list(self)

    def __iter__(self) -> Iterator[T]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.endswith(b"\n") and line.strip():  # a line without its newline is still being written
                    try:
                        record = from_json_dict(self.cls, json.loads(line.decode("utf-8")))
                    except (ValueError, RecordError) as exc:  # json and decode errors are ValueErrors too
                        raise RunDirectoryError(f"{self.path}:{lineno}: {exc}") from None
                    except RecursionError:  # json.loads of a line nested ~1000 deep
                        raise RunDirectoryError(f"{self.path}:{lineno}: nested too deep to read") from None
                    yield record

    def touch(self) -> None:
        """Create the file if it does not exist yet (a stage that wrote no record)."""
        self._open_for_append()

    def sync(self) -> None:
        """fsync what was written."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """fsync and close."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def remove(self, ids: set[str] | frozenset[str]) -> int:
        """Take the records with these ids out of the file (the other lines kept byte for byte, the file
        replaced atomically), so they can be written again; return how many were removed. Only the writer
        calls it (``--resume`` retrying infrastructure failures)."""
        if self.readonly:
            raise StageError(f"{self.path} was opened read-only")
        gone = self._ids & set(ids)
        if not gone:
            return 0
        self.close()
        kept = [line for line in self.path.read_bytes().splitlines(keepends=True)
                if line.strip() and json.loads(line)["id"] not in gone]
        write_text_atomic(self.path, b"".join(kept).decode("utf-8"))
        self._ids -= gone
        return len(gone)

    def reset(self) -> None:
        """Delete the file (``--from`` this stage)."""
        if self.readonly:
            raise StageError(f"{self.path} was opened read-only")
        self.close()
        if self.path.exists():
            self.path.unlink()
        self._ids.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _lock_holder(path: Path, *, wait_s: float = 2.0) -> str:
    """The pid written in the lock file by its holder. A new holder writes its pid just after it takes the lock, so
    for a moment the file can still name the process that held it before (a killed run) or nothing: read again until
    the pid is a live process or ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    text = ""
    while True:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if text.isdigit() and _pid_alive(int(text)):
            return text
        if time.monotonic() >= deadline:
            return f"{text}, not running" if text.isdigit() else "unknown"
        time.sleep(0.02)


def acquire_lock(root: Path) -> int:
    """Take the writer's lock on run directory ``root`` (``flock`` on ``root/.lock``, our pid written in it) and
    return its descriptor; it is released by :func:`release_lock` (which removes the file, so a finished run
    keeps no stale ``.lock``) or when the process dies.

    The file can be removed by the holder between another process's ``open`` and its ``flock``: a lock taken on
    a file that is no longer at ``root/.lock`` is dropped and taken again, so two writers never both hold it.

    :raises RunDirectoryError: another process holds it (the message names its pid), or it cannot be taken.
    """
    path = root / LOCK
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot lock run directory {str(root)!r}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirectoryError(
                    f"run directory {str(root)!r} is in use by another synth run (pid {_lock_holder(path)} holds "
                    f"{str(path)!r}); wait for it to finish (one writer per run directory)") from exc
            raise RunDirectoryError(f"cannot lock run directory {str(root)!r}: {exc.strerror or exc}") from exc
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder removed the file as we took it: take the new one
    raise RunDirectoryError(f"cannot lock run directory {str(root)!r}: its lock file keeps being replaced")


def release_lock(root: Path, fd: int) -> None:
    """Remove ``root/.lock`` while still holding it, then release it (see :func:`acquire_lock`)."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_ino == os.stat(root / LOCK).st_ino:
            (root / LOCK).unlink()
    os.close(fd)


class RunStore:
    """A run directory. Use :meth:`create` for a new run and :meth:`open` to resume (or, with ``readonly``, to
    read) one. A writer holds the directory's lock from :meth:`create`/:meth:`open` until :meth:`close`."""

    def __init__(self, root: Path, manifest: dict[str, Any], *, readonly: bool = False,
                 lock_fd: int | None = None) -> None:
        self.root = root
        self.manifest = manifest
        #: True for a reader: nothing in the directory is modified.
        self.readonly = readonly
        self._lock_fd = lock_fd
        #: What the writer found of an earlier ``--from`` rerun that did not finish (a kill), and did about it.
        self.recovered: str = ""
        if not readonly:
            self.recovered = self._recover_rerun()
        self.files: dict[str, JsonlFile[Any]] = {
            stage: JsonlFile(root / f"{stage}.jsonl", cls, readonly=readonly) for stage, cls in RECORD_TYPES.items()
        }
        #: Stages reopened because a record of theirs was dropped by repair (a cut last line).
        self.reopened: list[str] = []
        if not readonly:
            self._reopen_repaired()

    def _reopen_repaired(self) -> None:
        """A cut last line was dropped: the stage that owns the file, and every later stage, is no longer done,
        so ``--resume`` redoes the dropped record (and what depends on it)."""
        cut = [FILE_STAGES[name] for name, f in self.files.items() if f.repaired_bytes and name in FILE_STAGES]
        if not cut:
            return
        first = min(_STAGE_ORDER.index(stage) for stage in cut)
        stages = self.manifest.setdefault("stages", {})
        for stage in _STAGE_ORDER[first:]:
            if stages.get(stage, {}).get("status") == "done":
                stages[stage] = {**stages[stage], "status": "pending", "reopened": "a cut record was dropped"}
                self.reopened.append(stage)
        if self.reopened:
            self.save_manifest()

    # -- --from STAGE: the new outputs replace the old ones only when the rerun succeeds ----------------------
    def begin_rerun(self, stages: list[str], paths: list[Path]) -> None:
        """Set aside the outputs ``paths`` of ``stages`` (a ``--from`` rerun) in ``<run>/.rerun/`` and mark the
        stages pending. :meth:`finish_rerun` deletes them once the rerun succeeded; :meth:`undo_rerun` puts them
        back when it fails. Kill safety: the manifest (``"rerun"``: the stages' previous statuses and the files)
        is written, atomically, before any file moves; each move is one ``rename``. A writer that opens a run
        directory whose manifest still names a rerun (the previous one was killed) finishes it when every
        stage of it is done, and otherwise puts the previous outputs back (:meth:`_recover_rerun`), so a
        resume always sees either the whole previous run or the whole new one."""
        if self.readonly:
            raise StageError(f"{str(self.root)!r} was opened read-only")
        backup = self.root / RERUN
        if backup.exists():  # left by a rerun that finished (manifest saved) just before its clean-up
            shutil.rmtree(backup)
        for f in self.files.values():
            f.close()
        rel = [str(path.relative_to(self.root)) for path in paths]
        statuses = self.manifest.setdefault("stages", {})
        self.manifest["rerun"] = {"from": stages[0], "stages": {s: statuses.get(s, {"status": "pending"}) for s in stages},
                                  "files": rel, "existed": [r for r in rel if (self.root / r).exists()],
                                  "timings": dict(self.manifest.get("timings", {}))}
        for stage in stages:
            statuses[stage] = {"status": "pending"}
        self.save_manifest()  # before any move: a kill from here on is undone by the next writer
        try:
            backup.mkdir()
            for r in self.manifest["rerun"]["existed"]:
                dest = backup / r
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.root / r, dest)
            _fsync_dir(self.root)
        except OSError as exc:
            self.undo_rerun()
            raise _os_problem(exc, f"the previous outputs to {backup}") from exc

    @property
    def rerunning(self) -> bool:
        """True between :meth:`begin_rerun` and :meth:`finish_rerun` / :meth:`undo_rerun`."""
        return isinstance(self.manifest.get("rerun"), dict)

    def finish_rerun(self) -> None:
        """The rerun succeeded: forget the previous outputs (manifest first, then the folder)."""
        if not self.rerunning:
            return
        self.manifest.pop("rerun", None)
        self.save_manifest()
        shutil.rmtree(self.root / RERUN, ignore_errors=True)

    def undo_rerun(self) -> list[str]:
        """The rerun failed: put the previous outputs back (replacing what the rerun wrote; outputs that did not
        exist before are removed) and the stages' previous statuses; return the files put back. Idempotent: a
        kill half-way is finished by the next writer."""
        rerun = self.manifest.get("rerun")
        if not isinstance(rerun, dict):
            return []
        for f in getattr(self, "files", {}).values():
            f.close()
        backup = self.root / RERUN
        existed = set(rerun.get("existed", []))
        restored: list[str] = []
        for r in rerun.get("files", []):
            target, saved = self.root / r, backup / r
            if saved.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(saved, target)
                restored.append(r)
            elif r in existed:
                restored.append(r)  # never moved (or already put back): what is there is the previous output
            elif target.exists():
                target.unlink()  # written by the rerun, did not exist before
        _fsync_dir(self.root)
        statuses = self.manifest.setdefault("stages", {})
        statuses.update({k: v for k, v in dict(rerun.get("stages", {})).items()})
        if "timings" in rerun:
            self.manifest["timings"] = rerun["timings"]
        self.manifest.pop("rerun", None)
        self.save_manifest()
        shutil.rmtree(backup, ignore_errors=True)
        if hasattr(self, "files"):
            for f in self.files.values():
                f._scan()
        return restored

    def _recover_rerun(self) -> str:
        """A writer opening the directory: an unfinished ``--from`` rerun (killed) is finished when all its
        stages are done, else undone; a leftover ``.rerun/`` folder of a finished one is removed."""
        rerun = self.manifest.get("rerun")
        if not isinstance(rerun, dict):
            if (self.root / RERUN).exists():
                shutil.rmtree(self.root / RERUN, ignore_errors=True)
            return ""
        stages = list(dict(rerun.get("stages", {})))
        if stages and all(self.stage_done(s) for s in stages):
            self.finish_rerun()
            return f"an interrupted --from {rerun.get('from')} rerun had finished its stages; its outputs are kept"
        restored = self.undo_rerun()
        return (f"an interrupted --from {rerun.get('from')} rerun did not finish; the previous outputs were put back "
                f"({', '.join(restored) or 'none'})")

    @property
    def tasks(self) -> JsonlFile[Any]:
        """``tasks.jsonl``."""
        return self.files["tasks"]

    @property
    def trajectories(self) -> JsonlFile[Any]:
        """``trajectories.jsonl``."""
        return self.files["trajectories"]

    @property
    def demonstrations(self) -> JsonlFile[Any]:
        """``demonstrations.jsonl``: teacher rollouts a rubric builder asked for (``demonstrations = K``)."""
        return self.files["demonstrations"]

    @property
    def rubrics(self) -> JsonlFile[Any]:
        """``rubrics.jsonl``."""
        return self.files["rubrics"]

    @property
    def scores(self) -> JsonlFile[Any]:
        """``scores.jsonl``."""
        return self.files["scores"]

    @property
    def exports(self) -> Path:
        """The ``exports/`` folder."""
        return self.root / "exports"

    @staticmethod
    def check_parent(out: Path) -> None:
        """Fail early (nothing created) when ``out`` cannot hold a run directory."""
        probe = out
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise RunDirectoryError(f"output directory {str(out)!r} is not a directory ({str(probe)!r} is a file)")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise RunDirectoryError(f"output directory {str(out)!r} is not writable; choose another with --out")

    @classmethod
    def create(cls, out: Path, name: str, manifest: dict[str, Any]) -> RunStore:
        """Create ``out/name`` with its manifest; fails if it exists. The directory appears complete or not
        at all (it is built under a temporary name and renamed)."""
        cls.check_parent(out)
        root = out / name
        if root.exists():
            raise RunDirectoryError(
                f"run directory {str(root)!r} already exists; pass --resume to continue it, or choose another --name"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(f".{name}.creating-*"):  # left by a process killed while creating this run
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.creating-", dir=out))
            tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a run directory is as readable as its files
        except OSError as exc:
            raise RunDirectoryError(f"cannot create a run in {str(out)!r}: {exc.strerror or exc}") from exc
        lock_fd: int | None = None
        try:
            (tmp / "exports").mkdir()
            lock_fd = acquire_lock(tmp)  # the lock travels with the directory through the rename
            write_json_atomic(tmp / MANIFEST, manifest)
            os.rename(tmp, root)
        except (OSError, StageError, RunDirectoryError) as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            shutil.rmtree(tmp, ignore_errors=True)
            if root.exists():
                raise RunDirectoryError(f"run directory {str(root)!r} already exists") from exc
            raise RunDirectoryError(f"cannot create run directory {str(root)!r}: {exc}") from exc
        return cls(root, manifest, lock_fd=lock_fd)

    @staticmethod
    def read_manifest(root: Path) -> dict[str, Any]:
        """The manifest of run directory ``root`` (read only).

        :raises RunDirectoryError: no manifest, or one that is not a JSON object.
        """
        path = root / MANIFEST
        if not path.is_file():
            raise RunDirectoryError(f"{str(root)!r} is not a synthagent run directory (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise RunDirectoryError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise RunDirectoryError(f"{path} must hold a JSON object, got {type(manifest).__name__}; "
                                    "it is not a synthagent manifest")
        return manifest

    @classmethod
    def open(cls, root: Path, *, readonly: bool = False) -> RunStore:
        """Open an existing run directory: as its one writer (``--resume``; takes the lock, then repairs a cut
        last line), or with ``readonly`` as a reader (``synth show``; no lock, nothing modified)."""
        cls.read_manifest(root)  # a clear error before anything else
        if readonly:
            return cls(root, cls.read_manifest(root), readonly=True)
        if not os.access(root, os.W_OK):
            raise RunDirectoryError(f"run directory {str(root)!r} is not writable")
        lock_fd = acquire_lock(root)
        try:
            manifest = cls.read_manifest(root)  # as the last writer left it
            (root / "exports").mkdir(exist_ok=True)
            return cls(root, manifest, lock_fd=lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    def save_manifest(self) -> None:
        """Write the manifest atomically."""
        if self.readonly:
            raise StageError(f"{str(self.root)!r} was opened read-only")
        write_json_atomic(self.root / MANIFEST, self.manifest)

    def stage_done(self, stage: str) -> bool:
        """True when ``stage`` finished in this run directory."""
        return bool(self.manifest.get("stages", {}).get(stage, {}).get("status") == "done")

    def mark_stage(self, stage: str, status: str, **info: Any) -> None:
        """Record a stage's status (and counts) in the manifest."""
        self.manifest.setdefault("stages", {})[stage] = {"status": status, **info}
        self.save_manifest()

    def close(self) -> None:
        """Flush and close every file, then release the lock."""
        for f in self.files.values():
            f.close()
        if self._lock_fd is not None:
            release_lock(self.root, self._lock_fd)
            self._lock_fd = None
