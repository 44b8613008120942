"""Registers the ``hello-cards`` task generator: order a greeting card for someone (a database task)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import (
    Column, DatabaseState, Effect, Fact, Persona, Provenance, StateChange, Table, Task, ToolSpec, WorkflowStep,
    stable_id, state_digest,
)
from synthagent.core.protocols import GenerationContext

CARDS = [{"card_id": f"K{i:04d}", "motif": m, "price": p}
         for i, (m, p) in enumerate([("birthday", 3.5), ("wedding", 4.0), ("thanks", 2.5), ("newborn", 3.0)], 1)]
STATE = DatabaseState(
    tables=[Table("cards", "card_id", [Column("card_id", "TEXT"), Column("motif", "TEXT"), Column("price", "REAL")]),
            Table("orders", "order_id", [Column("order_id", "TEXT"), Column("card_id", "TEXT"),
                                         Column("recipient", "TEXT")])],
    rows={"cards": CARDS, "orders": []},
)
TOOLS = (
    ToolSpec("find_card", "Find the card with a motif.",
             {"type": "object", "properties": {"motif": {"type": "string"}}, "required": ["motif"]},
             effect=Effect(kind="read", table="cards", where={"motif": "motif"})),
    ToolSpec("order_card", "Order a card for a recipient.",
             {"type": "object", "properties": {"card_id": {"type": "string"}, "recipient": {"type": "string"}},
              "required": ["card_id", "recipient"]},
             effect=Effect(kind="insert", table="orders", values={"card_id": "card_id", "recipient": "recipient"},
                           key="order_id", key_prefix="R")),
)
NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]


class HelloCards:
    """Tasks: order a card with a motif for a recipient whose name the user keeps to themselves."""

    def __init__(self, shop: str = "Hello Cards") -> None:
        self.shop = shop

    async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
        rng = random.Random(ctx.seed)
        for i in range(ctx.count):
            card = rng.choice(CARDS)
            recipient = f"{rng.choice(NAMES)} {i}"
            rows = {"cards": CARDS, "orders": [{"order_id": "R0001", "card_id": card["card_id"], "recipient": recipient}]}
            gold = StateChange(state_digest(rows, {"cards": "card_id", "orders": "order_id"}),
                               {"orders": {"R0001": rows["orders"][0]}})
            fact = Fact("recipient", recipient, "who the card is for", ("recipient", "who"),
                        f"It's for {recipient}.")
            yield Task(
                id=stable_id("task", "hello-cards", ctx.seed, i),
                domain="cards", persona=Persona(f"hello:{i}", "a customer"),
                system_prompt=f"You sell greeting cards at {self.shop}.",
                tools=TOOLS,
                instruction=f"I'd like to order a {card['motif']} card.",
                full_instruction=f"I'd like to order a {card['motif']} card for {recipient}.",
                user_context=(fact,), visible_facts=(),
                workflow=(
                    WorkflowStep(0, "Find the card", "find_card", {"motif": card["motif"]}, {"motif": "literal"}),
                    WorkflowStep(1, "Order it", "order_card", {"card_id": card["card_id"], "recipient": recipient},
                                 {"card_id": "step:0", "recipient": "fact:recipient"}, writes=True),
                ),
                initial_state=STATE, gold_state=gold,
                provenance=Provenance(generator="hello-cards", seed=ctx.seed, slot=str(i)),
            )


@hookimpl
def synth_register_task_generators(register: Any) -> None:
    register("hello-cards", HelloCards, description="greeting-card orders (example third-party plugin)")
