"""Mapping stores (``synth_register_mapping_stores``): where simulated tool results are cached, keyed by
call. ``memory`` (:mod:`.memory`, the default), ``sqlite`` (:mod:`.sqlite`, a file) and ``redis`` (:mod:`.redis`)."""
