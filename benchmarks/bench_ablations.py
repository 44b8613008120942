"""Mechanism ablations of the teacher-LLM path (the SYNTHAGENT paper's Table 4 mechanisms, measured).

    python benchmarks/bench_ablations.py                      # the built-in sampling teacher on loopback
    python benchmarks/bench_ablations.py --teacher pkg.mod:make_reply   # another scripted teacher
    python benchmarks/bench_ablations.py --base-url http://127.0.0.1:8080/v1 --model smollm2  # a real server
    python benchmarks/bench_ablations.py --teacher synthagent.plugins.backends.scripted_teacher:ScriptedTeacher \
        --sim-url http://127.0.0.1:8080/v1 --sim-model smollm2    # scripted tasks, a real model in the roles

(a) **Mapping store.** The same tasks are rolled out ``--samples`` times each, with the run's mapping store
    (``sqlite``: the first response written for a call is the response every rollout gets) and with
    ``forgetful``, a store that remembers nothing (every call is simulated afresh, as without the mechanism).
    Reported: the mean across tasks of the variance across a task's rollouts of the reward (tasks the rubric
    stage kept) and of the outcome (1 when the rollout's last tool call succeeded, else 0: defined for every
    rollout), and the share of repeated calls (same task, tool and arguments) whose responses differed.
    A teacher-written task seeds the store with its workflow's responses, so a third arm,
    ``store_unseeded`` (``persona-fuzzy-unseeded``: the responses removed), keeps the store but simulates
    every call: the store's first-answer-wins consistency alone. (``forgetful`` loses the seed too.)
(b) **Fuzzy rewrite.** The same tasks with the underspecified instruction (the persona-fuzzy default) and with
    the full instruction (``persona-fuzzy-plain``: the rewrite undone). Reported: the share of rollouts in
    which the agent asks the user something, and asks per rollout.

Every arm is a real ``synth`` pipeline run over real HTTP (the ``openai`` backend, the ``llm`` tool and user
simulators). The built-in teacher is a *sampling* teacher: it answers a tool call consistently with the task
only half the time (as a teacher at temperature > 0 does), and its agent asks the user for a value the
instruction does not give. ``--teacher MODULE:FACTORY`` swaps in another scripted teacher (a factory that
returns ``reply(body) -> str | dict`` for :class:`~synthagent.core.testing.ScriptedOpenAIServer`).

**A real model in chosen roles** (``--sim-url``, ``--sim-model``): a small model writes few usable tasks, so
the tasks can come from the scripted teacher while the real server plays the roles each ablation is about:
``--roles-a`` (default ``tools``: the tool simulator's own backend, ``plugins.llm.tools.backend``) in the
mapping-store arms and ``--roles-b`` (default ``agent,user,tools``) in the fuzzy-rewrite arms. ``user`` is the
llm user's own backend (``plugins.llm.user.backend``); ``agent`` forwards the agent's requests (those with
tools and no prompt marker, rollouts and demonstrations) from the scripted server to the real one.
``--sim-option KEY=VALUE`` sets an option of the roles' ``openai`` backends (e.g. ``structured_outputs=none``).
Prints a JSON report (``--json PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import itertools
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
from synthagent.core.hookspecs import hookimpl

# -- the ablation arms, registered as plugins of this module ---------------------------------------------------

class ForgetfulMappingStore:
    """A mapping store that remembers nothing: the ablation of the mapping-store mechanism."""

    name = "forgetful"

    async def get(self, task_id: str, key: str) -> Any | None:
        """Nothing is ever stored."""
        return None

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Keep nothing; the caller's own value is the answer."""
        return value


def _plain(task: Any) -> Any:
    """The task with its full instruction; the facts the rewrite hid are in it now, so they move from
    ``user_context`` (hidden) to ``visible_facts`` (otherwise the task check drops the task: a hidden value
    shows in the instruction)."""
    if task is None:
        return None
    return attrs.evolve(task, instruction=task.full_instruction, user_context=(),
                        visible_facts=(*task.visible_facts, *task.user_context))


def _plain_generator() -> Any:
    from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator

    class PlainPersonaGenerator(PersonaFuzzyGenerator):  # type: ignore[misc,valid-type]
        """persona-fuzzy with the fuzzy rewrite undone: the agent sees the full instruction."""

        name = "persona-fuzzy-plain"

        async def generate(self, ctx: Any) -> Any:
            """The parent's tasks with their full instruction."""
            async for task in super().generate(ctx):
                yield _plain(task)

        async def synthesize(self, *args: Any, **kwargs: Any) -> Any:
            """The parent's task of one slot with its full instruction."""
            return _plain(await super().synthesize(*args, **kwargs))

    return PlainPersonaGenerator


def _unseeded(task: Any) -> Any:
    """The task without its workflow's expected responses: nothing seeds the mapping store, so the tool
    simulator answers every call and the store only keeps the first answer (the mechanism alone)."""
    if task is None:
        return None
    return attrs.evolve(task, workflow=tuple(attrs.evolve(st, response=None) for st in task.workflow))


def _unseeded_generator() -> Any:
    from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator

    class UnseededPersonaGenerator(PersonaFuzzyGenerator):  # type: ignore[misc,valid-type]
        """persona-fuzzy whose tasks carry no expected responses (the world is not seeded)."""

        name = "persona-fuzzy-unseeded"

        async def generate(self, ctx: Any) -> Any:
            """The parent's tasks without responses."""
            async for task in super().generate(ctx):
                yield _unseeded(task)

        async def synthesize(self, *args: Any, **kwargs: Any) -> Any:
            """The parent's task of one slot without responses."""
            return _unseeded(await super().synthesize(*args, **kwargs))

    return UnseededPersonaGenerator


@hookimpl
def synth_register_mapping_stores(register: Any) -> None:
    """Register the ``forgetful`` store (ablation arm)."""
    register("forgetful", ForgetfulMappingStore, description="remembers nothing (mapping-store ablation)")


@hookimpl
def synth_register_task_generators(register: Any) -> None:
    """Register ``persona-fuzzy-plain`` (ablation arm)."""
    register("persona-fuzzy-plain", _plain_generator(), description="persona-fuzzy without the fuzzy rewrite")
    register("persona-fuzzy-unseeded", _unseeded_generator(), description="persona-fuzzy without seeded responses")


# -- the built-in sampling teacher ----------------------------------------------------------------------------

TOOLS = [
    {"name": "find_customer", "description": "Find a customer by email.",
     "parameters": {"type": "object", "properties": {"email": {"type": "string", "description": "email"}},
                    "required": ["email"]}, "returns": {"type": "object"}},
    {"name": "list_orders", "description": "List a customer's orders.",
     "parameters": {"type": "object", "properties": {"customer_id": {"type": "string", "description": "id"}},
                    "required": ["customer_id"]}, "returns": {"type": "object"}},
    {"name": "cancel_order", "description": "Cancel an order.",
     "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "order"}},
                    "required": ["order_id"]}, "returns": {"type": "object"}},
]


def sampling_teacher(consistency: float = 0.5, seed: int = 0) -> Any:
    """A scripted teacher for every prompt of the persona-fuzzy path whose tool simulation samples: a call
    gets the task-consistent answer with probability ``consistency``, else an unrelated id."""
    rng = random.Random(seed)

    def number(text: str) -> int:
        m = re.search(r"customer number (\d+)", text)
        return int(m.group(1)) if m else int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) % 9000 + 1000

    def reply(body: dict[str, Any]) -> Any:
        messages = body["messages"]
        first = messages[0]["content"] or ""
        if "coherent tool ecosystem" in first:
            return json.dumps({"domain": "shop orders", "tools": TOOLS})
        if "Write one realistic task" in first:
            n = number(first)
            return json.dumps({
                "full_instruction": f"I am customer number {n}, email c{n}@example.com. Cancel my order ORD-{n}.",
                "workflow": [
                    {"description": "find me", "tool": "find_customer", "arguments": {"email": f"c{n}@example.com"}},
                    {"description": "list orders", "tool": "list_orders", "arguments": {"customer_id": f"C-{n}"}},
                    {"description": "cancel it", "tool": "cancel_order", "arguments": {"order_id": f"ORD-{n}"}}],
                "answer": []})
        if "deliberately underspecified" in first:
            n = number(first)
            return json.dumps({"instruction": f"I am customer number {n}, email c{n}@example.com. Cancel one of my orders.",
                               "hidden_facts": [{"name": "order_number", "value": f"ORD-{n}",
                                                 "description": "the order number", "keywords": ["order number"]}]})
        if "You are simulating the tool" in first:
            n = number(first)
            ok = rng.random() < consistency
            cid = f"C-{n}" if ok else f"C-{rng.randrange(10**6)}"
            if "find_customer(" in first.split("The call to answer now:")[-1]:
                return json.dumps({"customer_id": cid})
            if "list_orders(" in first.split("The call to answer now:")[-1]:
                return json.dumps({"orders": [{"order_id": f"ORD-{n}" if ok else f"ORD-{rng.randrange(10**6)}"}]})
            return json.dumps({"status": "cancelled"} if ok else {"error": "not_found", "message": "no such order"})
        if first.startswith("You are role-playing"):
            n = number(first)
            return f"It is ORD-{n}. {'###STOP###' if len(messages) > 3 else ''}".strip()
        # the agent: find the customer, list orders, ask for the order number unless the conversation has it
        said = " ".join(m.get("content") or "" for m in messages if m["role"] in ("user", "system"))
        tools_said = [m for m in messages if m["role"] == "tool"]
        n = number(said)
        called = [c["function"]["name"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]

        def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
            return {"content": None, "tool_calls": [{"id": f"c{len(called)}", "type": "function",
                                                     "function": {"name": name, "arguments": json.dumps(args)}}]}

        if "find_customer" not in called:
            return call("find_customer", {"email": f"c{n}@example.com"})
        if "list_orders" not in called:
            cid = json.loads(tools_said[-1]["content"]).get("customer_id", f"C-{n}") if tools_said else f"C-{n}"
            return call("list_orders", {"customer_id": cid})
        order = re.search(r"ORD-\d+", said)
        if "cancel_order" not in called:
            if order is None:
                return "Which order number would you like to cancel?"
            return call("cancel_order", {"order_id": order.group(0)})
        return "Your order is cancelled."

    return reply


# -- a real model in chosen roles ------------------------------------------------------------------------------

ROLES = ("tools", "user", "agent")
_MARKER = re.compile(r"\[synthagent:prompt=([a-z_]+)\]")


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) \
        else str(value).lower() if isinstance(value, bool) else json.dumps(str(value))


def role_sets(roles: list[str], url: str, model: str, options: dict[str, Any]) -> list[str]:
    """``--set`` items that give the ``tools`` and ``user`` roles an ``openai`` backend of their own at
    ``url`` (``agent`` is routed by :func:`forwarding` instead)."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise SystemExit(f"unknown role(s) {unknown}; choose from {list(ROLES)}")
    table = "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in {"base_url": url, "model": model, **options}.items()) + "}"
    return [item for role in ("tools", "user") if role in roles
            for item in (f"plugins.llm.{role}.backend=openai", f"plugins.llm.{role}.backend_options={table}")]


def is_agent_request(body: dict[str, Any]) -> bool:
    """The agent's requests offer tools and carry no prompt marker (rollouts and demonstrations alike)."""
    messages = body.get("messages") or []
    first = str((messages[0] or {}).get("content") or "") if messages else ""
    return bool(body.get("tools")) and not _MARKER.search(first)


def forwarding(reply: Any, url: str, model: str, timeout_s: float = 900.0) -> Any:
    """A scripted server's ``reply`` that forwards the agent's requests to the server at ``url`` (as ``model``)
    and returns its response body as is; every other request is ``reply``'s."""
    import urllib.request

    def route(body: dict[str, Any]) -> Any:
        if not is_agent_request(body):
            return reply(body)
        # llama-cpp-python's server (0.3.36) refuses an assistant message whose content is null (OpenAI's form
        # for a message that only calls tools) with HTTP 500: send it an empty string
        messages = [{**m, "content": ""} if m.get("role") == "assistant" and m.get("content") is None else m
                    for m in body.get("messages") or []]
        request = urllib.request.Request(f"{url.rstrip('/')}/chat/completions",
                                         json.dumps({**body, "model": model, "messages": messages}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the user's own server
            return response.read()

    return route


def _option(item: str) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


# -- running the arms -----------------------------------------------------------------------------------------

def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_arm(name: str, base_url: str, model: str, out: Path, tasks: int, samples: int, sets: list[str]) -> dict[str, Any]:
    """One pipeline run; the per-arm measurements from its run directory."""
    from synthagent.core.config import load_config
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.registry import load_plugins

    config = load_config(None, [f"tasks={tasks}", f"simulate.samples={samples}", "llm.backend=openai",
                                f"llm.model={model}", f"llm.base_url={base_url}", "tools=llm", "user=llm", *sets])
    sys.path.insert(0, str(Path(__file__).parent))
    plugins = load_plugins(extra=["bench_ablations"], environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    pipeline = Pipeline(config, plugins)
    pipeline.open_store(out / name, resume=False)
    t0 = time.perf_counter()
    summary = asyncio.run(pipeline.run())
    return measure(out / name, name, time.perf_counter() - t0, summary)


def measure(run_dir: Path, name: str, wall: float | None = None, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The per-arm measurements from a run directory (also a partial one: ``--measure DIR``)."""
    if summary is None:
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    trajectories = {t["id"]: t for t in _read(run_dir / "trajectories.jsonl")}
    by_task: dict[str, list[float]] = defaultdict(list)
    for s in _read(run_dir / "scores.jsonl"):
        if s.get("total") is not None and s["trajectory_id"] in trajectories:
            by_task[trajectories[s["trajectory_id"]]["task_id"]].append(float(s["total"]))
    variances = [statistics.pvariance(v) for v in by_task.values() if len(v) >= 2]
    # the outcome in the simulated world, for every rollout (scored or not): did the last tool call succeed?
    outcome: dict[str, list[float]] = defaultdict(list)
    for t in trajectories.values():
        last = next((m.get("content") for m in reversed(t.get("messages") or []) if m.get("role") == "tool"), None)
        outcome[t["task_id"]].append(0.0 if last is None or '"error"' in str(last) else 1.0)
    outcome_var = [statistics.pvariance(v) for v in outcome.values() if len(v) >= 2]
    # repeated calls: the same (task, tool, arguments) seen in several rollouts; did the responses differ?
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    asks, asked = [], 0
    for t in trajectories.values():
        msgs = t.get("messages") or []
        ids = {}
        for m in msgs:
            for c in m.get("tool_calls") or []:
                ids[c.get("id")] = (c.get("name") or c.get("function", {}).get("name"),
                                    json.dumps(c.get("arguments"), sort_keys=True))
            if m.get("role") == "tool" and m.get("tool_call_id") in ids:
                seen[(t["task_id"], *ids[m["tool_call_id"]])].add(str(m.get("content")))
        n = sum(1 for a, b in itertools.pairwise(msgs) if a.get("role") == "assistant" and "?" in (a.get("content") or "")
                and b.get("role") == "user")  # a question the user answered
        asks.append(n)
        asked += n > 0
    repeated = [v for v in seen.values()]
    return {
        "arm": name, "wall_s": round(wall, 1) if wall is not None else None, "tasks": len(outcome), "tasks_scored": len(by_task),
        "rollouts": len(trajectories),
        "outcome_mean": round(statistics.fmean([x for v in outcome.values() for x in v]), 3) if outcome else None,
        "outcome_variance_mean": round(statistics.fmean(outcome_var), 4) if outcome_var else None,
        "reward_mean": round(statistics.fmean([x for v in by_task.values() for x in v]), 3) if by_task else None,
        "reward_variance_mean": round(statistics.fmean(variances), 4) if variances else None,
        "calls_with_differing_responses": round(sum(len(v) > 1 for v in repeated) / len(repeated), 3) if repeated else None,
        "rollouts_that_ask": round(asked / len(trajectories), 3) if trajectories else None,
        "asks_per_rollout": round(statistics.fmean(asks), 2) if asks else None,
        "llm_requests": summary.get("stats", {}).get("llm", {}).get("requests"),
    }


def main() -> None:
    """Run the four arms and print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--samples", type=int, default=6, help="rollouts per task")
    parser.add_argument("--teacher", default="", help="MODULE:FACTORY of a scripted teacher (default: built-in)")
    parser.add_argument("--base-url", default="", help="a real OpenAI-compatible server instead of a scripted one")
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--sim-url", default="", help="a real server for the roles below (tasks stay scripted)")
    parser.add_argument("--sim-model", default="smollm2")
    parser.add_argument("--roles-a", default="tools", help="roles --sim-url plays in the mapping-store arms")
    parser.add_argument("--roles-b", default="agent,user,tools", help="roles --sim-url plays in the fuzzy arms")
    parser.add_argument("--sim-option", action="append", default=[], help="KEY=VALUE of the roles' openai backends")
    parser.add_argument("--arms", default="a,b", help="a (mapping store), b (fuzzy rewrite), both, or arm names")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra config, as synth run --set")
    parser.add_argument("--out", default="")
    parser.add_argument("--json", default="")
    parser.add_argument("--measure", default="", help="only print the measurements of this run directory")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), Path(args.measure).name), indent=2))
        return
    out = Path(args.out or tempfile.mkdtemp(prefix="ablations-"))
    roles = {"a": [r for r in args.roles_a.split(",") if r] if args.sim_url else [],
             "b": [r for r in args.roles_b.split(",") if r] if args.sim_url else []}
    options = {"timeout_s": 900, **dict(_option(o) for o in args.sim_option)}
    arms = [(name, group, sets) for name, group, sets in (
        ("store", "a", ["generator=persona-fuzzy", "mapping=sqlite"]),
        ("no_store", "a", ["generator=persona-fuzzy", "mapping=forgetful"]),
        ("store_unseeded", "a", ["generator=persona-fuzzy-unseeded", "mapping=sqlite"]),
        ("fuzzy", "b", ["generator=persona-fuzzy", "mapping=sqlite"]),
        ("no_fuzzy", "b", ["generator=persona-fuzzy-plain", "mapping=sqlite"]))
        if group in args.arms.split(",") or name in args.arms.split(",")]
    forward = {"agent": False}  # whether the current arm's agent is the real server

    def run_all(base_url: str) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for name, group, sets in arms:
            store = next((r for r in results if r["arm"] == "store"), None)
            if name == "fuzzy" and store is not None and roles["a"] == roles["b"]:  # the same run as "store": reuse it
                results.append({**store, "arm": "fuzzy"})
                continue
            forward["agent"] = "agent" in roles[group]
            extra = sets + role_sets(roles[group], args.sim_url, args.sim_model, options) + args.sets
            results.append({**run_arm(name, base_url, args.model, out, args.tasks, args.samples, extra),
                            "roles": roles[group]})
            print(json.dumps(results[-1]), file=sys.stderr)
        return results

    if args.base_url:
        results = run_all(args.base_url)
        teacher = args.base_url
    else:
        from synthagent.core.testing import ScriptedOpenAIServer

        if args.teacher:
            module, _, attr = args.teacher.partition(":")
            reply = getattr(importlib.import_module(module), attr)()
        else:
            reply = sampling_teacher()
        if args.sim_url:
            routed = forwarding(reply, args.sim_url, args.sim_model, float(options["timeout_s"]))
            scripted = reply
            reply = lambda body: (routed if forward["agent"] else scripted)(body)  # noqa: E731
        with ScriptedOpenAIServer(reply) as server:
            results = run_all(server.base_url)
        teacher = args.teacher or "built-in sampling teacher"
    report = {"teacher": teacher, "sim_url": args.sim_url, "sim_model": args.sim_model if args.sim_url else None,
              "sim_options": options if args.sim_url else None, "tasks": args.tasks, "samples": args.samples,
              "sets": args.sets, "arms": results}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
