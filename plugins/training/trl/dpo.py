"""The ``dpo`` algorithm: TRL's ``DPOTrainer`` on the run's preference pairs (``exports/dpo.jsonl``).

Each pair (TRL's conversational format: ``prompt``, ``chosen``, ``rejected``, ``tools``) is rendered by the model's
chat template *with its own tools* and tokenized here the way TRL 1.16's ``DPOTrainer`` does it (the prompt with
the generation prompt, then prompt+chosen and prompt+rejected; the completions start where the token sequences
diverge). Pre-tokenizing keeps each row's tool schemas and call arguments intact (Arrow would merge different
schemas into one struct with null keys); the trainer is told to use the tokenized columns as they are.

A run made with one sample per task (the default ``simulate.samples = 1``) has no pairs: the export stage counts
each task under ``dpo_unpaired`` and this algorithm stops with a :class:`UsageError` saying so.

CPU defaults (no CUDA): one pair per step (``per_device_train_batch_size=1``, ``gradient_accumulation_steps=1``)
and ``max_length`` from the data (the longest tokenized pair), so nothing is truncated; the reference model is
TRL's frozen copy of the starting weights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthagent.core.errors import UsageError
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

__all__ = ["DPOAlgorithm", "DPO_OPTIONS", "DPO_DEFAULTS", "DPO_CPU_DEFAULTS", "tokenize_pairs", "read_pairs"]

log = logging.getLogger("synthagent.train")

#: synthagent's own options of ``dpo`` (everything else must be a ``DPOConfig`` field).
DPO_OPTIONS: dict[str, Any] = {
    "data": "",                 # a JSONL of preference pairs instead of exports/dpo.jsonl
    "max_examples": 0,          # use at most this many pairs (0 = all)
    "chat_template": "auto",    # auto | model | chatml-tools | PATH
    "plot": True,
    "save_model": True,
}
#: DPOConfig values synthagent picks unless the user sets them (``max_length=None``: the longest pair).
DPO_DEFAULTS: dict[str, Any] = {"max_length": None}
#: DPOConfig values synthagent picks on a machine without CUDA (two models in memory; long agentic pairs).
DPO_CPU_DEFAULTS: dict[str, Any] = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1}


def read_pairs(path: Path, run: Path | None = None) -> list[dict[str, Any]]:
    """The preference pairs of a JSONL export; an empty or missing file is a :class:`UsageError` that gives the
    export stage's reasons (``dpo_unpaired`` in the run's manifest)."""
    if not path.is_file():
        raise UsageError(f"{str(path)!r} does not exist: run `synth run` (this version) to export DPO pairs")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        why = ""
        if run is not None and (run / "manifest.json").is_file():
            unpaired = json.loads((run / "manifest.json").read_text()).get("stages", {}).get("export", {}).get(
                "dpo_unpaired", {})
            why = f" (tasks without a pair: {unpaired})" if unpaired else ""
        raise UsageError(f"the DPO data {str(path)!r} is empty{why}: a pair needs two trajectories of a task "
                         "with different scores; run with --set simulate.samples=2 or more and a policy whose "
                         "samples differ")
    return rows


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pairs(rows: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, list[int]]]:
    """``prompt_ids``, ``chosen_ids`` and ``rejected_ids`` of each pair, as TRL's ``DPOTrainer`` builds them."""

    def ids(messages: list[dict[str, Any]], tools: Any, **kw: Any) -> list[int]:
        enc = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=True, return_dict=True, **kw)
        return list(enc["input_ids"])

    out = []
    for row in rows:
        tools = row.get("tools")
        prompt = ids(row["prompt"], tools, add_generation_prompt=True)
        chosen = ids(row["prompt"] + row["chosen"], tools)
        rejected = ids(row["prompt"] + row["rejected"], tools)
        n = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
        out.append({"prompt_ids": prompt[:n], "chosen_ids": chosen[n:], "rejected_ids": rejected[n:]})
    return out


class DPOAlgorithm:
    """Preference optimisation through TRL's ``DPOTrainer`` (module docstring). Options: :data:`DPO_OPTIONS`
    plus any ``DPOConfig`` field (``beta``, ``loss_type``, ``max_steps``, ``learning_rate``, ...)."""

    name = "dpo"

    def train(self, request: TrainRequest) -> dict[str, Any]:
        """Train ``request.model`` on the pairs; write the model, ``metrics.jsonl``, ``curves.png`` and
        ``train_summary.json`` to ``request.output_dir``; return the summary."""
        check_model_dir(request.model)
        from trl import DPOConfig

        own, fields = split_options(request.options, DPO_OPTIONS, DPOConfig, self.name)
        run = require_run(request.run_dir)
        path = Path(str(own["data"])) if own["data"] else run / "exports/dpo.jsonl"
        rows = read_pairs(path, run)
        if int(own["max_examples"]) > 0:
            rows = rows[: int(own["max_examples"])]
        precision = resolve_precision(fields)
        config = trl_config(DPOConfig, str(Path(request.output_dir) / "trainer"), fields, DPO_DEFAULTS,
                            DPO_CPU_DEFAULTS)
        with distributed_teardown():
            return train_dpo(request, config, own, rows, precision=precision)


def train_dpo(request: TrainRequest, config: Any, own: dict[str, Any], rows: list[dict[str, Any]], *,
              precision: dict[str, Any] | None = None) -> dict[str, Any]:
    """One DPO run on ``rows`` (``config.max_length=None``: the longest tokenized pair, capped at the model's
    context)."""
    import datasets
    from trl import DPOTrainer

    from synthagent.plugins.training.trl.metrics import MetricsLog, make_callback, make_progress_callback

    class _PreTokenized(DPOTrainer):  # type: ignore[misc]
        """Uses the ``prompt_ids``/``chosen_ids``/``rejected_ids`` columns built by :func:`tokenize_pairs`."""

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            return dataset

    start = time.perf_counter()
    out = Path(request.output_dir)
    model, tokenizer, template = load_model_and_tokenizer(request.model, str(own["chat_template"]),
                                                          need_generation=False)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    encoded = tokenize_pairs(rows, tokenizer)
    lengths = [len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in encoded]
    from_data = config.max_length is None
    if from_data:
        config.max_length = max(lengths)
        context = getattr(model.config, "max_position_embeddings", None)
        if isinstance(context, int) and 0 < context < config.max_length:
            log.warning("the longest DPO pair has %d tokens, more than the model's context (%d): max_length=%d",
                        config.max_length, context, context)
            config.max_length = context
    kept = [e for e in encoded if len(e["prompt_ids"]) < int(config.max_length)]
    if not kept:
        raise UsageError(f"max_length={config.max_length} leaves no DPO pair a completion token: the prompts are "
                         f"{min(len(e['prompt_ids']) for e in encoded)} tokens or longer")
    if len(kept) < len(encoded):
        log.warning("max_length=%d drops %d of %d DPO pairs (their prompt alone fills it)", config.max_length,
                    len(encoded) - len(kept), len(encoded))
    prec = precision_summary(precision or {}, config)
    metrics = MetricsLog(out / "metrics.jsonl")
    progress = make_progress_callback(
        examples=len(kept), tokens=sum(min(n, int(config.max_length)) for n in lengths),
        max_length=int(config.max_length), precision="bf16" if prec["bf16"] else "fp32")
    trainer = _PreTokenized(model=model, args=config, train_dataset=datasets.Dataset.from_list(kept),
                            processing_class=tokenizer, callbacks=[make_callback(metrics), progress])
    result = trainer.train()
    losses = [r["loss"] for r in metrics.rows if "loss" in r]
    summary: dict[str, Any] = {
        "algorithm": "dpo", "model": request.model, "run": request.run_dir, "chat_template": template,
        "pairs": len(kept), "pairs_dropped": len(encoded) - len(kept), "max_length": int(config.max_length),
        "max_length_from": "data" if from_data else "option", "beta": float(config.beta),
        "steps": int(trainer.state.global_step), "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": float(getattr(result, "training_loss", 0.0) or 0.0),
        "seconds": round(time.perf_counter() - start, 2), "metrics": str(out / "metrics.jsonl"), "precision": prec,
        "per_device_train_batch_size": int(config.per_device_train_batch_size),
        "gradient_accumulation_steps": int(config.gradient_accumulation_steps),
    }
    if trainer.accelerator.is_main_process:
        save_outputs(trainer, tokenizer, out, own, metrics.rows, summary, f"DPO on {Path(request.run_dir).name}")
    return summary
