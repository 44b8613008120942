"""Trainers (``synth_register_rl_algorithms``): ``grpo`` and ``sft`` through TRL (:mod:`.trl`)."""
