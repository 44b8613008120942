"""The ``sft`` algorithm: TRL's ``SFTTrainer`` on the run's teacher trajectories, assistant tokens only.

Each exported row (``exports/sft.jsonl``: OpenAI messages and the task's tools) is rendered by the model's chat
template *with its own tools* and tokenized here, with the template's ``{% generation %}`` markers giving the
assistant mask; TRL turns that mask into labels (-100 on system, user and tool tokens). Pre-tokenizing keeps
each row's tool schemas intact (Arrow would merge different schemas into one struct with null keys).

With ``curriculum=true`` training runs in two stages on the environment-scaling export: first
``exports/curriculum/general.jsonl`` (every domain), then ``exports/curriculum/vertical.jsonl`` (the vertical
domains, ``export.vertical`` of the run), continuing from the first stage's weights.

CPU defaults (no CUDA): one row per step (``per_device_train_batch_size=1``, ``gradient_accumulation_steps=1``)
and, everywhere, ``max_length`` from the data (the longest tokenized row), so nothing is truncated or padded
beyond need. A ``max_length`` the user sets that would leave TRL no row with an assistant token is a
:class:`UsageError` before the trainer is built (TRL would fail with ``num_samples=0``). ``bf16=auto`` probes
the hardware (:func:`~synthagent.plugins.training.trl.common.choose_precision`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError, UsageError
from synthagent.core.protocols import TrainRequest
from synthagent.plugins.training.trl.common import (
    check_model_dir,
    distributed_teardown,
    load_model_and_tokenizer,
    precision_summary,
    require_run,
    resolve_precision,
    save_outputs,
    split_options,
    trl_config,
)

__all__ = ["SFTAlgorithm", "SFT_OPTIONS", "SFT_DEFAULTS", "SFT_CPU_DEFAULTS", "tokenize_rows", "read_rows",
           "check_max_length"]

log = logging.getLogger("synthagent.train")

#: synthagent's own options of ``sft`` (everything else must be an ``SFTConfig`` field).
SFT_OPTIONS: dict[str, Any] = {
    "curriculum": False,        # two stages: exports/curriculum/general.jsonl, then vertical.jsonl
    "data": "",                 # a JSONL of SFT rows instead of exports/sft.jsonl
    "max_examples": 0,          # use at most this many rows per stage (0 = all)
    "chat_template": "auto",    # auto | model | chatml-tools | PATH
    "plot": True,
    "save_model": True,
}

#: SFTConfig values synthagent picks unless the user sets them. ``max_length=None`` here means "from the data":
#: each stage's longest tokenized row (agentic conversations are long; nothing is truncated).
SFT_DEFAULTS: dict[str, Any] = {"max_length": None}
#: SFTConfig values synthagent picks on a machine without CUDA (TRL's batch of 8 long rows took 11.9 GB and
#: 742 s without a step on a 2-core CPU).
SFT_CPU_DEFAULTS: dict[str, Any] = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The SFT rows of a JSONL export."""
    if not path.is_file():
        raise UsageError(f"{str(path)!r} does not exist: run `synth run` to export SFT data"
                         + (" with export.vertical set (the curriculum export)" if "curriculum" in str(path) else ""))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tokenize_rows(rows: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, list[int]]]:
    """``input_ids`` and ``assistant_masks`` of each row, rendered with its own tools by the chat template."""
    out = []
    for row in rows:
        enc = tokenizer.apply_chat_template(row["messages"], tools=row.get("tools") or None, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
        ids = list(enc["input_ids"])
        mask = [int(m) for m in enc["assistant_masks"]]
        if 1 not in mask:
            raise ConfigError("the chat template marks no assistant tokens (no {% generation %} block); use "
                              "--set chat_template=chatml-tools or a template with generation markers")
        out.append({"input_ids": ids, "assistant_masks": mask})
    return out


def check_max_length(encoded: Sequence[Mapping[str, Sequence[int]]], max_length: int,
                     truncation_mode: str = "keep_start", *, stage: str = "sft") -> dict[str, int]:
    """Check ``max_length`` against the tokenized rows the way TRL 1.16 prepares them: it truncates each row to
    ``max_length`` tokens, then drops rows left with no assistant token (no loss).

    :returns: ``{"rows", "shortest", "longest", "truncated", "dropped"}`` (token counts and row counts); logs a
        warning when rows are truncated or dropped.
    :raises UsageError: when every row would be dropped (TRL would stop with ``num_samples=0``), naming
        ``max_length``, its value, the shortest and longest rows and the smallest value that keeps a row.
    """
    lengths = [len(e["input_ids"]) for e in encoded]
    keep_end = truncation_mode == "keep_end"

    def first_needed(mask: Sequence[int]) -> int:
        """The fewest tokens TRL must keep for the row to keep an assistant token."""
        bits = [i for i, m in enumerate(mask) if m]
        return (len(mask) - bits[-1]) if keep_end else bits[0] + 1

    needed = [first_needed(e["assistant_masks"]) for e in encoded]
    dropped = sum(1 for n in needed if n > max_length)
    truncated = sum(1 for n in lengths if n > max_length)
    stats = {"rows": len(lengths), "shortest": min(lengths), "longest": max(lengths), "truncated": truncated,
             "dropped": dropped}
    if dropped == len(lengths):
        raise UsageError(
            f"max_length={max_length} is too small for the {stage} data: rows are {stats['shortest']} to "
            f"{stats['longest']} tokens long, and TRL truncates each to max_length and drops the rows left with no "
            f"assistant token, which here is every row (TRL would fail with num_samples=0). Set max_length to at "
            f"least {min(needed)} (one row kept) or {stats['longest']} (nothing truncated), or leave it unset "
            "(the longest row)")
    if truncated:
        log.warning("max_length=%d truncates %d of %d %s rows (%d to %d tokens long)%s", max_length, truncated,
                    len(lengths), stage, stats["shortest"], stats["longest"],
                    f"; TRL drops {dropped} of them, left with no assistant token" if dropped else "")
    return stats


class SFTAlgorithm:
    """Assistant-only SFT through TRL (module docstring). Options: :data:`SFT_OPTIONS` plus any ``SFTConfig``
    field (``max_steps``, ``num_train_epochs``, ``learning_rate``, ``per_device_train_batch_size``, ...)."""

    name = "sft"

    def train(self, request: TrainRequest) -> dict[str, Any]:
        """Fine-tune ``request.model``; write the model, ``metrics.jsonl``, ``curves.png`` and
        ``train_summary.json`` to ``request.output_dir``; return the summary."""
        check_model_dir(request.model)
        from trl import SFTConfig

        own, fields = split_options(request.options, SFT_OPTIONS, SFTConfig, self.name)
        run = require_run(request.run_dir)
        if own["data"]:
            stages = [("sft", Path(str(own["data"])))]
        elif own["curriculum"]:
            stages = [("general", run / "exports/curriculum/general.jsonl"),
                      ("vertical", run / "exports/curriculum/vertical.jsonl")]
        else:
            stages = [("sft", run / "exports/sft.jsonl")]
        data = [(name, read_rows(path)) for name, path in stages]
        for name, rows in data:
            if not rows:
                raise UsageError(f"the {name} SFT data is empty: no teacher trajectory passed export.min_score")
        out = Path(request.output_dir)
        precision = resolve_precision(fields)
        config = trl_config(SFTConfig, str(out / "trainer"), fields, SFT_DEFAULTS, SFT_CPU_DEFAULTS)
        with distributed_teardown():
            return train_sft(request, config, own, data, precision=precision)


def train_sft(request: TrainRequest, config: Any, own: dict[str, Any],
              data: Sequence[tuple[str, list[dict[str, Any]]]], *,
              precision: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run one SFT stage per ``(name, rows)`` in order, each continuing from the previous weights.

    ``config.max_length=None`` means each stage's longest tokenized row; a set one is checked with
    :func:`check_max_length` before the trainer is built.

    :param precision: :func:`~synthagent.plugins.training.trl.common.resolve_precision`'s result, recorded in
        the summary as ``precision``.
    """
    import datasets
    from trl import SFTTrainer

    from synthagent.plugins.training.trl.metrics import MetricsLog, make_callback, make_progress_callback

    start = time.perf_counter()
    out = Path(request.output_dir)
    model, tokenizer, template = load_model_and_tokenizer(request.model, str(own["chat_template"]),
                                                          need_generation=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    all_rows: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    trainer: Any = None
    prec = precision_summary(precision or {}, config)
    from_data = config.max_length is None
    for name, rows in data:
        if int(own["max_examples"]) > 0:
            rows = rows[: int(own["max_examples"])]
        encoded = tokenize_rows(rows, tokenizer)
        lengths = [len(e["input_ids"]) for e in encoded]
        context = getattr(model.config, "max_position_embeddings", None)
        if from_data:  # TRL reads it when it prepares the dataset, in SFTTrainer()
            config.max_length = max(lengths)
            if isinstance(context, int) and 0 < context < config.max_length:
                log.warning("the longest %s row has %d tokens, more than the model's context (%d): max_length=%d",
                            name, config.max_length, context, context)
                config.max_length = context
                check_max_length(encoded, context, str(config.truncation_mode), stage=name)
        elif not config.packing:
            check_max_length(encoded, int(config.max_length), str(config.truncation_mode), stage=name)
        dataset = datasets.Dataset.from_list(encoded)
        metrics = MetricsLog(out / "metrics.jsonl", stage=name if len(data) > 1 else "")
        progress = make_progress_callback(
            examples=len(encoded), tokens=sum(min(n, int(config.max_length)) for n in lengths),
            max_length=int(config.max_length), precision="bf16" if prec["bf16"] else "fp32",
            stage=name if len(data) > 1 else "")
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=[make_callback(metrics), progress])
        result = trainer.train()
        model = trainer.model
        all_rows.extend(metrics.rows)
        losses = [r["loss"] for r in metrics.rows if "loss" in r]
        stages.append({"stage": name, "examples": len(rows),
                       "assistant_tokens": sum(sum(e["assistant_masks"]) for e in encoded),
                       "tokens": sum(lengths), "max_length": int(config.max_length),
                       "max_length_from": "data" if from_data else "option",
                       "steps": int(trainer.state.global_step), "first_loss": losses[0] if losses else None,
                       "last_loss": losses[-1] if losses else None,
                       "train_loss": float(getattr(result, "training_loss", 0.0) or 0.0)})
    summary: dict[str, Any] = {
        "algorithm": "sft", "model": request.model, "run": request.run_dir, "chat_template": template,
        "stages": stages, "seconds": round(time.perf_counter() - start, 2), "metrics": str(out / "metrics.jsonl"),
        "precision": prec, "per_device_train_batch_size": int(config.per_device_train_batch_size),
        "gradient_accumulation_steps": int(config.gradient_accumulation_steps),
    }
    if trainer is not None and trainer.accelerator.is_main_process:
        save_outputs(trainer, tokenizer, out, own, all_rows, summary, f"SFT on {Path(request.run_dir).name}")
    return summary
