"""Tool simulators (``synth_register_tool_simulators``): ``sqlite`` (:mod:`.sqlite`, the default: tools
executed on a real SQLite copy; also the database layer other plugins use) and ``llm`` (:mod:`.llm`, a teacher
simulates tool results, cached in the mapping store)."""
