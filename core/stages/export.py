"""export: the SFT and RL datasets (``exports/``), the rejected trajectories with reasons, the curriculum."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from synthagent.core.errors import StageError
from synthagent.core.models import Rubric, Score, Task, Trajectory
from synthagent.core.stages.base import StageContext
from synthagent.core.store import RunStore, write_jsonl_atomic

__all__ = ["ExportStage", "sft_row", "rl_row", "rejection", "EXPORT_FILES"]

#: Files the export stage writes, relative to ``exports/``.
EXPORT_FILES = ("sft.jsonl", "sft_rejected.jsonl", "rl.jsonl", "curriculum/general.jsonl", "curriculum/vertical.jsonl")


def sft_row(task: Task, trajectory: Trajectory, score: Score) -> dict[str, Any]:
    """An SFT export row: OpenAI messages and tools (arguments as dicts, as chat templates expect)."""
    return {
        "messages": [m.openai() for m in trajectory.messages],
        "tools": [t.openai_schema() for t in task.tools],
        "task_id": task.id,
        "trajectory_id": trajectory.id,
        "domain": task.domain,
        "score": score.total,
    }


def rl_row(task: Task) -> dict[str, Any]:
    """An RL export row: the opening prompt, the tools and the task reference (the environment is rebuilt
    from ``tasks.jsonl`` by id)."""
    from synthagent.core.agent_loop import initial_messages

    return {
        "prompt": [m.openai() for m in initial_messages(task)],
        "tools": [t.openai_schema() for t in task.tools],
        "task_id": task.id,
        "domain": task.domain,
    }


def rejection(traj: Trajectory, score: Score | None, rubric: Rubric | None, min_score: float) -> tuple[str, str] | None:
    """Why a trajectory is left out of the SFT export: ``(reason, detail)``, or None to keep it."""
    if traj.error is not None:
        return "infra_error", traj.error[:300]
    if rubric is not None and rubric.dropped:
        return "task_dropped", str(rubric.dropped)[:300]
    if score is None:
        return "unscored", "no score record"
    if score.status != "ok" or score.total is None:
        return score.status, "; ".join(r.evidence for r in score.breakdown if not r.passed)[:300]
    if score.total < min_score:
        failed = [f"{r.criterion_id}: {r.evidence}" for r in score.breakdown if not r.passed]
        return "below_min_score", f"{score.total} < {min_score}; failed " + "; ".join(failed)[:300]
    return None


class ExportStage:
    """Writes ``exports/sft.jsonl`` (trajectories scoring at least ``export.min_score``),
    ``exports/sft_rejected.jsonl`` (every other trajectory with its reason), ``exports/rl.jsonl`` (one row per
    task with a usable rubric) and, with ``export.vertical``, the two-stage curriculum."""

    name = "export"
    file: str | None = None

    def reset(self, store: RunStore) -> None:
        """Delete the export files."""
        for name in EXPORT_FILES:
            (store.exports / name).unlink(missing_ok=True)

    def outputs(self, store: RunStore) -> list[Path]:
        """The export files."""
        return [store.exports / name for name in EXPORT_FILES]

    async def run(self, ctx: StageContext) -> dict[str, Any]:
        """Write the exports from the records (atomically, each file whole)."""
        store = ctx.store
        tasks = {t.id: t for t in store.tasks}
        scores = {s.trajectory_id: s for s in store.scores}
        rubrics = {r.task_id: r for r in store.rubrics}
        trajectories = sorted(store.trajectories, key=lambda t: (t.task_id, t.sample))
        min_score = ctx.config.export.min_score
        sft, rejected = [], []
        for t in trajectories:
            reason = rejection(t, scores.get(t.id), rubrics.get(t.task_id), min_score)
            if reason is None:
                sft.append(sft_row(tasks[t.task_id], t, scores[t.id]))
            else:
                s = scores.get(t.id)
                rejected.append({"trajectory_id": t.id, "task_id": t.task_id, "domain": tasks[t.task_id].domain,
                                 "score": s.total if s else None, "reason": reason[0], "detail": reason[1]})
        rl = [rl_row(tasks[tid]) for tid in sorted(tasks) if not (rubrics.get(tid) and rubrics[tid].dropped)]
        write_jsonl_atomic(store.exports / "sft.jsonl", sft)
        write_jsonl_atomic(store.exports / "sft_rejected.jsonl", rejected)
        write_jsonl_atomic(store.exports / "rl.jsonl", rl)
        info: dict[str, Any] = {"sft": len(sft), "rl": len(rl),
                                "rejected": dict(sorted(Counter(r["reason"] for r in rejected).items()))}
        vertical = set(ctx.config.export.vertical)
        if vertical:  # the two-stage curriculum: general (all domains) first, then the vertical domains
            info["curriculum"] = self._curriculum(store, tasks, sft, vertical)
        ctx.progress(self.name, 1, 1)
        return info

    @staticmethod
    def _curriculum(store: RunStore, tasks: dict[str, Task], sft: list[dict[str, Any]], vertical: set[str]) -> dict[str, int]:
        unknown = vertical - {t.domain for t in tasks.values()}
        if unknown:
            raise StageError(f"export.vertical names domains with no tasks: {sorted(unknown)}; "
                             f"domains: {sorted({t.domain for t in tasks.values()})}")
        chosen = [r for r in sft if r["domain"] in vertical]
        write_jsonl_atomic(store.exports / "curriculum" / "general.jsonl", sft)
        write_jsonl_atomic(store.exports / "curriculum" / "vertical.jsonl", chosen)
        return {"general": len(sft), "vertical": len(chosen)}
