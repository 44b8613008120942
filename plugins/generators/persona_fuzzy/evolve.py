"""Self-evolving generation (EigenData): revise persona-fuzzy's prompts from verified failures, keep a revision
only when a fresh validation batch shows it helps beyond noise.

One round: generate a training batch with the current prompts, collect the verified failures (the problems the
generator's checks sent back to the teacher, by prompt, and the funnel's drop reasons), propose a revision (by
default :func:`rule_proposal`: the most frequent problems become explicit instructions appended to the prompt
that caused them), then measure parent and candidate on the same fresh validation slots. The candidate is
accepted when its yield (kept tasks per slot) is higher by a one-sided two-proportion z-test at ``alpha``, and
its validity (kept tasks that pass :func:`~synthagent.core.taskcheck.check_task`) is not lower by the same test.

Every prompt version, accepted or not, goes into a :class:`PromptStore` (``OUT/prompts/``): one JSON file per
version named by its content hash, holding the three prompts, its parent, what changed, the failures that
motivated it and the measurements that decided it; ``HEAD`` names the accepted one. A run pins a version with
persona-fuzzy's ``prompt_version`` option (a version file, a store directory for its HEAD, or a hash looked up in
``prompt_store``); the version hash then appears in the run manifest's ``prompt_hashes``.

``synth evolve run|log|diff`` (registered through ``synth_register_commands``) drives it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from synthagent.core.hookspecs import hookimpl
from synthagent.plugins.generators.persona_fuzzy.promptstore import (
    PromptStore,
    base_prompts,
    load_version,
    prompt_pairs,
    version_hash,
)

__all__ = ["FailureRecorder", "rule_proposal", "measure", "one_sided_p", "evolve", "evolve_cmd"]

_REPAIR = "That answer cannot be used:"
_LEARNED = "\n\nRules learned from rejected answers (follow them exactly):\n"


# -- failures -------------------------------------------------------------------------------------------
def _category(problem: str) -> str:
    """A problem with its particulars (quoted values, numbers) blanked, so like problems count together."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", problem.strip())
    return re.sub(r"\d+", "N", text)[:200]


class FailureRecorder:
    """Wraps the teacher backend and records each problem the generator's checks sent back, by prompt."""

    def __init__(self, llm: Any, prompts: Mapping[str, str]) -> None:
        self.llm = llm
        self.name = getattr(llm, "name", "teacher")
        self._stable = {n: [line for line in text.splitlines() if line.strip() and "{{" not in line][:3]
                        for n, text in prompts.items()}
        #: (prompt name, problem category) -> count
        self.problems: Counter[tuple[str, str]] = Counter()

    def _stage(self, first: str) -> str:
        for name, lines in self._stable.items():
            if lines and all(line in first for line in lines):
                return name
        return "unknown"

    async def chat(self, request: Any) -> Any:
        """Record the problems of a repair request, then ask the wrapped backend."""
        messages = request.messages
        last = messages[-1].content or "" if messages else ""
        if last.startswith(_REPAIR):
            stage = self._stage(messages[0].content or "")
            for line in last.splitlines()[1:]:
                if line.startswith("- "):
                    self.problems[(stage, _category(line[2:]))] += 1
        return await self.llm.chat(request)


def rule_proposal(prompts: Mapping[str, str], problems: Counter[tuple[str, str]], top: int = 3) -> dict[str, Any]:
    """The rule-based revision: the ``top`` most frequent problems (not yet instructed) become explicit rules
    appended to the prompt that caused them. Returns ``{"prompts": ..., "changes": [...]}``."""
    out = dict(prompts)
    changes: list[dict[str, Any]] = []
    for (stage, problem), count in problems.most_common():
        if len(changes) >= top:
            break
        if stage not in out:
            continue
        rule = f"- Never give an answer with this problem (it was rejected {count} times): {problem}"
        if problem in out[stage]:
            continue
        if _LEARNED not in out[stage]:
            out[stage] = out[stage].rstrip("\n") + _LEARNED
        out[stage] = out[stage].rstrip("\n") + "\n" + rule + "\n"
        changes.append({"prompt": stage, "added": rule, "count": count})
    return {"prompts": out, "changes": changes}


# -- measurement -----------------------------------------------------------------------------------------
async def measure(llm: Any, prompts: Mapping[str, str], slots: Sequence[int], seed: int,
                  options: Mapping[str, Any] | None = None, recorder: bool = False) -> dict[str, Any]:
    """Generate one task per slot with ``prompts``; return yield, validity, drop reasons (and, with
    ``recorder``, the checks' problems by prompt, as ``_problems``)."""
    from synthagent.core.taskcheck import check_task
    from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator

    gen = PersonaFuzzyGenerator(**dict(options or {}))
    gen.prompts = prompt_pairs(prompts)
    backend = FailureRecorder(llm, prompts) if recorder else llm
    semaphore = asyncio.Semaphore(gen.concurrency)

    async def one(slot: int) -> Any:
        async with semaphore:
            return await gen.synthesize(backend, slot, seed)

    tasks = [t for t in await asyncio.gather(*(one(s) for s in slots)) if t is not None]
    valid = sum(1 for t in tasks if not check_task(t))
    drops = {k: v for k, v in gen.stats.items() if k != "kept"}
    result: dict[str, Any] = {"slots": len(slots), "kept": len(tasks), "valid": valid,
                              "yield": round(len(tasks) / len(slots), 4) if slots else 0.0,
                              "validity": round(valid / len(tasks), 4) if tasks else 0.0, "drops": drops}
    if recorder:
        result["_problems"] = backend.problems  # type: ignore[union-attr]
    return result


def one_sided_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """P-value of the one-sided two-proportion z-test that the second proportion exceeds the first."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if k2 / n2 <= k1 / n1 else 0.0
    z = (k2 / n2 - k1 / n1) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


Proposer = Callable[[Mapping[str, str], Counter[tuple[str, str]]], dict[str, Any]]


async def evolve(llm: Any, store: PromptStore, *, rounds: int = 3, batch: int = 24, validation: int = 24,
                 seed: int = 0, alpha: float = 0.05, start: Mapping[str, str] | None = None,
                 proposer: Proposer | None = None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the loop (module docstring); return the rounds' records and the accepted head. Training and
    validation batches use disjoint seeds (``seed + 1 + round`` and ``seed + 1001 + round``)."""
    propose = proposer or rule_proposal
    current = dict(start or base_prompts())
    head = store.put(current, parent=None, round=0, note="start", accepted=True)
    store.set_head(head)
    rounds_out = []
    for r in range(1, rounds + 1):
        train = await measure(llm, current, range(batch), seed + r, options, recorder=True)
        problems: Counter[tuple[str, str]] = train.pop("_problems")
        proposal = propose(current, problems)
        record: dict[str, Any] = {"round": r, "parent": head, "train": train,
                                  "failures": [{"prompt": s, "problem": p, "count": c}
                                               for (s, p), c in problems.most_common(10)],
                                  "changes": proposal.get("changes", [])}
        candidate = dict(proposal["prompts"])
        if version_hash(candidate) == head:
            record.update(decision="no revision proposed", accepted=False)
            rounds_out.append(record)
            continue
        val_slots = range(validation)
        before = await measure(llm, current, val_slots, seed + 1000 + r, options)
        after = await measure(llm, candidate, val_slots, seed + 1000 + r, options)
        p_yield = one_sided_p(before["kept"], before["slots"], after["kept"], after["slots"])
        p_worse_validity = one_sided_p(after["valid"], max(after["kept"], 1), before["valid"], max(before["kept"], 1))
        accepted = p_yield < alpha and p_worse_validity >= alpha
        record.update(validation={"parent": before, "candidate": after, "p_yield_better": round(p_yield, 5),
                                  "p_validity_worse": round(p_worse_validity, 5), "alpha": alpha},
                      accepted=accepted)
        digest = store.put(candidate, parent=head, round=r, changes=record["changes"], failures=record["failures"],
                           measurements=record["validation"], accepted=accepted)
        record["candidate"] = digest
        record["decision"] = "accepted" if accepted else "rejected"
        if accepted:
            head, current = digest, candidate
            store.set_head(head)
        rounds_out.append(record)
    return {"head": head, "rounds": rounds_out}


# -- CLI ----------------------------------------------------------------------------------------------------
@click.group("evolve")
def evolve_cmd() -> None:
    """Self-evolving generation: revise persona-fuzzy's prompts from verified failures (EigenData)."""


def _backend(backend: str, sets: Sequence[str]) -> Any:
    from synthagent.core.config import parse_set
    from synthagent.core.registry import load_plugins

    options: dict[str, Any] = {}
    for item in sets:
        key, value = parse_set(item)
        options[".".join(key)] = value
    return load_plugins().registry("llm").get(backend).create(options)


@evolve_cmd.command("run")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (the prompt store goes in OUT/prompts, the report in OUT/evolve.json).")
@click.option("--backend", default="openai", show_default=True, help="The teacher's LLM backend.")
@click.option("--backend-set", "backend_sets", multiple=True, metavar="KEY=VALUE",
              help="An option of the backend (base_url=..., model=...).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=24, show_default=True, help="Slots per training batch.")
@click.option("--validation", type=click.IntRange(1), default=24, show_default=True, help="Slots per validation batch.")
@click.option("--holdout", type=click.IntRange(0), default=0, show_default=True,
              help="Also measure start and final prompts on this many slots the loop never saw.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", "start_ref", default="", help="Start from this prompt version (file, store dir or hash).")
@click.option("--set", "gen_sets", multiple=True, metavar="KEY=VALUE", help="A persona-fuzzy option.")
def evolve_run(out: Path, backend: str, backend_sets: Sequence[str], rounds: int, batch: int, validation: int,
               holdout: int, alpha: float, seed: int, start_ref: str, gen_sets: Sequence[str]) -> None:
    """Run evolution rounds and print what each decided."""
    from synthagent.core.cli import guard

    guard(_evolve_run)(out, backend, backend_sets, rounds, batch, validation, holdout, alpha, seed, start_ref,
                       gen_sets)


def _evolve_run(out: Path, backend: str, backend_sets: Sequence[str], rounds: int, batch: int, validation: int,
                holdout: int, alpha: float, seed: int, start_ref: str, gen_sets: Sequence[str]) -> None:
    from synthagent.core.config import parse_set

    options: dict[str, Any] = {}
    for item in gen_sets:
        key, value = parse_set(item)
        options[".".join(key)] = value
    store = PromptStore(out / "prompts")
    start = load_version(start_ref, str(store.root))["prompts"] if start_ref else None
    llm = _backend(backend, backend_sets)
    report = asyncio.run(evolve(llm, store, rounds=rounds, batch=batch, validation=validation, seed=seed,
                                alpha=alpha, start=start, options=options))
    if holdout:
        first = store.versions()[0]["prompts"] if not start else start
        final = store.get(report["head"])["prompts"]
        hseed = seed + 100_000
        report["holdout"] = {"start": asyncio.run(measure(llm, first, range(holdout), hseed, options)),
                             "final": asyncio.run(measure(llm, final, range(holdout), hseed, options))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "evolve.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    for r in report["rounds"]:
        v = r.get("validation", {})
        line = f"round {r['round']}: {r['decision']}"
        if v:
            line += (f" (yield {v['parent']['yield']} -> {v['candidate']['yield']}, p={v['p_yield_better']}; "
                     f"validity {v['parent']['validity']} -> {v['candidate']['validity']})")
        click.echo(line)
    if "holdout" in report:
        h = report["holdout"]
        click.echo(f"holdout ({holdout} slots): yield {h['start']['yield']} -> {h['final']['yield']}, "
                   f"validity {h['start']['validity']} -> {h['final']['validity']}")
    click.echo(f"head: {report['head']} (pin it: --set plugins.persona-fuzzy.prompt_version={out / 'prompts'})")


@evolve_cmd.command("log")
@click.argument("store", type=click.Path(path_type=Path))
def evolve_log(store: Path) -> None:
    """List the prompt versions of STORE (an OUT/prompts directory)."""
    s = PromptStore(store)
    if not store.is_dir():
        click.echo(f"Error: {str(store)!r} is not a prompt store directory", err=True)
        raise SystemExit(2)
    head = s.head()
    for v in s.versions():
        mark = "*" if v["hash"] == head else " "
        m = v.get("measurements") or {}
        extra = f" yield {m['parent']['yield']} -> {m['candidate']['yield']}" if m else ""
        click.echo(f"{mark} {v['hash']} parent={v.get('parent')} round={v.get('round')} "
                   f"accepted={v.get('accepted')}{extra}")


@evolve_cmd.command("diff")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("a")
@click.argument("b")
def evolve_diff(store: Path, a: str, b: str) -> None:
    """Show the diff between prompt versions A and B of STORE."""
    from synthagent.core.cli import guard

    guard(lambda: click.echo(PromptStore(store).diff(a, b), nl=False))()


@hookimpl
def synth_register_commands(register: Any) -> None:
    """Register ``synth evolve``."""
    register("evolve", "synthagent.plugins.generators.persona_fuzzy.evolve:evolve_cmd",
             description="self-evolving generation: revise persona-fuzzy's prompts from verified failures")
