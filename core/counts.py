"""Counts that survive kills and resumes: ``counts.jsonl`` in the run directory.

Counters (LLM requests, faults by kind, guard firings, mapping hits, generator drops) live in the components
of one process, and a kill or a resume starts them again. So each stage appends the *delta* of
:meth:`~synthagent.core.runtime.Runtime.stats` (the executor's workers' counters included) to ``counts.jsonl``
as it writes records (after every record: :data:`FLUSH_RECORDS` is 1; at stage end and when the run is
interrupted). A line is written only when something was counted since the last one. Each line is ``{"id": "<session>-<n>", "stage": ..., "counts": {kind: {key: n}}}``;
the id is unique per process and line, so a line is counted once however often the run resumes. The summary
sums them per stage and in total (:func:`read_counts`).

What a SIGKILL can lose: the requests of the rollouts in flight (at most ``simulate.concurrency`` of them:
their records were not written yet, the resume redoes them and counts them again), since every written record
is followed by its count line; with ``executor=process`` the workers' counters reach the driver at the end of
each stage (a kill loses the interrupted stage's worker counts), and a resume says in ``run.log`` how many
model calls its trajectories record beyond the requests ``counts.jsonl`` holds (:func:`unaccounted_calls`).
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

__all__ = ["COUNTS", "CountLog", "read_counts", "total_counts", "unaccounted_calls", "FLUSH_RECORDS", "FLUSH_SECONDS"]

#: The file name of a run directory's count log.
COUNTS = "counts.jsonl"
#: A stage appends its counts after this many records (1: every record, so a kill loses only the rollouts in
#: flight; a line is one small ``write`` of what changed) ...
FLUSH_RECORDS = 1
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


def unaccounted_calls(by_stage: Mapping[str, Counts], recorded: Mapping[str, int]) -> dict[str, int]:
    """Model requests a killed process made but never wrote to ``counts.jsonl``, as far as the records tell:
    ``{stage: n}`` where the stage's records hold ``n`` more model calls (``Trajectory.usage.calls``, one per
    answered request) than the stage's counted ``llm.requests``. A lower bound: requests of rollouts that were
    in flight at the kill, or that failed, are in no record."""
    out: dict[str, int] = {}
    for stage, calls in recorded.items():
        counted = int(by_stage.get(stage, {}).get("llm", {}).get("requests", 0))
        if calls > counted:
            out[stage] = calls - counted
    return out
