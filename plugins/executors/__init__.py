"""Executors (``synth_register_executors``): where rollouts run. ``local`` (:mod:`.local`, the default: in
process), ``process`` (:mod:`.process`, worker processes) and ``ray`` (:mod:`.ray`, a Ray cluster)."""
