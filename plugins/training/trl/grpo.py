"""The ``grpo`` algorithm: TRL's ``GRPOTrainer`` with synthagent's multi-turn environment as the rollout.

Why ``rollout_func`` and not ``environment_factory``: TRL's ``environment_factory`` turns one environment class's
public methods into the tools of every prompt (routing by an ``environment`` column picks among a fixed set of
classes), and TRL itself drives the conversation: it renders the tool results, re-parses completions with its own
response parser, and has no place for a simulated user who answers the agent between turns. synthagent tasks each
carry their own toolset (and database), the user simulator holds hidden facts the agent must ask for, and the
reward is a rubric over the whole conversation and the final database state. ``rollout_func`` hands us the prompts
and the trainer and takes back ids and masks, so the same LangGraph loop that produced the teacher data runs the
policy, with any registered tool and user simulator, token-in/token-out. See ``docs/training.md``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.protocols import TrainRequest
from synthagent.plugins.training.trl.common import (
    check_model_dir,
    distributed_teardown,
    load_model_and_tokenizer,
    precision_summary,
    resolve_precision,
    save_outputs,
    split_options,
    trl_config,
)

__all__ = ["GRPOAlgorithm", "GRPO_OPTIONS", "GRPO_DEFAULTS"]

log = logging.getLogger("synthagent.train")

#: synthagent's own options of ``grpo`` (everything else must be a ``GRPOConfig`` field).
GRPO_OPTIONS: dict[str, Any] = {
    "tasks": 0,                 # train on at most this many of the run's tasks (0 = all with a rubric)
    "domains": [],              # only tasks of these domains (empty = all)
    "max_turns": 0,             # agent turns per episode (0 = the run's simulate.max_turns)
    "max_turn_tokens": 256,     # most tokens one policy turn may sample
    "policy_budget": 0,         # most tokens the policy may sample per episode (0 = only max_completion_length)
    "zero_variance": "resample",  # resample | drop | keep (see ZeroVarianceFilter)
    "max_resample": 2,          # resampling rounds per step before a still-flat group is dropped
    "chat_template": "auto",    # auto | model | chatml-tools | PATH
    "plot": True,               # draw curves.png at the end
    "save_model": True,         # save the trained model to OUTPUT/model
}

#: GRPOConfig values synthagent picks unless the user sets them (multi-turn episodes need a longer completion).
GRPO_DEFAULTS: dict[str, Any] = {"max_completion_length": 1024, "num_generations": 4,
                                 "per_device_train_batch_size": 4, "learning_rate": 1e-6}


class GRPOAlgorithm:
    """Multi-turn GRPO through TRL (module docstring). Options: :data:`GRPO_OPTIONS` plus any ``GRPOConfig`` field
    (``max_steps``, ``learning_rate``, ``num_generations``, ``beta``, ``loss_type``, ``temperature``, ...)."""

    name = "grpo"

    def train(self, request: TrainRequest) -> dict[str, Any]:
        """Train ``request.model`` on the tasks of ``request.run_dir``; write the model, ``metrics.jsonl``,
        ``curves.png`` and ``train_summary.json`` to ``request.output_dir``; return the summary."""
        check_model_dir(request.model)
        from trl import GRPOConfig

        own, fields = split_options(request.options, GRPO_OPTIONS, GRPOConfig, self.name)
        from synthagent.plugins.training.trl.rollout import ZeroVarianceFilter

        zv_filter = ZeroVarianceFilter(str(own["zero_variance"]), int(own["max_resample"]))
        out = Path(request.output_dir)
        precision = resolve_precision(fields)  # bf16=auto|bf16|fp32 becomes true/false here
        config = trl_config(GRPOConfig, str(out / "trainer"), fields, GRPO_DEFAULTS)
        with distributed_teardown():
            return train_grpo(request, config, own, zv_filter, precision=precision)


def train_grpo(request: TrainRequest, config: Any, own: dict[str, Any], zv_filter: Any,
               *, keep_rollouts: list[Any] | None = None, callbacks: Sequence[Any] = (),
               precision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run GRPO with a built ``GRPOConfig`` (used by :class:`GRPOAlgorithm`, the tests and the benchmarks).

    :param keep_rollouts: when given, receives every rollout call's ``(rollouts, tokens, env_masks)``.
    :param callbacks: extra ``transformers.TrainerCallback`` objects.
    :param precision: :func:`~synthagent.plugins.training.trl.common.resolve_precision`'s result, recorded in
        the summary as ``precision``.
    """
    import datasets
    from accelerate.utils import gather_object
    from trl import GRPOTrainer

    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.metrics import MetricsLog, make_callback
    from synthagent.plugins.training.trl.rollout import RolloutStats, make_rollout_func, rubric_reward

    start = time.perf_counter()
    out = Path(request.output_dir)
    env = RunEnvironment(request.run_dir, max_turns=int(own["max_turns"]))
    domains = set(own["domains"] or [])
    unknown = domains - {t.domain for t in env.tasks.values()}
    if unknown:
        raise ConfigError(f"domains {sorted(unknown)} have no task in {request.run_dir!r}; "
                          f"domains: {sorted({t.domain for t in env.tasks.values()})}")
    task_ids = sorted(tid for tid, t in env.tasks.items() if not domains or t.domain in domains)
    if int(own["tasks"]) > 0:
        task_ids = sorted(random.Random(config.seed).sample(task_ids, k=min(int(own["tasks"]), len(task_ids))))
    model, tokenizer, template = load_model_and_tokenizer(request.model, str(own["chat_template"]),
                                                          need_generation=False)
    dataset = datasets.Dataset.from_list([{"prompt": env.prompt(env.tasks[t]), "task_id": t} for t in task_ids])
    metrics = MetricsLog(out / "metrics.jsonl")
    (out / "metrics.jsonl").unlink(missing_ok=True)
    holder: dict[str, Any] = {}

    def on_stats(stats: RolloutStats) -> None:
        trainer = holder["trainer"]
        items = gather_object([stats]) if trainer.accelerator.num_processes > 1 else [stats]
        for item in items:
            metrics.add_stats(item)

    rollout_func = make_rollout_func(env, task_ids, filter=zv_filter, max_turn_tokens=int(own["max_turn_tokens"]),
                                     seed=int(config.seed), on_stats=on_stats, keep_rollouts=keep_rollouts,
                                     policy_budget=int(own["policy_budget"]))
    trainer = GRPOTrainer(model=model, reward_funcs=[rubric_reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, rollout_func=rollout_func, callbacks=[make_callback(metrics), *callbacks])
    holder["trainer"] = trainer
    train_output = trainer.train()
    main = trainer.accelerator.is_main_process
    summary: dict[str, Any] = {
        "algorithm": "grpo",
        "model": request.model,
        "run": request.run_dir,
        "train_tasks": len(task_ids),
        "task_ids": task_ids,
        "scorer": env.scorer_name,
        "skipped_tasks": env.skipped,
        # the episodes' environment: the run's user simulator (e.g. an llm user served by a trained user model)
        # and the counters its components kept during training (stats.user.model_turns: user turns it wrote)
        "environment": {"user": str(env.config.user), "tools": str(env.config.tools), "stats": env.runtime.stats()},
        "chat_template": template,
        "precision": precision_summary(precision or {}, config),
        "zero_variance": {"mode": zv_filter.mode, "max_resample": zv_filter.max_resample, **metrics.totals},
        "steps": int(trainer.state.global_step),
        "train_loss": float(getattr(train_output, "training_loss", 0.0) or 0.0),
        "last": metrics.rows[-1] if metrics.rows else {},
        "seconds": round(time.perf_counter() - start, 2),
        "metrics": str(out / "metrics.jsonl"),
    }
    if main:
        save_outputs(trainer, tokenizer, out, own, metrics.rows, summary, f"GRPO on {Path(request.run_dir).name}")
    return summary
