"""The ``rule`` user simulator: answers only what it is asked, from the hidden context.

It reveals a hidden (or stated) fact when the agent's question asks for that fact and nothing else (one fact
per question, judged by what the question asks: :func:`~synthagent.plugins.common.evidence.question_asks`; a
question listing several facts, or one fact among other details, gets :data:`ONE_AT_A_TIME` and reveals
nothing, so a blanket "tell me everything" earns nothing), answers
a confirmation request with yes, and stops once the agent speaks without asking for anything. It never emits
tool calls and never sends an empty turn. No model; it words its replies with phrases from banks of paraphrases
(:data:`REVEAL_OPENINGS`, :data:`REVEAL_ENDINGS`, :data:`YES_PHRASES`, :data:`UNSURE_PHRASES`,
:data:`STOP_PHRASES`) picked by a stable hash of the task id, the episode seed and the turn: deterministic per seed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Message, Task
from synthagent.core.protocols import UserTurn
from synthagent.plugins.common.evidence import CONFIRM, asked_facts, asked_one_fact, question_asks

__all__ = ["RuleUser", "RuleUserSession", "asked_facts", "REVEAL_OPENINGS", "REVEAL_ENDINGS", "YES_PHRASES",
           "UNSURE_PHRASES", "STOP_PHRASES", "ONE_AT_A_TIME"]

_DONE = re.compile(r"\banything else\b", re.I)
STOP_TEXT = "Thank you, that's all I needed."

#: Said before a fact's statement when the user reveals it.
REVEAL_OPENINGS = ("", "", "Sure. ", "Of course. ", "Yes. ", "Sure thing: ", "Okay. ", "Right. ", "Happy to. ",
                   "No problem. ", "Ah, yes. ", "Let me see... ", "Good question. ", "Oh, sure. ")
#: Said after the revealed statements.
REVEAL_ENDINGS = ("", "", "", " Thanks.", " Hope that helps.", " Thanks for checking.", " Is that enough?",
                  " Let me know if you need more.")
#: Answers to a confirmation request.
YES_PHRASES = ("Yes, please go ahead.", "Yes, go ahead.", "Yes, that's fine, please do it.", "Go ahead, I'm sure.",
               "Yes, I'm sure.", "That's right, please continue.", "Yes please.", "Confirmed, go ahead.",
               "Yes, do it.", "Sure, proceed.", "Yes. I understand it's permanent.", "Please do, yes.")
#: Replies to a question the user cannot answer.
UNSURE_PHRASES = ("I'm not sure what you mean; I don't have any other details.",
                  "Sorry, I don't know that. I've told you what I have.",
                  "I don't have that information, I'm afraid.",
                  "Hmm, I can't help with that one. That's all I know.",
                  "Not sure, sorry. I don't have any more details.")
#: The reply to a question about several facts at once (nothing is revealed).
ONE_AT_A_TIME = ("One thing at a time, please: what do you need first?",
                 "That's a lot of questions at once. What do you need first?",
                 "Could you ask me one thing at a time?")
#: The user's last message (it ends the episode).
STOP_PHRASES = (STOP_TEXT, "Great, thanks for your help!", "Perfect, thank you.", "Thanks a lot, that's everything.",
                "Wonderful, that's all for today.", "Thanks! That covers it.", "Much appreciated, bye.",
                "Great, that's exactly what I needed.", "Thank you so much.", "All good, thanks!",
                "Excellent, thanks.", "That's it from me. Thank you!", "Brilliant, cheers.",
                "Thanks, have a nice day.")


def _pick(bank: Sequence[str], *key: object) -> str:
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return bank[int.from_bytes(digest[:8], "big") % len(bank)]


class RuleUserSession:
    """One episode of the rule-based user."""

    def __init__(self, task: Task, seed: int = 0) -> None:
        self.task = task
        self.seed = seed
        self.facts = tuple(task.user_context) + tuple(task.visible_facts)

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """Answer the agent's last message."""
        last = next((m for m in reversed(messages) if m.role == "assistant"), None)
        text = (last.content or "") if last else ""
        key = (self.task.id, self.seed, len(messages))
        is_question = "?" in text
        if is_question:
            wanted = asked_one_fact(text, self.facts)
            if wanted is not None:
                return UserTurn(Message("user", _pick(REVEAL_OPENINGS, *key, "open") + wanted.statement
                                        + _pick(REVEAL_ENDINGS, *key, "end")))
            if question_asks(text, self.facts).count > 1 and not CONFIRM.search(text):
                return UserTurn(Message("user", _pick(ONE_AT_A_TIME, *key)))
            if CONFIRM.search(text):
                return UserTurn(Message("user", _pick(YES_PHRASES, *key)))
            if not _DONE.search(text):
                return UserTurn(Message("user", _pick(UNSURE_PHRASES, *key)))
        return UserTurn(Message("user", _pick(STOP_PHRASES, *key)), stop=True)


class RuleUser:
    """Factory of :class:`RuleUserSession` (no options; the episode seed picks the wording)."""

    name = "rule"

    async def start(self, task: Task, seed: int) -> RuleUserSession:
        """Begin an episode."""
        return RuleUserSession(task, seed)


@hookimpl
def synth_register_user_simulators(register: Any) -> None:
    """Register the ``rule`` user simulator."""
    register("rule", RuleUser, description="answers only what it is asked, from the hidden context (offline)")
