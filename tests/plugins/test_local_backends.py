"""In-process backends: transformers on a tiny model built here (no hub), and vllm's missing-extra error."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from synthagent.core.errors import ConfigError
from synthagent.core.models import Message, ToolSpec
from synthagent.core.protocols import ChatRequest
from synthagent.plugins.backends.hf_testing import build_tiny_model
from synthagent.plugins.backends.local import TransformersBackend, VLLMBackend

TOOL = ToolSpec("get_balance", "Get an account balance.",
                {"type": "object", "properties": {"account_id": {"type": "string"}}, "required": ["account_id"]})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")), ["What is my balance?", "get_balance account_id"])


def test_generates_a_message_with_usage_deterministically(tiny: str) -> None:
    backend = TransformersBackend(model=tiny, max_tokens=12)
    request = ChatRequest(messages=(Message("system", "Be brief."), Message("user", "What is my balance?")),
                          tools=(TOOL,), seed=3)
    a = asyncio.run(backend.chat(request))
    b = asyncio.run(backend.chat(request))
    assert a == b and a.message.role == "assistant"
    assert 0 < a.usage.completion_tokens <= 12 and a.usage.prompt_tokens > 20
    without_tools = asyncio.run(backend.chat(ChatRequest(messages=request.messages, seed=3)))
    assert without_tools.usage.prompt_tokens < a.usage.prompt_tokens  # the tool schema is in the prompt
    assert backend.name.startswith("transformers:")


def test_generation_does_not_block_the_event_loop(tiny: str) -> None:
    backend = TransformersBackend(model=tiny, max_tokens=64)
    backend.load()

    async def go() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.ensure_future(ticker())
        start = time.perf_counter()
        await asyncio.gather(*[backend.chat(ChatRequest(messages=(Message("user", "hello there"),), seed=i,
                                                        params={"temperature": 0.8})) for i in range(3)])
        t.cancel()
        return ticks if time.perf_counter() - start > 0.01 else 10**6

    assert asyncio.run(go()) > 5


def test_bad_model_paths_and_missing_vllm_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TransformersBackend(model=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="needs llm.model"):
        TransformersBackend()
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'synthagent\[vllm\]'"):
            VLLMBackend(model="x")
    else:  # pragma: no cover - only where vllm installs (CUDA machines)
        with pytest.raises(ConfigError, match="needs llm.model"):
            VLLMBackend()


def test_tool_call_ids_differ_between_turns() -> None:
    """A repeated ``call_0`` in every turn made the scorer pair later calls with earlier results."""
    from synthagent.core.models import Message
    from synthagent.core.protocols import ChatRequest
    from synthagent.core.toolcalls import parse_assistant
    from synthagent.plugins.backends.local import _call_prefix

    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    first = ChatRequest(messages=(Message("user", "hi"),))
    later = ChatRequest(messages=(Message("user", "hi"), Message("assistant", "a"), Message("user", "b"),
                                  Message("assistant", "c")))
    ids = {parse_assistant(text, id_prefix=_call_prefix(r)).tool_calls[0].id for r in (first, later)}
    assert ids == {"call_t0_0", "call_t2_0"}
