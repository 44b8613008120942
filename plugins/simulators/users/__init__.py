"""User simulators (``synth_register_user_simulators``): ``rule`` (:mod:`.rule`, the default, offline) and
``llm`` (:mod:`.llm`, a teacher plays the user)."""
