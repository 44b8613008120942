"""Training metrics: one JSON line per logged step in ``metrics.jsonl`` and PNG learning curves.

GRPO rows carry the rubric reward's mean and standard deviation, the success rate, the fraction of
zero-variance groups (before filtering), how many groups were resampled and dropped, token counts and TRL's
loss; SFT rows carry the loss, the curriculum stage and the learning rate.

:func:`make_progress_callback` prints one progress line per logged step (``step 3/40 · loss 1.234 · 152 tokens/s
· elapsed 0:45 · ETA 9:15``) through the ``synthagent.train`` logger, which ``synth train`` sends to stderr.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthagent.plugins.training.trl.rollout import RolloutStats

__all__ = ["MetricsLog", "make_callback", "make_progress_callback", "format_duration", "plot_curves", "merge_stats"]

progress_log = logging.getLogger("synthagent.train")


def merge_stats(items: Sequence[RolloutStats]) -> dict[str, Any]:
    """Aggregate rollout statistics (several rollout calls or processes) into one metrics row."""
    n = sum(s.rollouts for s in items)
    groups = sum(s.groups for s in items)
    mean = sum(s.reward_sum for s in items) / n if n else 0.0
    var = max(0.0, sum(s.reward_sq_sum for s in items) / n - mean * mean) if n else 0.0
    return {
        "reward_mean": round(mean, 6),
        "reward_std": round(math.sqrt(var), 6),
        "success_rate": round(sum(s.successes for s in items) / n, 6) if n else 0.0,
        "groups": groups,
        "zero_variance_groups": sum(s.zero_variance_groups for s in items),
        "zero_variance_frac": round(sum(s.zero_variance_groups for s in items) / groups, 6) if groups else 0.0,
        "resampled_groups": sum(s.resampled_groups for s in items),
        "dropped_groups": sum(s.dropped_groups for s in items),
        "rollouts": n,
        "policy_tokens": sum(s.policy_tokens for s in items),
        "env_tokens": sum(s.env_tokens for s in items),
        "turns_mean": round(sum(s.turns for s in items) / n, 3) if n else 0.0,
        "tool_calls_mean": round(sum(s.tool_calls for s in items) / n, 3) if n else 0.0,
        "rollout_s": round(sum(s.seconds for s in items), 4),
    }


class MetricsLog:
    """Collects rollout statistics and TRL's logs into ``metrics.jsonl`` (main process only writes)."""

    def __init__(self, path: Path, *, stage: str = "") -> None:
        self.path = path
        self.stage = stage
        self.pending: list[RolloutStats] = []
        self.rows: list[dict[str, Any]] = []
        self.totals = {"groups": 0, "zero_variance_groups": 0, "resampled_groups": 0, "dropped_groups": 0}

    def add_stats(self, stats: RolloutStats) -> None:
        """Record one rollout call (already gathered across processes)."""
        self.pending.append(stats)
        for key in self.totals:
            self.totals[key] += getattr(stats, key)

    def on_log(self, step: int, logs: Mapping[str, Any], *, write: bool) -> dict[str, Any] | None:
        """Merge TRL's ``logs`` for ``step`` with the rollouts since the last row; append the row."""
        if "loss" not in logs and not self.pending:
            return None
        row: dict[str, Any] = {"step": int(step)}
        if self.stage:
            row["stage"] = self.stage
        for key in ("loss", "learning_rate", "grad_norm", "epoch", "entropy", "mean_token_accuracy"):
            if key in logs and isinstance(logs[key], (int, float)):
                row[key] = float(logs[key])
        if self.pending:
            row.update(merge_stats(self.pending))
            self.pending = []
        self.rows.append(row)
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        return row


def make_callback(log: MetricsLog) -> Any:
    """A ``transformers.TrainerCallback`` that feeds ``log`` at every logging step."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> None:
            log.on_log(state.global_step, logs or {}, write=bool(state.is_world_process_zero))

    return _Callback()


def format_duration(seconds: float) -> str:
    """``M:SS`` (or ``H:MM:SS`` from an hour on) for a number of seconds."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _emit(line: str) -> None:
    """Log ``line`` at INFO on ``synthagent.train`` where logging shows it (``synth train`` configures INFO on
    stderr), else print it to stderr, so the progress is visible either way."""
    if progress_log.isEnabledFor(logging.INFO) and progress_log.hasHandlers():
        progress_log.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


def make_progress_callback(*, examples: int, tokens: int, max_length: int | None, precision: str,
                           stage: str = "") -> Any:
    """A ``transformers.TrainerCallback`` that prints a line before the first step (examples, tokens,
    ``max_length``, batch, accumulation, total steps, precision) and one per logged step:
    ``step 3/40 · loss 1.234 · 152 tokens/s · elapsed 0:45 · ETA 9:15`` (main process only).

    tokens/s is an approximation from the average row length: a step consumes ``batch × accumulation × processes``
    rows, each counted as ``tokens / examples`` tokens (``tokens`` being the training tokens after truncation to
    ``max_length``), divided by the seconds since training began; it is not a count of the rows actually drawn.

    :param stage: a curriculum stage's name, put in front of each line.
    """
    from transformers import TrainerCallback

    prefix = f"[{stage}] " if stage else ""
    per_row = tokens / examples if examples else 0.0

    class _Progress(TrainerCallback):  # type: ignore[misc]
        start = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()
            if state.is_world_process_zero:
                _emit(f"{prefix}training on {examples} examples · {tokens} tokens · max_length {max_length} · "
                      f"batch {args.per_device_train_batch_size} · accumulation {args.gradient_accumulation_steps} · "
                      f"{state.max_steps} steps · precision {precision}")

        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logs = logs or {}
            if not state.is_world_process_zero or "loss" not in logs:
                return
            step, total = int(state.global_step), int(state.max_steps)
            elapsed = time.perf_counter() - self.start
            rows = step * args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            rate = rows * per_row / elapsed if elapsed > 0 else 0.0
            eta = elapsed / step * max(0, total - step) if step else 0.0
            _emit(f"{prefix}step {step}/{total} · loss {float(logs['loss']):.3f} · {rate:.0f} tokens/s · "
                  f"elapsed {format_duration(elapsed)} · ETA {format_duration(eta)}")

    return _Progress()


def plot_curves(rows: Sequence[Mapping[str, Any]], png: Path, *, title: str) -> Path | None:
    """Draw loss, reward (mean +- std) and zero-variance fraction per step to ``png`` (None if nothing to draw)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "loss")]
    if any("reward_mean" in r for r in rows):
        panels += [("reward_mean", "rubric reward (mean ± std)"), ("zero_variance_frac", "zero-variance groups")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        pts = [(i + 1, r[key], r.get("reward_std", 0.0), r.get("stage", "")) for i, r in enumerate(rows) if key in r]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.2)
        if key == "reward_mean":
            lo = [p[1] - p[2] for p in pts]
            hi = [p[1] + p[2] for p in pts]
            ax.fill_between(xs, lo, hi, alpha=0.2)
            if any("success_rate" in r for r in rows):
                ax.plot(xs, [r.get("success_rate", 0.0) for r in rows if key in r], linewidth=1.0,
                        linestyle="--", label="success rate")
                ax.legend(fontsize=7)
        stages = [p[3] for p in pts]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(xs[i] - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("logged step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
