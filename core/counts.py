"""Counts that survive kills and resumes: ``counts.jsonl`` in the run directory.

Counters (LLM requests, faults by kind, guard firings, mapping hits, generator drops) live in the components
of one process, and a kill or a resume starts them again. So each stage appends the *delta* of
:meth:`~synthagent.core.runtime.Runtime.stats` (the executor's workers' counters included) to ``counts.jsonl``
as it writes records (every :data:`FLUSH_RECORDS` records or :data:`FLUSH_SECONDS` seconds, at stage end and
when the run is interrupted). Each line is ``{"id": "<session>-<n>", "stage": ..., "counts": {kind: {key: n}}}``;
the id is unique per process and line, so a line is counted once however often the run resumes. The summary
sums them per stage and in total (:func:`read_counts`).

What a SIGKILL can lose: the counts of the work done since the last line (at most
:data:`FLUSH_RECORDS` records' worth, plus the requests of rollouts in flight, which the resume redoes and
counts again); with ``executor=process`` the workers' counters reach the driver at the end of each stage.
An interrupt (Ctrl-C, SIGINT) loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthagent.core.store import strict_json_line

__all__ = ["COUNTS", "CountLog", "read_counts", "total_counts", "FLUSH_RECORDS", "FLUSH_SECONDS"]

#: The file name of a run directory's count log.
COUNTS = "counts.jsonl"
#: A stage appends its counts at least every this many records ...
FLUSH_RECORDS = 20
#: ... or every this many seconds, whichever comes first.
FLUSH_SECONDS = 1.0

Counts = dict[str, dict[str, int]]


def _delta(now: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]) -> Counts:
    out: Counts = {}
    for kind, counts in now.items():
        old = before.get(kind, {})
        diff = {k: v - old.get(k, 0) for k, v in counts.items() if isinstance(v, int) and v - old.get(k, 0) > 0}
        if diff:
            out[kind] = dict(sorted(diff.items()))
    return out


class CountLog:
    """The writer's side of ``counts.jsonl`` (one per run process; the run directory's lock is held).

    :param root: the run directory.
    :param snapshot: ``snapshot() -> {kind: {key: count}}``, cumulative in this process
        (:meth:`Runtime.stats`).
    """

    def __init__(self, root: Path, snapshot: Any) -> None:
        self.path = Path(root) / COUNTS
        self.snapshot = snapshot
        self.session = uuid.uuid4().hex[:12]
        self._seq = 0
        self._last: Counts = {}  # everything this process counts (set-up included) goes to the log
        self._pending = 0
        self._since = time.monotonic()
        self._extra: dict[str, Counts] = {}
        if self.path.exists():  # a line cut by a kill: drop it, or the next line would be glued to it
            data = self.path.read_bytes()
            good = data.rfind(b"\n") + 1
            if good < len(data):
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)

    def add(self, stage: str, kind: str, counts: Mapping[str, int]) -> None:
        """Count something no component counts (e.g. the generate stage's ``invalid_task`` drops); written
        with the stage's next line."""
        bucket = self._extra.setdefault(stage, {}).setdefault(kind, {})
        for key, n in counts.items():
            bucket[key] = bucket.get(key, 0) + n

    def tick(self, stage: str, records: int = 1) -> None:
        """``records`` more records were written by ``stage``: append a line when one is due."""
        self._pending += records
        if self._pending >= FLUSH_RECORDS or time.monotonic() - self._since >= FLUSH_SECONDS:
            self.flush(stage)

    def flush(self, stage: str) -> None:
        """Append what was counted since the last line to ``stage`` (nothing when nothing changed)."""
        now = {k: dict(v) for k, v in self.snapshot().items()}
        delta = _delta(now, self._last)
        for kind, counts in self._extra.pop(stage, {}).items():
            merged = delta.setdefault(kind, {})
            for key, n in counts.items():
                merged[key] = merged.get(key, 0) + n
        self._last, self._pending, self._since = now, 0, time.monotonic()
        if not delta:
            return
        self._seq += 1
        line = strict_json_line({"id": f"{self.session}-{self._seq}", "stage": stage, "counts": delta},
                                f"counts of stage {stage}")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:  # one write on an O_APPEND descriptor, as every record
            os.write(fd, line)
        finally:
            os.close(fd)


def read_counts(root: Path) -> dict[str, Counts]:
    """The counts of run directory ``root`` summed by stage (``{}`` when it has no ``counts.jsonl``). Reads
    complete lines only and each id once; modifies nothing."""
    path = Path(root) / COUNTS
    by_stage: dict[str, Counts] = {}
    seen: set[str] = set()
    with contextlib.suppress(OSError):
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # being written, or cut by a kill
                try:
                    row = json.loads(line)
                    if row["id"] in seen:
                        continue
                    seen.add(row["id"])
                    stage = by_stage.setdefault(str(row["stage"]), {})
                    for kind, counts in row["counts"].items():
                        bucket = stage.setdefault(kind, {})
                        for key, n in counts.items():
                            bucket[key] = bucket.get(key, 0) + int(n)
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # a damaged line loses its counts, never the summary
    return {s: {k: dict(sorted(v.items())) for k, v in sorted(c.items())} for s, c in by_stage.items()}


def total_counts(by_stage: Mapping[str, Counts]) -> Counts:
    """The per-stage counts of :func:`read_counts` summed over stages."""
    out: Counts = {}
    for counts in by_stage.values():
        for kind, values in counts.items():
            bucket = out.setdefault(kind, {})
            for key, n in values.items():
                bucket[key] = bucket.get(key, 0) + n
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}
