"""The ``graph-domains`` task generator: environment scaling (the AgentScaler recipe).

API pool -> tool dependency graph -> Louvain communities -> one SQLite domain per community -> verifiable tasks
from dependency-respecting walks, each with its gold call sequence and gold final state. Every tool is a
declarative read or write on its domain's database, executed by the ``sqlite`` tool simulator, so any
trajectory can be verified against state. See ``docs/environment-scaling.md``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from synthagent.core.capabilities import has_capability
from synthagent.core.errors import ConfigError
from synthagent.core.hookspecs import hookimpl
import attrs

from synthagent.core.models import Message, Task
from synthagent.core.protocols import GenerationContext, RunContext
from synthagent.core.teacher import TeacherUnavailable, ask_json, load_prompt, render
from synthagent.core.toolsource import load_tools, toolset_name
from synthagent.plugins.generators.graph_domains.corpus import corpus_records
from synthagent.plugins.generators.graph_domains.domains import GraphDomain, build_domain
from synthagent.plugins.generators.graph_domains.graph import ToolGraph, build_graph
from synthagent.plugins.generators.graph_domains.pool import PoolSpec, check_effect, load_pool, pool_from_records
from synthagent.plugins.generators.graph_domains.tasks import WalkRejected, sample_task

__all__ = ["GraphDomainsGenerator", "discover_domains"]


def _name_hash(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def discover_domains(specs: Sequence[PoolSpec], *, embedding: str = "auto", threshold: float | None = None,
                     hub_fraction: float = 0.05, resolution: float = 1.0, min_tools: int = 4, rows: int = 14,
                     seed: int = 0, one_domain: str = "") -> tuple[ToolGraph, list[GraphDomain]]:
    """Build the graph, split it, and turn every community of at least ``min_tools`` tools into a domain.

    :param one_domain: a name: every spec forms that one domain (a team's own toolset, ``tools_from``), the
        graph and its communities are still built for the report and the picture."""
    graph = build_graph(specs, method=embedding, threshold=threshold, hub_fraction=hub_fraction,
                        resolution=resolution, seed=seed)
    if one_domain:
        return graph, [build_domain(one_domain, list(specs), rows=rows, seed=seed)]
    by_name = {s.name: s for s in specs}
    domains: list[GraphDomain] = []
    names: Counter[str] = Counter()
    for community in graph.communities:
        if len(community) < min_tools:
            continue
        members = [by_name[n] for n in community]
        top = Counter(s.area for s in members).most_common(1)[0][0]
        names[top] += 1
        name = top if names[top] == 1 else f"{top}_{names[top]}"
        domains.append(build_domain(name, members, rows=rows, seed=seed))
    return graph, domains


class GraphDomainsGenerator:
    """Tasks from discovered domains, balanced across them, deterministic for a seed.

    :param pool: an API pool: ``builtin`` (the default: 335 hand-written specs), ``bfcl`` (the ~3,200 function
        schemas of the installed ``bfcl-eval`` wheel, normalized by :mod:`.corpus`), or a file or folder.
    :param corpus: sources to import as a corpus instead (``"bfcl"``, BFCL-style JSONL, OpenAI schemas, OpenAPI 3),
        normalized like BFCL (:func:`~synthagent.plugins.generators.graph_domains.corpus.corpus_records`).
    :param max_apis: keep only this many specs (a deterministic subset by name hash; 0 = all), to scale down.
    :param embedding: ``auto`` (MiniLM when installed, else TF-IDF; TF-IDF for a corpus), ``minilm`` or ``tfidf``.
    :param threshold: slot similarity for an edge (default by embedding). :param hub_fraction: generic-slot cut.
    :param resolution: Louvain resolution. :param min_tools: smallest community kept as a domain.
    :param domains: only these domain names. :param rows: seeded rows per table.
    :param min_steps: / :param max_steps: walk length. :param max_hidden: most hidden facts.
    :param max_tools: tools offered per task (0 = every tool of the domain).
    :param annotate: ``rules`` (offline) or ``teacher``: specs without ``x-effect`` are annotated by the run's
        teacher (validated like pool annotations; the rules' annotation is kept when the teacher's is invalid).
    :param tools_from: your own toolset instead of a pool (OpenAI tool schemas as JSON/JSONL, or an OpenAPI 3
        document; ``synth run --tools-from FILE``, :func:`synthagent.core.toolsource.load_tools`).
    :param split: with ``tools_from``, split the toolset into domains by the tool graph (default: the whole
        toolset is one domain, named after the file).
    """

    name = "graph-domains"
    #: ``synth run --tools-from`` uses this generator when none is named: it needs no teacher model.
    offline_toolsets = True

    def __init__(self, pool: str = "", embedding: str = "auto", threshold: float = 0.0, hub_fraction: float = 0.05,
                 resolution: float = 1.0, min_tools: int = 4, domains: Sequence[str] = (), rows: int = 14,
                 min_steps: int = 2, max_steps: int = 6, max_hidden: int = 3, max_tools: int = 0,
                 annotate: str = "rules", tools_from: str = "", split: bool = False, corpus: Sequence[str] = (),
                 max_apis: int = 0) -> None:
        if annotate not in ("rules", "teacher"):
            raise ConfigError(f"graph-domains: annotate must be 'rules' or 'teacher', got {annotate!r}")
        self.annotate = annotate
        self.prompt, self.prompt_hash = load_prompt("synthagent.plugins.generators.graph_domains", "annotate.md")
        if embedding not in ("auto", "minilm", "tfidf"):
            raise ConfigError(f"graph-domains: embedding must be auto, minilm or tfidf, got {embedding!r}")
        if not 1 <= int(min_steps) <= int(max_steps):
            raise ConfigError("graph-domains: need 1 <= min_steps <= max_steps")
        if tools_from and (pool or corpus):
            raise ConfigError("graph-domains: give either pool (an API pool to discover domains in) or tools_from "
                              "(your own toolset), not both")
        self.tools_from = str(tools_from)
        self.one_domain = ""
        if tools_from:
            tools = load_tools(tools_from)
            area = toolset_name(tools_from)
            self.specs, self.pool_counts = pool_from_records(
                (area, f"{area}: tool {i + 1}", t) for i, t in enumerate(tools))
            self.one_domain = "" if split else area
        elif pool == "bfcl" or corpus:
            if pool not in ("", "bfcl"):
                raise ConfigError("graph-domains: give either pool or corpus, not both")
            if embedding == "auto":  # MiniLM takes ~3.5 min cold on BFCL's 13,298 slots, TF-IDF 1 s
                embedding = "tfidf"
            records, imported = corpus_records(list(corpus) or ["bfcl"])
            self.specs, counts = pool_from_records(records, strict=False)
            self.pool_counts = {**{f"corpus_{k}": v for k, v in sorted(imported.items())}, **counts}
        else:
            self.specs, self.pool_counts = load_pool(None if pool in ("", "builtin") else pool)
        if max_apis and len(self.specs) > max_apis:
            chosen = set(sorted((s.name for s in self.specs), key=_name_hash)[:int(max_apis)])
            self.specs = [s for s in self.specs if s.name in chosen]
            self.pool_counts = {**self.pool_counts, "specs": len(self.specs), "left_out_by_max_apis":
                                self.pool_counts["specs"] - len(self.specs),
                                "annotated_by_rules": sum(s.annotated_by == "rules" for s in self.specs)}
        self.options: dict[str, Any] = {"embedding": embedding, "threshold": float(threshold) or None,
                        "hub_fraction": float(hub_fraction), "resolution": float(resolution),
                        "min_tools": int(min_tools), "rows": int(rows)}
        self.only = list(domains)
        self.walk: dict[str, Any] = {"min_steps": int(min_steps), "max_steps": int(max_steps), "max_hidden": int(max_hidden),
                     "max_tools": int(max_tools)}
        #: Rejected walks by reason, plus pool counts.
        self.stats: Counter[str] = Counter()
        self.graph: ToolGraph | None = None
        self.domains: list[GraphDomain] = []
        self.run_dir = ""

    def setup(self, ctx: RunContext) -> None:
        """Remember the run directory (the graph report is written there); check the teacher when asked for."""
        self.run_dir = ctx.run_dir
        if self.annotate == "teacher" and has_capability(ctx.llm, "plays_workflow"):
            raise ConfigError("graph-domains: annotate = 'teacher' needs a teacher model (llm.backend), not the oracle")

    def prompt_hashes(self) -> dict[str, str]:
        """Hash of the annotation prompt (recorded in the manifest)."""
        return {"graph_domains/annotate.md": self.prompt_hash}

    async def annotate_with_teacher(self, llm: Any) -> None:
        """Replace the offline rules' annotation of every unannotated spec by the teacher's, when it is valid."""
        if self.graph is not None:
            return
        specs = []
        for spec in self.specs:
            if spec.annotated_by != "rules":
                specs.append(spec)
                continue
            props = spec.parameters.get("properties", {}) or {}
            prompt = render(self.prompt, spec=json.dumps({"name": spec.name, "description": spec.description,
                                                          "parameters": spec.parameters}))
            try:
                value, _ = await ask_json(llm, [Message("user", prompt)], label="annotation", stats=self.stats,
                                          check=functools.partial(check_effect, props=props, where=spec.name),
                                          params={"temperature": 0})
            except TeacherUnavailable:
                value = None
            if value is None:
                self.stats["annotation_kept_rules"] += 1
                specs.append(spec)
            else:
                self.stats["annotated_by_teacher"] += 1
                specs.append(attrs.evolve(spec, effect=dict(value), annotated_by="teacher"))
        self.specs = specs

    def discover(self, seed: int) -> list[GraphDomain]:
        """Build (once per seed) the graph and the domains."""
        if self.graph is None:
            self.graph, domains = discover_domains(self.specs, seed=seed, one_domain=self.one_domain,
                                                   **self.options)
            if self.only:
                known = {d.name for d in domains}
                missing = sorted(set(self.only) - known)
                if missing:
                    raise ConfigError(f"graph-domains: unknown domain(s) {missing}; discovered: {sorted(known)}")
                domains = [d for d in domains if d.name in self.only]
            self.domains = domains
        return self.domains

    def draw(self, path: str | Path) -> Path:
        """The graph PNG with communities labelled by their domain names."""
        assert self.graph is not None
        names = {d.tools[0].name: d.name for d in self.domains}
        labels = {i: next((names[t] for t in c if t in names), f"({len(c)})") for i, c in enumerate(self.graph.communities)}
        kept = len(self.domains)
        return self.graph.draw(path, labels=labels, title=(
            f"{self.graph.graph.number_of_nodes()} tools -> {kept} domains (of {len(self.graph.communities)} "
            f"communities), modularity {self.graph.modularity:.3f}, {self.graph.method} embeddings"))

    def report(self) -> dict[str, Any]:
        """Modularity, domain sizes, areas and tools (written to ``graph.json`` in the run directory)."""
        assert self.graph is not None
        return {
            "tools": self.graph.graph.number_of_nodes(), "edges": self.graph.graph.number_of_edges(),
            "embedding": self.graph.method, "threshold": self.graph.threshold, "hubs_ignored": self.graph.hubs_ignored,
            "modularity": round(self.graph.modularity, 4), "communities": len(self.graph.communities),
            "pool": dict(self.pool_counts),
            "domains": [{"name": d.name, "tools": len(d.tools), "tables": len(d.state.tables), "areas": d.areas,
                         "tool_names": [t.name for t in d.tools]} for d in self.domains],
        }

    def sample(self, count: int, seed: int) -> list[Task]:
        """Up to ``count`` distinct tasks for ``seed``."""
        return list(self.iter_tasks(count, seed))

    def iter_tasks(self, count: int, seed: int, done_slots: frozenset[str] = frozenset()) -> Iterator[Task]:
        """Yield up to ``count`` distinct tasks for ``seed`` one at a time; slots in ``done_slots`` are
        replayed (later draws depend on them) but neither yielded nor counted again in :attr:`stats`."""
        domains = self.discover(seed)
        if not domains:
            sizes = sorted((len(c) for c in self.graph.communities), reverse=True) if self.graph else []
            raise ConfigError(
                f"graph-domains: no domain has min_tools = {self.options['min_tools']} tools: the tool graph of "
                f"{len(self.specs)} tools split into communities of {sizes}. Lower "
                "plugins.graph-domains.min_tools" + (", or keep your toolset one domain (split = false)"
                                                     if self.tools_from else ", or add specs to the pool"))
        rng = random.Random(seed)
        seen: set[str] = set()
        instructions: set[str] = set()  # two tasks a user would state alike are one task for training
        made = 0
        attempts = 0
        per_domain: Counter[str] = Counter()  # tasks made in each domain
        tried: Counter[str] = Counter()  # attempts in each domain
        cap = max(40, count * 40 // len(domains))  # a domain where walks keep failing is given up, not stalled on
        while made < count and attempts < count * 40:
            open_ = [d for d in domains if tried[d.name] < cap]
            if not open_:
                break
            # balanced: the domain with the fewest tasks so far (then the fewest attempts), in discovery order
            domain = min(open_, key=lambda d: (per_domain[d.name], tried[d.name]))
            tried[domain.name] += 1
            attempts += 1
            replay = str(made) in done_slots
            stats = Counter() if replay else self.stats
            try:
                task = sample_task(domain, rng, seed=seed, slot=str(made), **self.walk)
            except WalkRejected as exc:
                stats[f"walk_{exc.reason}"] += 1
                continue
            if task.id in seen:
                stats["duplicate"] += 1
                continue
            if task.instruction in instructions:
                stats["duplicate_instruction"] += 1
                continue
            seen.add(task.id)
            instructions.add(task.instruction)
            per_domain[domain.name] += 1
            made += 1
            if not replay:
                yield task
        if made < count:
            self.stats["exhausted"] += count - made

    async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
        """Write the graph report (``graph.json``, ``graph.png``) to the run directory, then yield tasks as they
        are made (skipping ``ctx.done_slots``)."""
        if self.annotate == "teacher" and ctx.llm is not None:
            await self.annotate_with_teacher(ctx.llm)
        self.discover(ctx.seed)
        if self.run_dir and Path(self.run_dir).is_dir() and self.graph is not None:
            (Path(self.run_dir) / "graph.json").write_text(json.dumps(self.report(), indent=2))
            self.draw(Path(self.run_dir) / "graph.png")
        for task in self.iter_tasks(ctx.count, ctx.seed, ctx.done_slots):
            yield task
            await asyncio.sleep(0)


@hookimpl
def synth_register_task_generators(register: Any) -> None:
    """Register the ``graph-domains`` generator."""
    register("graph-domains", GraphDomainsGenerator,
             description="API pool -> tool graph -> Louvain domains -> SQLite environments (AgentScaler)")


@hookimpl
def synth_register_commands(register: Any) -> None:
    """Register ``synth graph`` (imported only when it runs)."""
    register("graph", "synthagent.plugins.generators.graph_domains.cli:graph_cmd",
             description="the tool graph of an API pool and its Louvain domains (environment scaling)")
