"""Training through TRL: the ``grpo`` and ``sft`` RL-algorithm plugins (hook kind ``algorithm``).

* ``grpo``: TRL's ``GRPOTrainer`` with a ``rollout_func`` that runs every completion as a multi-turn episode in
  the run's own environment (its per-task tools, the tool simulator or SQLite database, the user simulator),
  token-in/token-out, with tool results and user turns masked out of the loss; the reward is the run's rubric
  score; zero-variance groups are dropped or resampled (DAPO's dynamic sampling).
* ``user-sft``: the same trainer on the run's verified dialogues seen from the user's side: a user model for the
  ``llm`` user simulator (EigenData's user-model fine-tuning).
* ``sft``: TRL's ``SFTTrainer`` on the exported teacher trajectories, assistant tokens only, tools rendered by the
  model's chat template; optionally the two-stage curriculum (general, then vertical).
* ``dpo``: TRL's ``DPOTrainer`` on the exported preference pairs (``exports/dpo.jsonl``: each task's best and worst
  scored trajectories; needs ``simulate.samples`` >= 2).

This module is light: torch, transformers and TRL are imported inside the algorithms' ``train`` methods only,
so ``synth --help`` and ``synth plugins`` stay fast. See ``docs/training.md``.
"""

from __future__ import annotations

from typing import Any

from synthagent.core.hookspecs import hookimpl

__all__ = ["GRPOAlgorithm", "SFTAlgorithm", "UserSFTAlgorithm", "DPOAlgorithm"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the algorithm classes does not import TRL (they import it in ``train``).
    if name == "GRPOAlgorithm":
        from synthagent.plugins.training.trl.grpo import GRPOAlgorithm

        return GRPOAlgorithm
    if name == "SFTAlgorithm":
        from synthagent.plugins.training.trl.sft import SFTAlgorithm

        return SFTAlgorithm
    if name == "DPOAlgorithm":
        from synthagent.plugins.training.trl.dpo import DPOAlgorithm

        return DPOAlgorithm
    if name == "UserSFTAlgorithm":
        from synthagent.plugins.training.trl.user_sft import UserSFTAlgorithm

        return UserSFTAlgorithm
    raise AttributeError(name)


@hookimpl
def synth_register_rl_algorithms(register: Any) -> None:
    """Register the ``grpo``, ``sft``, ``dpo`` and ``user-sft`` algorithms."""
    from synthagent.plugins.training.trl.dpo import DPOAlgorithm
    from synthagent.plugins.training.trl.grpo import GRPOAlgorithm
    from synthagent.plugins.training.trl.sft import SFTAlgorithm
    from synthagent.plugins.training.trl.user_sft import UserSFTAlgorithm

    register("grpo", GRPOAlgorithm,
             description="TRL GRPOTrainer, multi-turn rollouts in the run's environment, rubric reward (extra train)")
    register("sft", SFTAlgorithm,
             description="TRL SFTTrainer on the teacher trajectories, assistant-only loss, curriculum (extra train)")
    register("dpo", DPOAlgorithm,
             description="TRL DPOTrainer on the best/worst scored trajectory pairs (simulate.samples>=2; extra train)")
    register("user-sft", UserSFTAlgorithm,
             description="TRL SFTTrainer teaching a model to play the user from verified dialogues (extra train)")
