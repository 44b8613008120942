"""Task generators (``synth_register_task_generators``): where tasks come from.

``offline_domains`` (``offline-domains``, the default: hand-written domain packs), ``graph_domains``
(``graph-domains``: tool graphs sampled from a pool of APIs) and ``persona_fuzzy`` (``persona-fuzzy``: a
teacher writes tasks for personas)."""
