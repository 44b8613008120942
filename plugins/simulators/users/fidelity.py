"""User fidelity: how faithfully a user simulator plays the user, measured with a scripted agent.

For every task the scripted agent (no model) opens with the task's instruction as the user's first message,
then asks for each hidden fact in turn (``Could you tell me your <keyword>?``), asks one question the hidden
context cannot answer (:data:`UNANSWERABLE`), and ends with a statement that the request is done. Each user
simulator is scored per task on the failures EigenData attributes to noisy users:

* ``unasked_reveal``: a hidden value appears in a user turn before the agent asked for it (per hidden fact);
* ``wrong_value``: the answer to a question about a hidden fact does not contain its value (per asked fact);
* ``invented_answer``: the answer to the unanswerable question does not say the user does not know (per task);
* ``premature_stop``: the user ended the dialogue before the agent's closing statement (per task);
* ``missing_stop``: the user did not end the dialogue after the closing statement (per task that got there);
* ``out_of_role``: a user turn that speaks as the agent (offers help, reports actions, tool-call markup or
  JSON) or is empty (per user turn).

Each is a rate with its 95% Wilson score interval. ``synth eval-user`` runs it (registered through the
``synth_register_commands`` hook as a lazy import string, so ``synth --help`` does not import this module).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from synthagent.core.errors import ConfigError, UsageError
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Fact, Message, Task, from_json_dict

__all__ = ["wilson", "evaluate_user", "fidelity_cmd", "UNANSWERABLE", "CLOSING", "METRICS", "question_for"]

#: The question no hidden context answers (no fact keyword in it).
UNANSWERABLE = "One more thing before I continue: what was the name of your first pet?"
#: The agent's closing statement (no question mark: a faithful user ends the dialogue here).
CLOSING = "All done: I have completed your request. Have a good day."
#: The measured failures, in report order.
METRICS = ("unasked_reveal", "wrong_value", "invented_answer", "premature_stop", "missing_stop", "out_of_role")

_UNKNOWN = re.compile(r"\b(don'?t know|do not know|not sure|no idea|don'?t have|do not have|can'?t (help|say|remember|"
                      r"recall)|cannot (help|say|remember|recall)|unsure|not something|no information|don'?t remember|"
                      r"not relevant|what do you mean|n/a|none)\b", re.I)
_AGENT_VOICE = re.compile(r"how (can|may) i (help|assist)|i (have|'ve) (updated|processed|completed|cancelled|created|"
                          r"booked)|as an ai|i'?ll (process|look that up|check that for you)|<tool_call>|\{\s*\"|"
                          r"is there anything else i can", re.I)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def question_for(fact: Fact) -> str:
    """The scripted agent's question for a hidden fact (its first keyword, which the rule user matches)."""
    keyword = fact.keywords[0] if fact.keywords else fact.description
    return f"To continue, could you tell me your {keyword}?"


def _has(text: str, value: Any) -> bool:
    norm = " ".join(str(value).lower().split())
    return bool(norm) and norm in " ".join(text.lower().split())


async def _episode(user: Any, task: Task, seed: int, counts: Counter[str]) -> list[dict[str, Any]]:
    """Play one task; add numerators and denominators to ``counts``; return the dialogue (for the report)."""
    session = await user.start(task, seed)
    messages = [Message("system", task.system_prompt), Message("user", task.instruction)]
    hidden = list(task.user_context)
    revealed_unasked: set[int] = set()
    asked: set[int] = set()
    counts["facts"] += len(hidden)
    script = [(i, question_for(f)) for i, f in enumerate(hidden)] + [(-1, UNANSWERABLE), (-2, CLOSING)]
    stopped_early = False
    for idx, text in script:
        messages.append(Message("assistant", text))
        turn = await session.respond(messages)
        reply = turn.message.content or ""
        messages.append(Message("user", reply))
        counts["user_turns"] += 1
        if not reply.strip() or _AGENT_VOICE.search(reply) or turn.message.tool_calls:
            counts["out_of_role"] += 1
        if idx >= 0:
            asked.add(idx)
            counts["asked"] += 1
            if not _has(reply, hidden[idx].value):
                counts["wrong_value"] += 1
        elif idx == -1:
            counts["unanswerable"] += 1
            if not _UNKNOWN.search(reply):
                counts["invented_answer"] += 1
        for j, fact in enumerate(hidden):
            if j not in asked and j != idx and j not in revealed_unasked and _has(reply, fact.value):
                revealed_unasked.add(j)
        if idx == -2:
            counts["closings"] += 1
            if not turn.stop:
                counts["missing_stop"] += 1
        elif turn.stop:
            stopped_early = True
            break
    counts["episodes"] += 1
    counts["premature_stop"] += int(stopped_early)
    counts["unasked_reveal"] += len(revealed_unasked)
    return [m.openai() for m in messages[1:]]


_DENOMINATORS = {"unasked_reveal": "facts", "wrong_value": "asked", "invented_answer": "unanswerable",
                 "premature_stop": "episodes", "missing_stop": "closings", "out_of_role": "user_turns"}


def rates(counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Each metric of :data:`METRICS` as ``{k, n, rate, ci95}`` from the counts of :func:`evaluate_user`."""
    out = {}
    for metric in METRICS:
        k, n = int(counts.get(metric, 0)), int(counts.get(_DENOMINATORS[metric], 0))
        lo, hi = wilson(k, n)
        out[metric] = {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}
    return out


async def evaluate_user(user: Any, tasks: Sequence[Task], seed: int = 0) -> dict[str, Any]:
    """Run the scripted agent on every task against ``user`` (a user simulator, set up); return the counts, the
    rates with 95% Wilson intervals, the simulator's own guard counters, and the dialogues."""
    counts: Counter[str] = Counter()
    dialogues = []
    for i, task in enumerate(tasks):
        dialogues.append({"task_id": task.id, "messages": await _episode(user, task, seed + i, counts)})
    stats = dict(getattr(user, "stats", {}) or {})
    return {"tasks": len(tasks), "counts": dict(counts), "rates": rates(counts), "simulator_stats": stats,
            "dialogues": dialogues}


def load_tasks(run: Path | None, count: int, seed: int, domains: Sequence[str] = ()) -> list[Task]:
    """Tasks with hidden facts: from a run's ``tasks.jsonl``, or freshly generated by ``offline-domains``."""
    if run is not None:
        path = run / "tasks.jsonl"
        if not path.is_file():
            raise UsageError(f"{str(run)!r} is not a synthagent run directory (no tasks.jsonl)")
        tasks = [from_json_dict(Task, json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    else:
        from synthagent.core.protocols import GenerationContext
        from synthagent.core.registry import load_plugins

        options: dict[str, Any] = {"domains": list(domains)} if domains else {}
        gen = load_plugins().registry("generator").get("offline-domains").create(options)

        async def collect() -> list[Task]:
            return [t async for t in gen.generate(GenerationContext(count=count * 3, seed=seed))]

        tasks = asyncio.run(collect())
    tasks = [t for t in tasks if t.user_context][:count]
    if not tasks:
        raise UsageError("no task with hidden facts to evaluate the user on")
    return tasks


def build_user(name: str, options: Mapping[str, Any], backend: str, backend_options: Mapping[str, Any],
               seed: int) -> Any:
    """A registered user simulator, set up with ``backend`` as its model (when it takes one)."""
    from synthagent.core.protocols import RunContext
    from synthagent.core.registry import load_plugins

    plugins = load_plugins()
    user = plugins.registry("user").get(name).create(dict(options))
    if hasattr(user, "setup"):
        llm = plugins.registry("llm").get(backend).create(dict(backend_options)) if backend else None
        if llm is None and not getattr(user, "backend", ""):
            raise ConfigError(f"user {name!r} needs a model: pass --backend (e.g. openai) and --backend-set options")
        user.setup(RunContext(llm=llm, mapping=None, run_dir="", seed=seed))
    return user


def _pairs(items: Sequence[str], what: str) -> dict[str, Any]:
    from synthagent.core.config import parse_set

    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_set(item)
        if len(key) != 1:
            raise ConfigError(f"{what} {item!r}: use a plain key (KEY=VALUE)")
        out[key[0]] = value
    return out


def _cell(r: Mapping[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    return f"{r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] ({r['k']}/{r['n']})"


@click.command("eval-user")
@click.option("--user", "users", multiple=True, default=("rule",), show_default=True,
              help="A user simulator to measure (repeatable).")
@click.option("--user-set", "user_sets", multiple=True, metavar="KEY=VALUE",
              help="An option of the user simulators (e.g. backend=transformers, backend_options={model=\"DIR\"}).")
@click.option("--backend", default="", help="The LLM backend a model-played user runs on (e.g. openai, transformers).")
@click.option("--backend-set", "backend_sets", multiple=True, metavar="KEY=VALUE",
              help="An option of --backend (e.g. base_url=http://127.0.0.1:8000/v1, model=NAME).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Take the tasks from this run (default: "
              "fresh offline-domains tasks).")
@click.option("--tasks", "count", type=click.IntRange(1), default=30, show_default=True, help="Tasks to play.")
@click.option("--seed", type=int, default=1000, show_default=True, help="Task and episode seed (held out from runs "
              "at seed 0).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the full report (with the "
              "dialogues) as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the rates as JSON.")
def fidelity_cmd(users: Sequence[str], user_sets: Sequence[str], backend: str, backend_sets: Sequence[str],
                 run_dir: Path | None, count: int, seed: int, out: Path | None, as_json: bool) -> None:
    """Measure how faithfully user simulators play the user, with a scripted agent (no model).

    Rates of: hidden values revealed unasked, wrong values, invented answers to an unanswerable question,
    premature and missing stops, out-of-role turns; each with a 95% Wilson interval.

    \b
    Examples:
      synth eval-user --user rule --tasks 40
      synth eval-user --user rule --user llm --backend openai \\
          --backend-set base_url=http://127.0.0.1:8000/v1 --backend-set model=smollm2
    """
    from synthagent.core.cli import guard

    guard(_fidelity)(users, user_sets, backend, backend_sets, run_dir, count, seed, out, as_json)


def _fidelity(users: Sequence[str], user_sets: Sequence[str], backend: str, backend_sets: Sequence[str],
              run_dir: Path | None, count: int, seed: int, out: Path | None, as_json: bool) -> None:
    tasks = load_tasks(run_dir, count, seed)
    user_options = _pairs(user_sets, "--user-set")
    backend_options = _pairs(backend_sets, "--backend-set")
    report: dict[str, Any] = {"tasks": len(tasks), "seed": seed, "users": {}}
    for name in users:
        user = build_user(name, user_options if name != "rule" else {}, backend, backend_options, seed)
        report["users"][name] = asyncio.run(evaluate_user(user, tasks, seed))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if as_json:
        click.echo(json.dumps({n: r["rates"] for n, r in report["users"].items()}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"User fidelity over {len(tasks)} tasks (rate [95% Wilson] (k/n); lower is better)")
    table.add_column("metric")
    for name in report["users"]:
        table.add_column(name)
    for metric in METRICS:
        table.add_row(metric, *(_cell(r["rates"][metric]) for r in report["users"].values()))
    Console().print(table)


@hookimpl
def synth_register_commands(register: Any) -> None:
    """Register ``synth eval-user``."""
    register("eval-user", "synthagent.plugins.simulators.users.fidelity:fidelity_cmd",
             description="measure user simulators' fidelity with a scripted agent (rates with 95% intervals)")
