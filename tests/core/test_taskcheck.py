"""check_task: every generator's tasks bind their hidden facts, with well-formed bindings and offered tools."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import attrs
import pytest

from synthagent.core.models import Fact, Task, ToolSpec, WorkflowStep
from synthagent.core.protocols import GenerationContext
from synthagent.core.registry import Plugins
from synthagent.core.bindings import parse_binding
from synthagent.core.taskcheck import check_task


def _generate(plugins: Plugins, name: str, count: int, seed: int = 0) -> list[Task]:
    gen = plugins.registry("generator").get(name).create({})

    async def main() -> list[Task]:
        return [t async for t in gen.generate(GenerationContext(count=count, seed=seed))]

    return asyncio.run(main())


@pytest.fixture(scope="module")
def offline_tasks() -> list[Task]:
    from synthagent.core.registry import load_plugins

    return _generate(load_plugins(environ={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}), "offline-domains", 200)


def test_every_offline_domain_task_passes(offline_tasks: list[Task]) -> None:
    assert len(offline_tasks) >= 150 and len({t.domain for t in offline_tasks}) == 8
    failing = {t.id: check_task(t) for t in offline_tasks if check_task(t)}
    assert not failing, failing


def test_every_graph_domain_task_passes(plugins: Plugins) -> None:
    """A column written twice in one walk used to share one ``new_<column>`` fact (the first value was lost)."""
    tasks = _generate(plugins, "graph-domains", 120, seed=1)
    assert len(tasks) >= 60
    failing = {t.id: check_task(t) for t in tasks if check_task(t)}
    assert not failing, failing


def _pick_task(tasks: list[Task]) -> tuple[Task, int, str, str]:
    """A task whose hidden fact is bound only by a row-pick binding: (task, step, argument, fact)."""
    for task in tasks:
        hidden = {f.name for f in task.user_context}
        for step in task.workflow:
            for arg, binding in step.bindings.items():
                parsed = parse_binding(binding)
                if parsed.kind == "step_fact" and parsed.fact in hidden:
                    name = str(parsed.fact)
                    others = [b for s in task.workflow for b in s.bindings.values() if b.endswith(f"fact:{name}")]
                    if len(others) == 1:
                        return task, step.index, arg, name
    raise AssertionError("no offline task binds a hidden fact only through step:N+fact:NAME")


def _replace_step(task: Task, position: int, **changes: object) -> Task:
    steps = list(task.workflow)
    steps[position] = attrs.evolve(steps[position], **changes)
    return attrs.evolve(task, workflow=tuple(steps))


def test_a_row_pick_binding_binds_its_fact(offline_tasks: list[Task]) -> None:
    task, index, arg, fact = _pick_task(offline_tasks)
    assert check_task(task) == []
    bindings = dict(task.workflow[index].bindings)
    bindings[arg] = bindings[arg].split("+")[0]  # step:N only: the fact no longer picks the row
    problems = check_task(_replace_step(task, index, bindings=bindings))
    assert problems == [f"hidden fact {fact!r} is not bound by any workflow step (no fact:{fact} or "
                        f"step:N+fact:{fact} binding): the agent never needs to ask for it"]


def test_an_unbound_hidden_fact_is_reported(offline_tasks: list[Task]) -> None:
    task = offline_tasks[0]
    extra = Fact("favourite_colour", "teal", "the user's favourite colour", ("colour",), "It's teal.")
    problems = check_task(attrs.evolve(task, user_context=(*task.user_context, extra)))
    assert len(problems) == 1 and "'favourite_colour' is not bound" in problems[0]


def _small_task(**changes: object) -> Task:
    from synthagent.core.models import Persona

    tools = (ToolSpec("find_order", "Find an order", {"type": "object", "properties": {}}),
             ToolSpec("refund", "Refund an order", {"type": "object", "properties": {}}))
    steps = (
        WorkflowStep(0, "Find the order", "find_order", {"email": "ana@example.com"}, {"email": "fact:email"}),
        WorkflowStep(1, "Refund it", "refund", {"order_id": "O7", "reason": "damaged"},
                     {"order_id": "step:0+fact:order_date", "reason": "literal"}, writes=True),
    )
    hidden = (Fact("email", "ana@example.com", "your email"), Fact("order_date", "2026-03-01", "the order date"))
    fields: dict[str, object] = dict(
        id="task-1", domain="shop", persona=Persona("p", "Ana, a customer"), system_prompt="You help.",
        tools=tools, instruction="Please refund my damaged order.", full_instruction="...",
        user_context=hidden, visible_facts=(), workflow=steps)
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


def test_a_crafted_good_task_passes() -> None:
    assert check_task(_small_task()) == []


@pytest.mark.parametrize(("step", "changes", "expected"), [
    (1, {"bindings": {"order_id": "step:0+order_date", "reason": "literal"}}, "malformed binding: unknown binding 'step:0+order_date'"),
    (1, {"bindings": {"order_id": "fact:order-date", "reason": "literal"}}, "malformed binding: unknown binding 'fact:order-date'"),
    (0, {"bindings": {"email": "step:1"}}, "reads step 1, which is not an earlier step"),
    (1, {"bindings": {"order_id": "step:0+fact:order_date", "reasn": "literal"}}, "binds 'reasn', which is not one"),
    (1, {"tool": "refund_order"}, "calls tool 'refund_order', which the task does not offer"),
    (1, {"index": 2}, "workflow step 1 has index 2"),
    (0, {"arguments": {"email": "bob@example.com"}}, "is 'bob@example.com', but fact 'email' is 'ana@example.com'"),
])
def test_a_broken_step_is_reported(step: int, changes: dict, expected: str) -> None:
    problems = check_task(_replace_step(_small_task(), step, **changes))
    assert any(expected in p for p in problems), problems


def test_task_level_problems_are_reported() -> None:
    task = _small_task()
    leaked = check_task(attrs.evolve(task, instruction="Refund the order I placed on 2026-03-01."))
    assert leaked == ["hidden fact 'order_date' shows in the instruction ('2026-03-01')"]
    twice = check_task(attrs.evolve(task, visible_facts=(Fact("email", "ana@example.com", "your email"),)))
    assert twice == ["fact 'email' is defined more than once"]
    tools = check_task(attrs.evolve(task, tools=(*task.tools, task.tools[0])))
    assert tools == ["tool 'find_order' is offered more than once"]


GENERATOR = '''
"""A Python generator that hides a fact no workflow step needs (the agent would never have to ask)."""
import attrs
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Fact
from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator


class Unbound(OfflineDomainsGenerator):
    """The offline tasks, plus a hidden favourite colour on every other one."""

    async def generate(self, ctx):
        i = 0
        async for task in super().generate(ctx):
            if i % 2 == 0:
                extra = Fact("favourite_colour", "teal", "the user's favourite colour", ("colour",), "It's teal.")
                task = attrs.evolve(task, user_context=(*task.user_context, extra))
            i += 1
            yield task


@hookimpl
def synth_register_task_generators(register):
    register("unbound-fact", Unbound, description="offline tasks with an unbound hidden fact")
'''


@pytest.mark.slow
def test_a_python_generator_task_with_an_unbound_hidden_fact_is_dropped_with_the_reason(synth, tmp_path: Path) -> None:
    (tmp_path / "unbound_plugin.py").write_text(textwrap.dedent(GENERATOR))
    result = synth(["run", "-q", "--plugin", "unbound_plugin", "--set", "generator=unbound-fact", "--tasks", "6",
                    "--out", str(tmp_path / "runs"), "--name", "r"], env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    root = tmp_path / "runs/r"
    summary = json.loads((root / "summary.json").read_text())
    assert any("favourite_colour" in str(reason) for reason in summary["dropped"]), summary["dropped"]
    for line in (root / "tasks.jsonl").read_text().splitlines():
        assert all(f["name"] != "favourite_colour" for f in json.loads(line)["user_context"])
