"""The run store: one directory per run, append-only JSONL per stage, idempotent by record id.

Layout of ``<out>/<name>/``::

    manifest.json        config, loaded plugins with versions, prompt hashes, seed, stage status
    tasks.jsonl          one Task per line
    trajectories.jsonl   one Trajectory per line
    demonstrations.jsonl teacher demonstrations the rubric stage builds criteria from
    rubrics.jsonl        one Rubric per line
    scores.jsonl         one Score per line
    summary.json         counts, rates and means (rewritten at the end of each run)
    run.log              the run's log (written by the CLI)
    exports/sft.jsonl    OpenAI messages + tools, ready for TRL SFT
    exports/sft_rejected.jsonl  trajectories left out of SFT, with score and reason
    exports/rl.jsonl     prompt + tools + task reference, for GRPO
    report/              written by ``synth report`` (HTML and plots)

Crash safety: each record is written with a single ``write`` on an ``O_APPEND`` descriptor. A process killed
mid-write can leave at most one partial last line; opening the file again drops it (the record is redone).
Records already present (same id) are never written twice, so a resumed run neither loses nor duplicates.
``manifest.json``, ``summary.json`` and the exports are replaced atomically (write to a temporary file, then
``os.replace``). A new run directory appears only once its manifest is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from synthagent.core.errors import RunDirectoryError, StageError
from synthagent.core.models import RECORD_TYPES, RecordError, from_json_dict, to_json_dict

__all__ = ["JsonlFile", "RunStore", "write_json_atomic", "write_jsonl_atomic", "MANIFEST"]

T = TypeVar("T")
#: The file name of a run directory's manifest (config, plugins, stage status).
MANIFEST = "manifest.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as pretty JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would (0644 under umask 022)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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


def write_jsonl_atomic(path: Path, rows: list[Mapping[str, Any]]) -> None:
    """Write ``rows`` as JSON lines to ``path`` atomically."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


class JsonlFile(Generic[T]):
    """An append-only JSONL file of one record type, with a set of the ids it holds."""

    def __init__(self, path: Path, cls: type[T]) -> None:
        self.path = path
        self.cls = cls
        self._ids: set[str] = set()
        self._fd: int | None = None
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
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
        for lineno, line in enumerate(data[:good].splitlines(), 1):
            if not line.strip():
                continue
            try:
                self._ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError) as exc:
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
        """Write ``record`` unless its id is present; return True when written."""
        data = to_json_dict(record)
        record_id = data["id"]
        if record_id in self._ids:
            return False
        line = (json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        written = os.write(self._fd, line)
        if written != len(line):  # pragma: no cover - regular files write fully
            raise StageError(f"short write to {self.path}")
        self._ids.add(record_id)
        return True

    def load(self) -> list[T]:
        """Every record, in file order."""
        return list(self)

    def __iter__(self) -> Iterator[T]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        record = from_json_dict(self.cls, json.loads(line.decode("utf-8")))
                    except (ValueError, RecordError) as exc:  # json errors are ValueErrors too
                        raise RunDirectoryError(f"{self.path}:{lineno}: {exc}") from None
                    yield record

    def touch(self) -> None:
        """Create the file if it does not exist yet (a stage that wrote no record)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

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

    def reset(self) -> None:
        """Delete the file (``--from`` this stage)."""
        self.close()
        if self.path.exists():
            self.path.unlink()
        self._ids.clear()


class RunStore:
    """A run directory. Use :meth:`create` for a new run and :meth:`open` to resume one."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.files: dict[str, JsonlFile[Any]] = {
            stage: JsonlFile(root / f"{stage}.jsonl", cls) for stage, cls in RECORD_TYPES.items()
        }

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
        try:
            (tmp / "exports").mkdir()
            write_json_atomic(tmp / MANIFEST, manifest)
            os.rename(tmp, root)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if root.exists():
                raise RunDirectoryError(f"run directory {str(root)!r} already exists") from exc
            raise RunDirectoryError(f"cannot create run directory {str(root)!r}: {exc}") from exc
        return cls(root, manifest)

    @classmethod
    def open(cls, root: Path) -> RunStore:
        """Open an existing run directory (``--resume``, ``synth show``)."""
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
        if not os.access(root, os.W_OK):
            raise RunDirectoryError(f"run directory {str(root)!r} is not writable")
        (root / "exports").mkdir(exist_ok=True)
        return cls(root, manifest)

    def save_manifest(self) -> None:
        """Write the manifest atomically."""
        write_json_atomic(self.root / MANIFEST, self.manifest)

    def stage_done(self, stage: str) -> bool:
        """True when ``stage`` finished in this run directory."""
        return bool(self.manifest.get("stages", {}).get(stage, {}).get("status") == "done")

    def mark_stage(self, stage: str, status: str, **info: Any) -> None:
        """Record a stage's status (and counts) in the manifest."""
        self.manifest.setdefault("stages", {})[stage] = {"status": status, **info}
        self.save_manifest()

    def close(self) -> None:
        """Flush and close every file."""
        for f in self.files.values():
            f.close()
