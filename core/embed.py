"""Embedding synthagent's simulators in an agent you already have (LangChain / LangGraph).

* :func:`simulated_tools` turns a task's tools, answered by any tool session (real SQLite or the LLM mock
  with its mapping store), into LangChain ``StructuredTool`` objects;
* :func:`user_node` is a LangGraph node that plays the simulated user, and :func:`until_user_stops` the
  router that ends the conversation when the user is done;
* :class:`SynthChatModel` is a LangChain chat model backed by any synthagent LLM backend (so the offline
  oracle, a local model or an OpenAI-compatible server can drive a prebuilt agent).

Example (the full program is ``sdk_examples/langgraph_embedding.py``)::

    agent = create_agent(SynthChatModel(backend, task=task), simulated_tools(task, tool_session))
    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("user", user_node(user_session))
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "user")
    graph.add_conditional_edges("user", until_user_stops)
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END

from synthagent.core.models import Message, Task, ToolCall, ToolSpec
from synthagent.core.protocols import ChatRequest, ToolSession, UserSession

__all__ = ["SynthChatModel", "simulated_tools", "user_node", "until_user_stops", "from_langchain", "to_langchain",
           "USER_STOP_KEY"]

#: ``additional_kwargs`` key set on the simulated user's final message.
USER_STOP_KEY = "synthagent_user_stop"


def from_langchain(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """LangChain messages as synthagent :class:`Message` records."""
    out: list[Message] = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else json.dumps(m.content)
        if isinstance(m, SystemMessage):
            out.append(Message("system", content))
        elif isinstance(m, HumanMessage):
            out.append(Message("user", content))
        elif isinstance(m, AIMessage):
            calls = tuple(ToolCall(c.get("id") or f"call_{i}", c["name"], dict(c.get("args") or {}))
                          for i, c in enumerate(m.tool_calls))
            out.append(Message("assistant", content or None, calls))
        elif isinstance(m, ToolMessage):
            out.append(Message("tool", content, tool_call_id=m.tool_call_id, name=m.name))
    return tuple(out)


def to_langchain(message: Message) -> BaseMessage:
    """A synthagent message as a LangChain message (tool-call arguments stay dicts)."""
    if message.role == "assistant":
        return AIMessage(content=message.content or "",
                         tool_calls=[{"id": c.id, "name": c.name, "args": c.arguments, "type": "tool_call"}
                                     for c in message.tool_calls])
    if message.role == "tool":
        return ToolMessage(content=message.content or "", tool_call_id=message.tool_call_id or "")
    if message.role == "system":
        return SystemMessage(content=message.content or "")
    return HumanMessage(content=message.content or "")


class SynthChatModel(BaseChatModel):
    """A LangChain chat model backed by a synthagent :class:`LLMBackend`.

    :param backend: the backend (``oracle``, ``openai``, ``transformers``, ...).
    :param task: privileged context for teacher backends such as the oracle (ignored by real models).
    """

    backend: Any
    task: Any = None
    tools: list[Any] = []

    @property
    def _llm_type(self) -> str:
        return "synthagent"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> SynthChatModel:  # type: ignore[override]
        """A copy of this model that offers ``tools``."""
        specs = []
        for tool in tools:
            fn = convert_to_openai_tool(tool)["function"]
            specs.append(ToolSpec(fn["name"], fn.get("description", ""), fn.get("parameters", {})))
        return SynthChatModel(backend=self.backend, task=self.task, tools=specs)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        request = ChatRequest(messages=from_langchain(messages), tools=tuple(self.tools), task=self.task)
        response = await self.backend.chat(request)
        return ChatResult(generations=[ChatGeneration(message=to_langchain(response.message))])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = asyncio.run(self._agenerate(messages))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        result: ChatResult = box["result"]
        return result


def simulated_tools(task: Task, session: ToolSession) -> list[BaseTool]:
    """The task's tools as LangChain tools answered by ``session`` (errors come back as observations)."""
    tools: list[BaseTool] = []
    counter = iter(range(10**9))

    for spec in task.tools:
        async def call(_spec: ToolSpec = spec, **arguments: Any) -> str:
            result = await session.call(ToolCall(f"lc_{next(counter)}", _spec.name, arguments))
            return result.content if isinstance(result.content, str) else json.dumps(result.content, sort_keys=True)

        tools.append(StructuredTool.from_function(coroutine=call, name=spec.name, description=spec.description,
                                                  args_schema=spec.parameters or {"type": "object", "properties": {}}))
    return tools


def user_node(session: UserSession) -> Any:
    """A LangGraph node (for a ``MessagesState`` graph) where the simulated user answers the agent."""

    async def node(state: Any) -> dict[str, Any]:
        messages = state["messages"] if isinstance(state, dict) else state.messages
        turn = await session.respond(from_langchain(messages))
        return {"messages": [HumanMessage(content=turn.message.content or "",
                                          additional_kwargs={USER_STOP_KEY: turn.stop})]}

    return node


def until_user_stops(state: Any, agent: str = "agent") -> str:
    """Router after the user node: back to ``agent``, or END once the user said it is done."""
    messages = state["messages"] if isinstance(state, dict) else state.messages
    return END if messages and messages[-1].additional_kwargs.get(USER_STOP_KEY) else agent
