"""Rubrics and reward scorers.

Builders (``synth_register_rubric_builders``): ``workflow-rubric`` (:mod:`.demonstrated`, the default: from the
workflow and K teacher demonstrations), ``workflow`` and ``verified`` (:mod:`.workflow`). Scorers
(``synth_register_reward_scorers``): ``rubric`` (:mod:`.scorer`, the default, programmatic) and ``judged``
(:mod:`.judge`, an LLM judge for language criteria). Supporting modules: :mod:`.compose` (reward
compositions), :mod:`.checkers` (executable per-instance checkers), :mod:`.validation` (does a reward separate
good from bad trajectories?). Prompts live in ``prompts/``."""
