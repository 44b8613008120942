"""In-process LLM backends: ``transformers`` (local weights, CPU or GPU, GGUF files) and ``vllm``.

Both render the conversation with the model's own chat template (tools included), generate, and parse the
reply with :func:`synthagent.core.toolcalls.parse_assistant`, so native-style ``<tool_call>`` output becomes
:class:`~synthagent.core.models.ToolCall` records and malformed calls become error calls.

Heavy imports (torch, transformers, vllm) happen only when a backend is built. ``vllm`` is an optional extra
(``pip install 'synthagent[vllm]'``, CUDA machines); without it the backend fails with that instruction.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Message, Usage
from synthagent.core.protocols import ChatRequest, ChatResponse
from synthagent.core.toolcalls import parse_assistant

__all__ = ["TransformersBackend", "VLLMBackend", "chat_messages"]


def chat_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Messages for a chat template: OpenAI shape with tool-call arguments as dicts."""
    return [m.openai() for m in messages]


def _call_prefix(request: ChatRequest) -> str:
    """Tool-call ids unique across the turns of a conversation (``call_t3_0``): a repeated ``call_0`` would
    pair a later call with an earlier call's result."""
    return f"call_t{sum(1 for m in request.messages if m.role == 'assistant')}"


class TransformersBackend:
    """A Hugging Face causal LM in this process.

    :param model: a local model directory (or a directory holding ``gguf_file``).
    :param gguf_file: a GGUF file name inside ``model``, loaded through transformers' GGUF loader.
    :param device: ``cpu``, ``cuda``, ``cuda:1``, ... :param dtype: ``float32``, ``bfloat16``, ``float16``.
    :param temperature: default sampling temperature (0 = greedy). :param max_tokens: default new tokens.
    :param chat_template: a Jinja template file to use instead of the tokenizer's.
    """

    def __init__(self, model: str = "", gguf_file: str = "", device: str = "cpu", dtype: str = "float32",
                 temperature: float = 0.0, max_tokens: int = 512, chat_template: str = "") -> None:
        if not model:
            raise ConfigError("the transformers backend needs llm.model: a local model directory")
        if not Path(model).exists():
            raise ConfigError(f"llm.model {model!r} does not exist (the transformers backend loads local files only)")
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise ConfigError("the transformers backend needs torch and transformers: "
                              "pip install 'synthagent[transformers]'") from exc
        self.model_path, self.gguf_file, self.device, self.dtype = model, gguf_file, device, dtype
        self.defaults = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        self.chat_template = Path(chat_template).read_text(encoding="utf-8") if chat_template else None
        self.name = f"transformers:{Path(model).name}{'/' + gguf_file if gguf_file else ''}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        # One generation at a time, held in the worker thread: an asyncio.Lock binds to the first event loop
        # that waits on it, and GRPO's environment runs every rollout batch in a fresh loop (asyncio.run).
        self._lock = threading.Lock()

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return the model and tokenizer."""
        with self._load_lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                kwargs: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, **kwargs)
                if self.chat_template:
                    self._tokenizer.chat_template = self.chat_template
                model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, self.dtype),
                                                             **kwargs)
                self._model = model.to(self.device).eval()  # type: ignore[arg-type]
        return self._model, self._tokenizer

    def _generate(self, request: ChatRequest) -> ChatResponse:
        import torch

        model, tok = self.load()
        params = {**self.defaults, **dict(request.params)}
        tools = [t.openai_schema() for t in request.tools] or None
        inputs = tok.apply_chat_template(chat_messages(request.messages), tools=tools, add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True).to(self.device)
        temperature = float(params.get("temperature") or 0.0)
        torch.manual_seed(request.seed)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=int(params.get("max_tokens") or 512),
                                 do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                                 top_p=params.get("top_p") if temperature > 0 else None,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        prompt_len = inputs["input_ids"].shape[1]
        new = out[0, prompt_len:]
        text = tok.decode(new, skip_special_tokens=False)
        for special in {tok.eos_token, tok.pad_token, *getattr(tok, "all_special_tokens", [])} - {None}:
            if special not in ("<tool_call>", "</tool_call>"):
                text = text.replace(special, "")
        return ChatResponse(parse_assistant(text.strip(), id_prefix=_call_prefix(request)),
                            Usage(int(prompt_len), int(new.shape[0]), 1))

    def _generate_one(self, request: ChatRequest) -> ChatResponse:
        with self._lock:
            return self._generate(request)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Generate in a worker thread (one at a time, in any event loop), so the event loop keeps running."""
        return await asyncio.to_thread(self._generate_one, request)


class VLLMBackend:
    """The in-process vLLM engine (``pip install 'synthagent[vllm]'``; needs a GPU).

    :param model: a local model directory. :param tensor_parallel_size: GPUs per engine.
    :param gpu_memory_utilization: fraction of GPU memory vLLM may take. :param max_model_len: context limit.
    """

    def __init__(self, model: str = "", tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int = 0, temperature: float = 0.0, max_tokens: int = 512) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ConfigError("the vllm backend needs the optional extra: pip install 'synthagent[vllm]' "
                              "(a CUDA machine); on CPU use llm.backend=transformers or an openai server") from exc
        if not model:
            raise ConfigError("the vllm backend needs llm.model: a local model directory")
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        args = AsyncEngineArgs(model=model, tensor_parallel_size=int(tensor_parallel_size),
                               gpu_memory_utilization=float(gpu_memory_utilization),
                               **({"max_model_len": int(max_model_len)} if max_model_len else {}))
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.defaults = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        self.name = f"vllm:{Path(model).name}"
        self._tokenizer: Any = None
        self._counter = 0

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Generate with the engine (continuous batching across concurrent rollouts)."""
        from vllm import SamplingParams

        if self._tokenizer is None:
            self._tokenizer = await self.engine.get_tokenizer()
        params = {**self.defaults, **dict(request.params)}
        tools = [t.openai_schema() for t in request.tools] or None
        prompt = self._tokenizer.apply_chat_template(chat_messages(request.messages), tools=tools,
                                                     add_generation_prompt=True, tokenize=False)
        sampling = SamplingParams(temperature=float(params.get("temperature") or 0.0),
                                  max_tokens=int(params.get("max_tokens") or 512), seed=request.seed)
        self._counter += 1
        final = None
        async for output in self.engine.generate(prompt, sampling, request_id=f"synth-{self._counter}"):
            final = output
        assert final is not None
        completion = final.outputs[0]
        return ChatResponse(parse_assistant(completion.text, id_prefix=_call_prefix(request)),
                            Usage(len(final.prompt_token_ids or []), len(completion.token_ids), 1))


@hookimpl
def synth_register_llm_backends(register: Any) -> None:
    """Register the ``transformers`` and ``vllm`` backends."""
    register("transformers", TransformersBackend, description="local Hugging Face weights (CPU/GPU, GGUF files)")
    register("vllm", VLLMBackend, description="in-process vLLM engine (extra synthagent[vllm], GPU)")
