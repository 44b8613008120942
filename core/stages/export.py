"""export: the SFT and RL datasets (``exports/``), the rejected trajectories with reasons, the curriculum, the
same SFT rows in OpenAI's fine-tuning format, preference pairs for DPO and a dataset card.

Tool-call ids are renumbered per exported conversation (:func:`renumber_calls`): ``call_1``, ``call_2``, ... in
order of appearance, each tool message's ``tool_call_id`` following its call. The stored trajectories keep the ids
the policy gave: the offline oracle names a call after its assistant turn (``call_{turn}``), so a turn that asks
the user a question leaves a gap (``call_1, call_2, call_3, call_6``), and a model's ids are whatever it chose.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from pathlib import Path
from typing import Any

from synthagent.core.errors import StageError
from synthagent.core.models import Rubric, Score, Task, Trajectory
from synthagent.core.stages.base import StageContext
from synthagent.core.store import RunStore, write_jsonl_atomic, write_text_atomic

__all__ = ["ExportStage", "sft_row", "rl_row", "openai_row", "dpo_rows", "renumber_calls", "rejection",
           "EXPORT_FILES"]

#: Files the export stage writes, relative to ``exports/`` (the curriculum only with ``export.vertical``).
EXPORT_FILES = ("sft.jsonl", "sft_rejected.jsonl", "rl.jsonl", "openai.jsonl", "dpo.jsonl", "README.md",
                "curriculum/general.jsonl", "curriculum/vertical.jsonl")


def renumber_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI message dicts with contiguous call ids: ``call_1``, ``call_2``, ... in order of appearance; each
    tool message's ``tool_call_id`` names the new id of the call it answers (the earliest unanswered call with
    its old id, so repeated ids in one trajectory stay paired in order). A tool message answering no earlier
    call keeps its id. The input is not changed."""
    pending: dict[str, deque[str]] = {}
    last: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    n = 0
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                n += 1
                new = f"call_{n}"
                pending.setdefault(str(call.get("id")), deque()).append(new)
                last[str(call.get("id"))] = new
                calls.append({**call, "id": new})
            m["tool_calls"] = calls
        if m.get("role") == "tool" and m.get("tool_call_id") is not None:
            old = str(m["tool_call_id"])
            queue = pending.get(old)
            m["tool_call_id"] = queue.popleft() if queue else last.get(old, old)
        out.append(m)
    return out


def chat_messages(trajectory: Trajectory) -> list[dict[str, Any]]:
    """The trajectory's messages as exported: OpenAI dicts (arguments as dicts) with renumbered call ids."""
    return renumber_calls([m.openai() for m in trajectory.messages])


def sft_row(task: Task, trajectory: Trajectory, score: Score) -> dict[str, Any]:
    """An SFT export row: OpenAI messages and tools (arguments as dicts, as chat templates expect; call ids
    renumbered by :func:`renumber_calls`)."""
    return {
        "messages": chat_messages(trajectory),
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


def openai_row(task: Task, trajectory: Trajectory) -> dict[str, Any]:
    """A row of OpenAI's chat fine-tuning format (``exports/openai.jsonl``): only ``messages`` and ``tools``.

    Every ``content`` is a string (an assistant message with tool calls omits it when it has none); each tool
    call is ``{"id", "type": "function", "function": {"name", "arguments": JSON string}}``; a tool message has
    ``role``, ``tool_call_id`` and ``content``; call ids are renumbered by :func:`renumber_calls`."""
    messages: list[dict[str, Any]] = []
    for m in chat_messages(trajectory):
        out: dict[str, Any] = {"role": m["role"]}
        content = m.get("content")
        if m.get("tool_calls"):
            if content:
                out["content"] = str(content)
            out["tool_calls"] = [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["function"]["name"],
                              "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False, sort_keys=True)}}
                for c in m["tool_calls"]]
        else:
            out["content"] = "" if content is None else str(content)
        if m["role"] == "tool":
            out["tool_call_id"] = m["tool_call_id"]
        messages.append(out)
    return {"messages": messages, "tools": [t.openai_schema() for t in task.tools]}


#: Why a task has no row in ``exports/dpo.jsonl`` (the export stage's ``dpo_unpaired`` counts).
DPO_REASONS = {
    "task_dropped": "the task's rubric was dropped (no score counts)",
    "fewer_than_two_scored": "fewer than two trajectories scored ok (simulate.samples=1 gives one per task)",
    "scores_tied": "every scored trajectory has the same total",
}


def dpo_rows(tasks: dict[str, Task], trajectories: list[Trajectory], scores: dict[str, Score],
             rubrics: dict[str, Rubric]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Preference pairs in TRL's conversational DPO format, one per task, and the unpaired tasks by reason.

    For each task with at least two trajectories scored ``ok`` whose totals differ, the best trajectory (the
    lowest sample among equals) is ``chosen`` and the worst (the lowest sample among equals) ``rejected``, so the
    pair carries the clearest preference the run has. ``prompt`` is the messages both share before the first
    assistant turn (the system prompt and the opening user message); ``chosen`` and ``rejected`` are the rest of
    each conversation (chat-template form, as in ``sft.jsonl``). Every other task is counted under a key of
    :data:`DPO_REASONS`."""
    by_task: dict[str, list[tuple[Trajectory, float]]] = {tid: [] for tid in tasks}
    for t in trajectories:
        s = scores.get(t.id)
        if t.error is None and s is not None and s.status == "ok" and s.total is not None and t.task_id in by_task:
            by_task[t.task_id].append((t, float(s.total)))
    rows: list[dict[str, Any]] = []
    unpaired: Counter[str] = Counter()
    for tid in sorted(tasks):
        rubric = rubrics.get(tid)
        scored = by_task[tid]
        if rubric is not None and rubric.dropped:
            unpaired["task_dropped"] += 1
            continue
        if len(scored) < 2:
            unpaired["fewer_than_two_scored"] += 1
            continue
        best = max(scored, key=lambda p: (p[1], -p[0].sample))
        worst = min(scored, key=lambda p: (p[1], p[0].sample))
        if best[1] == worst[1]:
            unpaired["scores_tied"] += 1
            continue
        chosen, rejected = chat_messages(best[0]), chat_messages(worst[0])
        shared = 0
        while (shared < min(len(chosen), len(rejected)) and chosen[shared]["role"] != "assistant"
               and chosen[shared] == rejected[shared]):
            shared += 1
        task = tasks[tid]
        rows.append({"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:],
                     "tools": [t.openai_schema() for t in task.tools], "task_id": tid, "domain": task.domain,
                     "chosen_trajectory_id": best[0].id, "rejected_trajectory_id": worst[0].id,
                     "chosen_score": best[1], "rejected_score": worst[1]})
    return rows, unpaired


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
    task with a usable rubric), ``exports/openai.jsonl`` (the SFT rows in OpenAI's fine-tuning format),
    ``exports/dpo.jsonl`` (preference pairs; tasks without one counted by reason in ``dpo_unpaired``),
    ``exports/README.md`` (a Hugging Face dataset card) and, with ``export.vertical``, the two-stage curriculum."""

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
        sft, rejected, openai = [], [], []
        for t in trajectories:
            reason = rejection(t, scores.get(t.id), rubrics.get(t.task_id), min_score)
            if reason is None:
                sft.append(sft_row(tasks[t.task_id], t, scores[t.id]))
                openai.append(openai_row(tasks[t.task_id], t))
            else:
                s = scores.get(t.id)
                rejected.append({"trajectory_id": t.id, "task_id": t.task_id, "domain": tasks[t.task_id].domain,
                                 "score": s.total if s else None, "reason": reason[0], "detail": reason[1]})
        rl = [rl_row(tasks[tid]) for tid in sorted(tasks) if not (rubrics.get(tid) and rubrics[tid].dropped)]
        write_jsonl_atomic(store.exports / "sft.jsonl", sft)
        write_jsonl_atomic(store.exports / "sft_rejected.jsonl", rejected)
        write_jsonl_atomic(store.exports / "rl.jsonl", rl)
        write_jsonl_atomic(store.exports / "openai.jsonl", openai)
        dpo, unpaired = dpo_rows(tasks, trajectories, scores, rubrics)
        write_jsonl_atomic(store.exports / "dpo.jsonl", dpo)
        info: dict[str, Any] = {"sft": len(sft), "rl": len(rl),
                                "rejected": dict(sorted(Counter(r["reason"] for r in rejected).items())),
                                "openai": len(openai), "dpo": len(dpo), "dpo_unpaired": dict(sorted(unpaired.items()))}
        vertical = set(ctx.config.export.vertical)
        if vertical:  # the two-stage curriculum: general (all domains) first, then the vertical domains
            info["curriculum"] = self._curriculum(store, tasks, sft, vertical)
        from synthagent.core.stages.card import dataset_card

        write_text_atomic(store.exports / "README.md", dataset_card(store, list(tasks.values()), info))
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
