"""The ``llm`` user simulator: a model plays the user who holds the hidden context.

It reveals a hidden fact only when asked and ends with an explicit stop signal when its goal is met. Guards
against the field's known failures, each counted per run in :attr:`LLMUserSimulator.stats`:

* ``empty_turn``: an empty reply is re-asked (then replaced by a neutral prompt to continue);
* ``premature_stop``: a stop before the agent has acted or answered is refused (tau2-bench issue #182);
* ``tool_call_from_user``: tool calls or tool-call markup from the user are stripped and re-asked;
* ``leaked_hidden_value``: a hidden value the agent has not asked for (no question of the agent's names the
  fact) is re-asked with a reminder; if every re-ask leaks, the turn is replaced by a neutral prompt.
* ``echo``: a reply that repeats the agent's last message word for word (or nearly: see :func:`echoes`) is
  re-asked, like an empty one.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Message, Task
from synthagent.core.protocols import ChatRequest, RunContext, UserTurn
from synthagent.core.teacher import load_prompt, render
from synthagent.plugins.common.evidence import asked_facts, mentions_value

__all__ = ["LLMUserSimulator", "LLMUserSession", "STOP", "echoes"]

STOP = "###STOP###"
_PKG = "synthagent.plugins.simulators.users.llm"
_MARKUP = re.compile(r"<tool_call>.*?(</tool_call>|$)|```.*?(```|$)", re.S)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def echoes(text: str, messages: Sequence[Message], threshold: float = 0.9) -> bool:
    """Whether the user's ``text`` repeats the agent's last text message: the same words, or a word
    sequence at least ``threshold`` similar (difflib ratio) to it; short replies (under four words) are
    never echoes ("Yes, please." may answer "Yes, please?")."""
    agent = next((m.content for m in reversed(messages) if m.role == "assistant" and m.content), None)
    mine, theirs = _words(text), _words(agent or "")
    if len(mine) < 4 or not theirs:
        return False
    return mine == theirs or difflib.SequenceMatcher(None, mine, theirs, autojunk=False).ratio() >= threshold


class LLMUserSimulator:
    """A model-played user. Options: ``retries`` (re-asks per guard), ``temperature``; ``backend`` and
    ``backend_options``: an LLM backend of its own (e.g. ``transformers`` with ``{model = DIR}``, a user model
    trained by ``synth train --algorithm user-sft``) instead of the run's teacher."""

    name = "llm"

    def __init__(self, retries: int = 2, temperature: float = 0.0, backend: str = "",
                 backend_options: dict[str, Any] | None = None, leak_guard: bool = True) -> None:
        self.retries = int(retries)
        #: re-ask a reply that reveals a hidden value the agent has not asked for (off: measure the raw model)
        self.leak_guard = bool(leak_guard)
        self.temperature = float(temperature)
        self.prompt, self.prompt_hash = load_prompt(_PKG, "user_sim.md")
        #: Guard firings: empty_turn, premature_stop, tool_call_from_user, leaked_hidden_value, echo; turns, stops;
        #: model_turns (turns whose text the model wrote) and fallback_turns (every try failed a guard).
        self.stats: Counter[str] = Counter()
        self.llm: Any = None
        self.backend = str(backend)
        self.backend_options = dict(backend_options or {})

    def setup(self, ctx: RunContext) -> None:
        """Use the run's teacher backend, or build the ``backend`` option's own."""
        if self.backend:
            if ctx.backend is None:
                raise ConfigError(f"the llm user simulator's backend = {self.backend!r} is built by the Runtime: "
                                  "set it up with a RunContext the Runtime made (Runtime.setup)")
            self.llm = ctx.backend(self.backend, self.backend_options, owner="user")
        else:
            self.llm = ctx.llm

    def prompt_hashes(self) -> dict[str, str]:
        """Hash of the user prompt (recorded in the manifest)."""
        return {"llm_user/user_sim.md": self.prompt_hash}

    async def start(self, task: Task, seed: int) -> LLMUserSession:
        """Begin an episode."""
        if self.llm is None:
            raise ConfigError("the llm user simulator needs setup(RunContext) with an LLM backend")
        return LLMUserSession(self, task, seed)


class LLMUserSession:
    """One episode of the model-played user."""

    def __init__(self, sim: LLMUserSimulator, task: Task, seed: int) -> None:
        self.sim = sim
        self.task = task
        self.seed = seed
        facts = "\n".join(f"- {f.description}: {f.value}" for f in task.user_context) or "- (none)"
        self.system = render(sim.prompt, persona=task.persona.description, full_instruction=task.full_instruction,
                             instruction=task.instruction, facts=facts, stop=STOP)

    def _view(self, messages: Sequence[Message]) -> list[Message]:
        """The conversation from the user's side: the agent's text is 'user', the user's own is 'assistant'."""
        out = [Message("system", self.system)]
        for m in messages:
            if m.role == "user":
                out.append(Message("assistant", m.content or ""))
            elif m.role == "assistant" and m.content:
                out.append(Message("user", m.content))
        return out

    def _leaked(self, messages: Sequence[Message], text: str) -> str | None:
        """The description of a hidden fact whose value ``text`` reveals although no question of the agent
        has asked for it (the leak guard), or None."""
        questions = [m.content for m in messages if m.role == "assistant" and m.content and "?" in m.content]
        for fact in self.task.user_context:
            if str(fact.value).strip() and mentions_value(text, fact.value) \
                    and not any(asked_facts(q, [fact]) for q in questions):
                return fact.description
        return None

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """The user's next message, with the guards applied."""
        sim = self.sim
        sim.stats["turns"] += 1
        # The agent has acted once it called a tool or said something that is not a question.
        acted = any(m.role == "assistant" and (m.tool_calls or (m.content and "?" not in m.content))
                    for m in messages)
        view = self._view(messages)
        for attempt in range(sim.retries + 1):
            response = await sim.llm.chat(ChatRequest(messages=tuple(view), params={"temperature": sim.temperature},
                                                      seed=self.seed + attempt))
            msg = response.message
            text = msg.content or ""
            if msg.tool_calls or "<tool_call>" in text:
                sim.stats["tool_call_from_user"] += 1
                text = _MARKUP.sub("", text).strip()
                if not text:
                    view = view + [Message("user", "(Please answer in plain words as the customer, no tools.)")]
                    continue
            stop = STOP in text
            text = text.replace(STOP, "").strip()
            if stop and not acted:
                sim.stats["premature_stop"] += 1
                stop = False
                if not text:
                    text = "Could you help me with that, please?"
            if not text and not stop:
                sim.stats["empty_turn"] += 1
                view = view + [Message("user", "(Your reply was empty. Please answer as the customer.)")]
                continue
            if text and echoes(text, messages):
                sim.stats["echo"] += 1
                view = view + [Message("assistant", text),
                               Message("user", "(You repeated the agent's words. Answer as the customer, in your own words.)")]
                continue
            leaked = self._leaked(messages, text) if sim.leak_guard else None
            if leaked:
                sim.stats["leaked_hidden_value"] += 1
                view = view + [Message("assistant", text), Message("user", f"(You revealed {leaked} before the agent "
                                                                   "asked for it. Reply again without it.)")]
                continue
            if stop:
                sim.stats["stops"] += 1
            sim.stats["model_turns"] += 1
            return UserTurn(Message("user", text or "Thanks, that's all."), stop=stop)
        sim.stats["fallback_turns"] += 1
        return UserTurn(Message("user", "Could you continue, please?"))


@hookimpl
def synth_register_user_simulators(register: Any) -> None:
    """Register the ``llm`` user simulator."""
    register("llm", LLMUserSimulator, description="a model plays the user; reveals hidden facts only when asked")
