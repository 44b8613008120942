"""The ``sft`` algorithm: TRL's ``SFTTrainer`` on the run's teacher trajectories, assistant tokens only.

Each exported row (``exports/sft.jsonl``: OpenAI messages and the task's tools) is rendered by the model's chat
template *with its own tools* and tokenized here, with the template's ``{% generation %}`` markers giving the
assistant mask; TRL turns that mask into labels (-100 on system, user and tool tokens). Pre-tokenizing keeps
each row's tool schemas intact (Arrow would merge different schemas into one struct with null keys).

With ``curriculum=true`` training runs in two stages on the environment-scaling export: first
``exports/curriculum/general.jsonl`` (every domain), then ``exports/curriculum/vertical.jsonl`` (the vertical
domains, ``export.vertical`` of the run), continuing from the first stage's weights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError, UsageError
from synthagent.core.protocols import TrainRequest
from synthagent.plugins.training.trl.common import (
    check_model_dir,
    distributed_teardown,
    load_model_and_tokenizer,
    split_options,
    trl_config,
    write_json,
)

__all__ = ["SFTAlgorithm", "SFT_OPTIONS", "SFT_DEFAULTS", "tokenize_rows", "read_rows"]

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

#: SFTConfig values synthagent picks unless the user sets them (agentic conversations are long).
SFT_DEFAULTS: dict[str, Any] = {"max_length": 4096}


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
        run = Path(request.run_dir)
        if not (run / "manifest.json").is_file():
            raise UsageError(f"run directory {request.run_dir!r} does not exist or is not a synthagent run")
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
        config = trl_config(SFTConfig, str(out / "trainer"), fields, SFT_DEFAULTS)
        with distributed_teardown():
            return train_sft(request, config, own, data)


def train_sft(request: TrainRequest, config: Any, own: dict[str, Any],
              data: Sequence[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Run one SFT stage per ``(name, rows)`` in order, each continuing from the previous weights."""
    import datasets
    from trl import SFTTrainer

    from synthagent.plugins.training.trl.metrics import MetricsLog, make_callback, plot_curves

    start = time.perf_counter()
    out = Path(request.output_dir)
    model, tokenizer, template = load_model_and_tokenizer(request.model, str(own["chat_template"]),
                                                          need_generation=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    all_rows: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    trainer: Any = None
    for name, rows in data:
        if int(own["max_examples"]) > 0:
            rows = rows[: int(own["max_examples"])]
        encoded = tokenize_rows(rows, tokenizer)
        dataset = datasets.Dataset.from_list(encoded)
        metrics = MetricsLog(out / "metrics.jsonl", stage=name if len(data) > 1 else "")
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=[make_callback(metrics)])
        result = trainer.train()
        model = trainer.model
        all_rows.extend(metrics.rows)
        losses = [r["loss"] for r in metrics.rows if "loss" in r]
        stages.append({"stage": name, "examples": len(rows),
                       "assistant_tokens": sum(sum(e["assistant_masks"]) for e in encoded),
                       "tokens": sum(len(e["input_ids"]) for e in encoded),
                       "steps": int(trainer.state.global_step), "first_loss": losses[0] if losses else None,
                       "last_loss": losses[-1] if losses else None,
                       "train_loss": float(getattr(result, "training_loss", 0.0) or 0.0)})
    summary: dict[str, Any] = {
        "algorithm": "sft", "model": request.model, "run": request.run_dir, "chat_template": template,
        "stages": stages, "seconds": round(time.perf_counter() - start, 2), "metrics": str(out / "metrics.jsonl"),
    }
    if trainer is not None and trainer.accelerator.is_main_process:
        if own["save_model"]:
            trainer.save_model(str(out / "model"))
            tokenizer.save_pretrained(str(out / "model"))
            summary["model_out"] = str(out / "model")
        if own["plot"]:
            png = plot_curves(all_rows, out / "curves.png", title=f"SFT on {Path(request.run_dir).name}")
            summary["curves"] = str(png) if png else None
        write_json(out / "train_summary.json", summary)
    return summary
