"""Reading a run directory's records for comparisons (timings stripped)."""

from __future__ import annotations

import json
from pathlib import Path

FILES = ("tasks.jsonl", "trajectories.jsonl", "rubrics.jsonl", "scores.jsonl")


def records(root: Path) -> dict[str, dict[str, dict]]:
    """file -> id -> record, with wall-clock fields removed."""
    out: dict[str, dict[str, dict]] = {}
    for name in FILES:
        rows: dict[str, dict] = {}
        lines = (root / name).read_text().splitlines()
        for line in lines:
            rec = json.loads(line)
            rec.pop("timings", None)
            assert rec["id"] not in rows, f"duplicate id {rec['id']} in {name}"
            rows[rec["id"]] = rec
        assert len(rows) == len(lines)
        out[name] = rows
    return out
