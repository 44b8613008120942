"""The ``offline-domains`` task generator: tasks from the built-in domain pack, no LLM needed.

Each domain is a real SQLite database with seeded rows and declarative read/write tools
(``docs/domain-packs.md``). The generator samples a scenario and an anchor row, hides 1-3 facts in the user
context, runs the gold tool path on the initial database and records the gold final state.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Task
from synthagent.core.protocols import GenerationContext
from synthagent.plugins.generators.offline_domains.pack import Domain, Rejected, anchor_rows, instantiate, load_pack

__all__ = ["OfflineDomainsGenerator"]


class OfflineDomainsGenerator:
    """Samples tasks from a domain pack, balanced across domains, deterministically for a seed.

    Options (``[plugins.offline-domains]``):

    :param domains: domain names to use (default: all in the pack).
    :param domains_dir: a folder of domain JSON files (default: the built-in pack).
    :param min_hidden: fewest facts to hide per task (default 1).
    :param max_hidden: most facts to hide per task (default 3).
    :param max_tools: offer at most this many tools per task: the gold tools plus random others (0 = every
        domain tool); either way in an order shuffled by the task seed, so the tool list never spells out the plan.
    """

    name = "offline-domains"

    def __init__(
        self,
        domains: Sequence[str] = (),
        domains_dir: str = "",
        min_hidden: int = 1,
        max_hidden: int = 3,
        max_tools: int = 0,
    ) -> None:
        if not 1 <= int(min_hidden) <= int(max_hidden):
            raise ValueError("need 1 <= min_hidden <= max_hidden")
        self.domain_names = list(domains)
        self.domains_dir = domains_dir
        self.min_hidden = int(min_hidden)
        self.max_hidden = int(max_hidden)
        self.max_tools = int(max_tools)
        # Loaded and validated now, so a bad pack fails before a run directory is created.
        self.domains: list[Domain] = load_pack(self.domains_dir or None, self.domain_names)
        #: Rejected samples by reason (reported in the run summary).
        self.stats: Counter[str] = Counter()

    def sample(self, count: int, seed: int) -> list[Task]:
        """Return up to ``count`` distinct tasks for ``seed`` (fewer only if the pack runs out)."""
        return list(self.iter_tasks(count, seed))

    def iter_tasks(self, count: int, seed: int, done_slots: frozenset[str] = frozenset()) -> Iterator[Task]:
        """Yield up to ``count`` distinct tasks for ``seed``, one at a time (a huge ``count`` starts at once).

        Slots in ``done_slots`` (written by an interrupted run) are replayed, since the draws of later slots
        depend on them, but neither yielded nor counted again in :attr:`stats`."""
        rng = random.Random(seed)
        domains = self.domains
        seen: set[str] = set()
        made = 0
        budget = count * 50
        index = 0
        while made < count and budget > 0:
            budget -= 1
            replay = str(made) in done_slots
            stats = Counter() if replay else self.stats  # a done slot's drops were counted by the earlier run
            domain = domains[index % len(domains)]
            scenario = rng.choice(domain.scenarios)
            anchors = anchor_rows(domain, scenario)
            if not anchors:
                stats["no_anchor_rows"] += 1
                index += 1
                continue
            anchor = rng.choice(anchors)
            most = min(self.max_hidden, len(scenario.hideable))
            k = rng.randint(min(self.min_hidden, most), most)
            hidden = sorted(rng.sample(list(scenario.hideable), k))
            try:
                task = instantiate(
                    domain, scenario, anchor, hidden=hidden, seed=seed, generator=self.name,
                    slot=str(made), max_tools=self.max_tools,
                )
            except Rejected as exc:
                stats[exc.reason] += 1
                continue
            if task.id in seen:
                stats["duplicate"] += 1
                continue
            seen.add(task.id)
            made += 1
            index += 1
            if not replay:
                yield task
        if made < count:
            self.stats["pack_exhausted"] += count - made

    async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
        """Yield ``ctx.count`` tasks as they are made, skipping ``ctx.done_slots`` (see :meth:`iter_tasks`)."""
        for task in self.iter_tasks(ctx.count, ctx.seed, ctx.done_slots):
            yield task
            await asyncio.sleep(0)  # a long generation never starves the event loop


@hookimpl
def synth_register_task_generators(register: Any) -> None:
    """Register the ``offline-domains`` generator."""
    register("offline-domains", OfflineDomainsGenerator,
             description="tasks sampled from the built-in SQLite domain pack (offline, no LLM)")


def offline_benchmark() -> Any:
    """The ``offline-domains`` benchmark: 80 tasks of the built-in pack drawn with seed 13013, rubrics from
    the deterministic ``workflow`` builder, success = final state and answer."""
    from synthagent.core.protocols import Benchmark

    return Benchmark(overrides={"generator": "offline-domains", "user": "rule", "tools": "sqlite", "rubric": "workflow",
                                "scorer": "rubric", "tasks": 80, "seed": 13013},
                     description="80 tasks of the built-in SQLite domain pack (seed 13013)", success="state")


@hookimpl
def synth_register_benchmarks(register: Any) -> None:
    """Register the ``offline-domains`` benchmark for ``synth eval --bench``."""
    register("offline-domains", offline_benchmark,
             description="80 tasks of the built-in SQLite domain pack (seed 13013), state + answer success")
