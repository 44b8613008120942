"""The run summary: counts, rates and means computed from a run directory's records (``summary.json``)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

from synthagent.core.counts import read_counts, total_counts
from synthagent.core.diversity import lexical_diversity
from synthagent.core.store import RunStore, write_json_atomic

__all__ = ["summarize", "funnel", "drop_reasons", "request_figures", "FUNNEL_STAGES"]

#: Where a generation slot can end, in pipeline order (``kept`` aside). ``surplus``: synthesized after the
#: run had enough tasks; ``pending``: a task whose later stages have not run yet.
FUNNEL_STAGES = ("toolset", "task", "fuzzy_rewrite", "gap_check", "teacher_unavailable", "surplus",
                 "demonstrations", "rubric", "infra", "score_filter", "pending")
_GEN_STAGE = {"toolset": "toolset", "task": "task", "fuzzy": "fuzzy_rewrite", "gap": "gap_check",
              "teacher_unavailable": "teacher_unavailable"}


def funnel(store: RunStore, tasks: list[Any], generated: dict[str, int]) -> dict[str, Any]:
    """Where every generation slot ended: ``{"slots", "kept", "dropped": {stage: n}, "accounted"}``.

    ``kept`` counts tasks with at least one exported SFT row. A generator that counts its slots
    (``funnel:STAGE`` in its stats) gives the generation drops; for any other generator each task is a slot.
    ``accounted`` is ``kept + sum(dropped) == slots``."""
    return _funnel(store, tasks, generated)[0]


def _funnel(store: RunStore, tasks: list[Any], generated: dict[str, int]) -> tuple[dict[str, Any], set[str]]:
    """:func:`funnel` and the ids of the kept tasks."""
    dropped: Counter[str] = Counter()
    gen = {k.split(":", 1)[1]: int(v) for k, v in generated.items() if k.startswith("funnel:")}
    for stage, n in gen.items():
        if stage != "kept":
            dropped[_GEN_STAGE.get(stage, stage)] += n
    slots = sum(gen.values()) if gen else len(tasks)
    if gen:
        dropped["surplus"] += max(0, gen.get("kept", 0) - len(tasks))
    rubrics = {r.task_id: r for r in store.rubrics}
    sft = store.exports / "sft.jsonl"
    exported: set[str] | None = None
    if sft.is_file():
        import json

        exported = set()
        for line in sft.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                exported.add(str(json.loads(line).get("task_id")))
            except (ValueError, AttributeError):
                continue
    kept = 0
    kept_ids: set[str] = set()
    for t in tasks:
        r = rubrics.get(t.id)
        if r is None:
            dropped["pending"] += 1
        elif r.dropped:
            why = str(r.dropped).split(":")[0].strip()
            dropped["demonstrations" if why in ("uncovered", "no demonstrations") else
                    "infra" if why in ("infra", "teacher_unavailable") else "rubric"] += 1
        elif exported is None:
            dropped["pending"] += 1
        elif t.id in exported:
            kept += 1
            kept_ids.add(t.id)
        else:
            dropped["score_filter"] += 1
    named: dict[str, int] = {k: dropped[k] for k in FUNNEL_STAGES if dropped.get(k)}
    named |= {k: v for k, v in sorted(dropped.items()) if k not in FUNNEL_STAGES and v}
    out: dict[str, Any] = {"slots": slots, "kept": kept, "dropped": named,
                           "accounted": kept + sum(named.values()) == slots}
    return out, kept_ids


#: Generator counters that are not drops.
_NOT_DROPS = ("kept",)


def drop_reasons(summary: dict[str, Any]) -> dict[str, int]:
    """Where a run lost its tasks, by stage and reason, most frequent first: ``{"rubric: uncovered": 5, ...}``.

    From the summary's own fields: the generator's drops when it made fewer tasks than it had slots for
    (``generate: REASON``; draws it replaced are not losses: they are ``summary["redrawn"]``), rollouts that
    failed for infrastructure reasons (``simulate: infra_error``) or could not be stored
    (``simulate: unstorable_trajectory``), rubrics dropped by reason (``rubric: REASON``) and trajectories the
    SFT export rejected (``export: REASON``, those of dropped rubrics and failed rollouts aside: counted above)."""
    found: dict[str, int] = {}
    fun = summary.get("funnel") or {}
    if summary.get("tasks", 0) < fun.get("slots", 0) or not summary.get("tasks"):
        for key, n in (summary.get("dropped") or {}).items():
            if key.startswith("funnel:") or key in _NOT_DROPS or key.endswith(("_repaired", "_repair_asked")):
                continue
            if isinstance(n, int) and n > 0:
                found[f"generate: {key}"] = n
    if summary.get("infra_errors"):
        found["simulate: infra_error"] = int(summary["infra_errors"])
    for key, n in (summary.get("trajectories_dropped") or {}).items():
        if isinstance(n, int) and n > 0:
            found[f"simulate: {key}"] = n
    for key, n in (summary.get("rubrics_dropped") or {}).items():
        if isinstance(n, int) and n > 0:
            found[f"rubric: {key}"] = n
    for key, n in (summary.get("sft_rejected") or {}).items():
        if key not in ("task_dropped", "infra_error") and isinstance(n, int) and n > 0:
            found[f"export: {key}"] = n
    return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0])))


#: Per-request counters of a model backend that are faults (each one failed attempt).
_FAULTS = ("timeout", "connect", "malformed_body", "gave_up", "auth_failed")


def request_figures(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Model requests, faults and retries per component that counts them (``{"llm": {"requests": 120,
    "faults": 3, "retries": 3, "gave_up": 0}}``): a fault is a failed attempt (timeout, connection error,
    malformed body, HTTP error status); ``gave_up`` requests failed every retry."""
    out: dict[str, dict[str, int]] = {}
    for component, counters in sorted(stats.items()):
        if not isinstance(counters, dict) or "requests" not in counters:
            continue
        ints = {k: int(v) for k, v in counters.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        faults = sum(v for k, v in ints.items() if k in _FAULTS[:3] or (k.startswith("http_") and k[5:].isdigit()))
        out[component] = {"requests": ints.get("requests", 0), "faults": faults, "retries": ints.get("retries", 0),
                          "gave_up": ints.get("gave_up", 0)}
    return out


def _success(scores: list[Any], kept_ids: set[str], slots: int) -> dict[str, Any]:
    """Task-level success over the kept tasks and over every slot: a task succeeded when one of its scored
    rollouts did. A run that drops most of its tasks cannot show 1.0 over slots."""
    solved = {s.task_id for s in scores if s.status == "ok" and s.success and s.task_id in kept_ids}

    def rate(n: int, of: int) -> dict[str, Any]:
        return {"succeeded": n, "of": of, "rate": round(n / of, 4) if of else None}

    return {"kept": rate(len(solved), len(kept_ids)), "slots": rate(len(solved), slots)}


def _hit_rate(stats: dict[str, int]) -> float | None:
    hits, misses = stats.get("hits", 0), stats.get("misses", 0)
    return round(hits / (hits + misses), 4) if hits + misses else None


def summarize(store: RunStore) -> dict[str, Any]:
    """Counts, rates and means of a run directory (also what ``synth show`` prints); writes summary.json
    unless the store was opened read-only."""
    tasks = store.tasks.load()
    trajectories = store.trajectories.load()
    scores = [s for s in store.scores]
    ok_scores = [s.total for s in scores if s.status == "ok" and s.total is not None]
    per_domain: dict[str, list[float]] = {}
    task_domain = {t.id: t.domain for t in tasks}
    for s in scores:
        if s.status == "ok" and s.total is not None:
            per_domain.setdefault(task_domain.get(s.task_id, "?"), []).append(s.total)
    stages = store.manifest.get("stages", {})
    by_stage = read_counts(store.root)  # counts.jsonl: every process's counts, by stage (older runs: a snapshot)
    stats = total_counts(by_stage) if by_stage else stages.get("simulate", {}).get("stats", {})
    counted = [s for s in scores if s.status != "dropped"]  # rates over the scores that count; none: null
    generated_drops = by_stage.get("generate", {}).get("generator", stages.get("generate", {}).get("dropped", {}))
    fun, kept_ids = _funnel(store, tasks, generated_drops)
    summary = {
        "run": store.root.name,
        "tasks": len(tasks),
        "trajectories": len(trajectories),
        "rubrics": len(store.rubrics),
        "scores": len(scores),
        "exports": {key: stages.get("export", {}).get(key) for key in ("sft", "rl", "openai", "dpo")},
        # tasks without a DPO pair, by reason (fewer_than_two_scored with simulate.samples=1)
        "dpo_unpaired": stages.get("export", {}).get("dpo_unpaired", {}),
        "domains": dict(sorted(Counter(t.domain for t in tasks).items())),
        "tool_calls_per_task": round(statistics.fmean(
            sum(len(m.tool_calls) for m in t.messages) for t in trajectories), 3) if trajectories else 0.0,
        "hidden_facts_per_task": round(statistics.fmean(len(t.user_context) for t in tasks), 3) if tasks else 0.0,
        "terminations": dict(sorted(Counter(t.termination for t in trajectories).items())),
        "infra_errors": sum(1 for t in trajectories if t.error is not None),
        "judge_errors": sum(1 for s in scores if s.status == "judge_error"),
        "tool_errors": sum(t.tool_errors for t in trajectories),
        "malformed_tool_calls": sum(t.malformed_tool_calls for t in trajectories),
        "score_mean": round(statistics.fmean(ok_scores), 4) if ok_scores else None,
        "success_rate": round(sum(1 for s in counted if s.success) / len(counted), 4) if counted else None,
        "score_by_domain": {d: round(statistics.fmean(v), 4) for d, v in sorted(per_domain.items())},
        "criteria_failed": dict(sorted(Counter(r.checker for s in scores for r in s.breakdown if not r.passed).items())),
        "dropped": generated_drops,
        "funnel": fun,
        # draws the generator rejected and replaced (no slot was lost to them), by reason
        "redrawn": {k: v for k, v in generated_drops.items() if not k.startswith("funnel:")
                    and k not in _NOT_DROPS} if fun["slots"] <= len(tasks) else {},
        "success": _success(scores, kept_ids, fun["slots"]),
        "rubrics_dropped": stages.get("rubric", {}).get("dropped", {}),
        # rollouts left out of their record file, by reason (unstorable_trajectory: model output nested too deep)
        "trajectories_dropped": by_stage.get("simulate", {}).get("dropped", stages.get("simulate", {}).get("dropped", {})),
        "demonstrations_dropped": by_stage.get("rubric", {}).get(
            "dropped", stages.get("rubric", {}).get("demonstrations_dropped", {})),
        "checkers": stages.get("rubric", {}).get("checkers", {}),
        "sft_rejected": stages.get("export", {}).get("rejected", {}),
        "stats": stats,
        "stats_by_stage": by_stage,
        "requests": request_figures(stats),
        "mapping_hit_rate": _hit_rate(stats.get("tools", {})),
        "timings_s": store.manifest.get("timings", {}),
        "diversity": lexical_diversity(trajectories, tasks),
    }
    summary["drop_reasons"] = drop_reasons(summary)
    summary = _finite(summary)  # strict JSON (records are checked when read; this is the last guard)
    if not store.readonly:  # a reader (synth show) computes it and writes nothing
        write_json_atomic(store.root / "summary.json", summary)
    return summary


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (``null``): the summary is read by strict parsers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
