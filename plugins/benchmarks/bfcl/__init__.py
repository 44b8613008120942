"""BFCL v4 multi-turn as a synthagent environment (needs ``pip install --no-deps bfcl-eval``).

Registers, lazily (``bfcl-eval`` is imported only when a component is built):

=================  ==============  =====================================================================
kind               name            what
=================  ==============  =====================================================================
generator          bfcl-multi-turn the entries of a category (option ``category``: base, miss_param,
                                   miss_func, long_context) as tasks
tools              bfcl            BFCL's API classes, instantiated per episode from the entry's config
user               bfcl            the entry's turns in order; stops after the last
rubric             bfcl            records the ground truth (BFCL's scorer needs nothing else)
scorer             bfcl            BFCL's own ``multi_turn_checker``
llm                bfcl-oracle     replays the ground truth (option ``corruption``: none, drop_last_call)
=================  ==============  =====================================================================

See docs/bfcl.md. :data:`BENCHMARK` is the set of overrides that makes a run (or ``synth eval --bench
bfcl-multi-turn``) use this environment.
"""

from __future__ import annotations

from typing import Any

from synthagent.core.hookspecs import hookimpl

__all__ = ["BENCHMARK", "bfcl_benchmark"]

_PKG = "synthagent.plugins.benchmarks.bfcl"

#: The configuration overrides of the ``bfcl-multi-turn`` benchmark (the policy, ``llm.backend``, is the
#: caller's: ``bfcl-oracle`` replays the ground truth).
BENCHMARK: dict[str, Any] = {
    "generator": "bfcl-multi-turn",
    "tools": "bfcl",
    "user": "bfcl",
    "rubric": "bfcl",
    "scorer": "bfcl",
    "tasks": 200,
    # One call per agent message: the longest long_context entries take 35 agent messages.
    "simulate.max_turns": 100,
}


@hookimpl
def synth_register_task_generators(register: Any) -> None:
    """Register ``bfcl-multi-turn``."""
    register("bfcl-multi-turn", f"{_PKG}.environment:BfclGenerator",
             description="BFCL v4 multi-turn entries as tasks (needs: pip install --no-deps bfcl-eval)")


@hookimpl
def synth_register_tool_simulators(register: Any) -> None:
    """Register the ``bfcl`` tool simulator."""
    register("bfcl", f"{_PKG}.environment:BfclTools", description="executes BFCL's API classes per episode")


@hookimpl
def synth_register_user_simulators(register: Any) -> None:
    """Register the ``bfcl`` user."""
    register("bfcl", f"{_PKG}.environment:BfclUser", description="delivers a BFCL entry's turns in order")


@hookimpl
def synth_register_rubric_builders(register: Any) -> None:
    """Register the ``bfcl`` rubric builder."""
    register("bfcl", f"{_PKG}.scoring:BfclRubric", description="one check: BFCL's checker (records the ground truth)")


@hookimpl
def synth_register_reward_scorers(register: Any) -> None:
    """Register the ``bfcl`` scorer."""
    register("bfcl", f"{_PKG}.scoring:BfclScorer", description="BFCL's own multi-turn checker (1 valid, 0 not)")


@hookimpl
def synth_register_llm_backends(register: Any) -> None:
    """Register ``bfcl-oracle``."""
    register("bfcl-oracle", f"{_PKG}.oracle:BfclOracle", description="replays a BFCL entry's ground truth")


def bfcl_benchmark() -> Any:
    """The ``bfcl-multi-turn`` benchmark for ``synth eval --bench``: :data:`BENCHMARK`, success decided by
    BFCL's own checker (the ``bfcl`` scorer)."""
    from synthagent.core.protocols import Benchmark

    return Benchmark(overrides=BENCHMARK, success="scorer",
                     description="BFCL v4 multi_turn_base (200 entries), scored by BFCL's multi_turn_checker")


@hookimpl
def synth_register_benchmarks(register: Any) -> None:
    """Register the ``bfcl-multi-turn`` benchmark (``synth eval --bench bfcl-multi-turn``)."""
    register("bfcl-multi-turn", bfcl_benchmark,
             description="BFCL v4 multi_turn_base (200 entries), scored by BFCL's multi_turn_checker")
