"""LLM backends (``synth_register_llm_backends``): ``openai`` (:mod:`.openai`, any OpenAI-compatible server),
``transformers`` and ``vllm`` (:mod:`.local`, in-process models) and ``oracle`` (:mod:`.oracle`, the offline
teacher that plays the gold workflow)."""
