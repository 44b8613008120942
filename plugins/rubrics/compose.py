"""Composable rewards: a tiny expression language over criterion results.

A reward is a tree of nodes, written as plain data (TOML tables in the config, dicts in Python):

=====================================================  =============================================
``"kind:subgoal"``, ``"check:checker"``, ``"id:ask-*"``  a *selector*: the fraction of the selected
                                                       criteria that passed (*absent* when none is selected)
``"*"``                                                every criterion
``{select = "kind:check"}``                            the same selector as a table
``{sum = [{weight = 0.7, of = NODE}, ...]}``            weighted mean of the children
``{all_of = [NODE, ...]}``                             1.0 when every child is 1.0, else 0.0
``{any_of = [NODE, ...]}``                             1.0 when some child is 1.0, else 0.0
``{min = [NODE, ...]}``                                the smallest child
``{gate = NODE, then = NODE}``                         ``then`` when ``gate`` is 1.0, else 0.0
``{const = 0.5}``                                      a constant
=====================================================  =============================================

Selectors may be combined with ``+`` (``"kind:subgoal+kind:check"``). The default reward of the ``rubric``
scorer is :func:`default_reward`::

    {gate = {all_of = ["kind:forbidden"]},
     then = {sum = [{weight = 0.25, of = "kind:subgoal"},
                    {weight = 0.25, of = {gate = {all_of = ["kind:penalty"]}, then = "kind:interaction"}},
                    {weight = 0.5,  of = {all_of = ["kind:subgoal", "kind:interaction", "kind:penalty",
                                                    "kind:check"]}}]}}

so any failed forbidden criterion zeroes the reward, any single failure costs at least half of it, and a
failed penalty (asking again for what the user already said, asking needlessly or too often) zeroes the
interaction term.

**A criterion with nothing to check is absent, not passed.** A selector that selects nothing is absent; a
``sum`` leaves absent terms out (their weight too), ``min``/``all_of``/``any_of`` look only at present
children, a ``gate`` whose condition is absent lets ``then`` through, and a tree that is absent as a whole
is worth 0. So a task without hidden facts has no interaction term at all (doing nothing used to collect
its 0.25 for free), and a rubric with nothing positive to check rewards nothing.
Specs are validated when the scorer is built; an error names the path of the bad node.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.models import CriterionResult

__all__ = ["Reward", "compile_reward", "default_reward", "evaluate"]

#: The node keys a table may use.
NODE_KEYS = ("select", "sum", "all_of", "any_of", "min", "gate", "const")


def default_reward(weights: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The default composition with ``subgoal``/``interaction``/``success`` weights (0.25/0.25/0.5)."""
    w = {"subgoal": 0.25, "interaction": 0.25, "success": 0.5, **(weights or {})}
    return {"gate": {"all_of": ["kind:forbidden"]},
            "then": {"sum": [{"weight": w["subgoal"], "of": "kind:subgoal"},
                             {"weight": w["interaction"],
                              "of": {"gate": {"all_of": ["kind:penalty"]}, "then": "kind:interaction"}},
                             {"weight": w["success"], "of": {"all_of": ["kind:subgoal", "kind:interaction",
                                                                       "kind:penalty", "kind:check"]}}]}}


def _selector_ok(text: str, path: str) -> None:
    for part in text.split("+"):
        if part == "*":
            continue
        field, _, pattern = part.partition(":")
        if field not in ("kind", "check", "id") or not pattern:
            raise ConfigError(f"reward {path}: bad selector {part!r}; use kind:NAME, check:NAME, id:GLOB or *")


def _validate(node: Any, path: str) -> None:
    if isinstance(node, str):
        _selector_ok(node, path)
        return
    if not isinstance(node, Mapping):
        raise ConfigError(f"reward {path}: expected a selector string or a table, got {type(node).__name__}")
    keys = [k for k in node if k in NODE_KEYS]
    extra = set(node) - set(NODE_KEYS) - ({"then"} if "gate" in node else set())
    if len(keys) != 1 or extra:
        raise ConfigError(f"reward {path}: a node has exactly one of {list(NODE_KEYS)} (got {sorted(node)})")
    key = keys[0]
    value = node[key]
    if key == "select":
        if not isinstance(value, str):
            raise ConfigError(f"reward {path}.select: expected a string")
        _selector_ok(value, f"{path}.select")
    elif key == "const":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"reward {path}.const: expected a number")
    elif key == "gate":
        if "then" not in node:
            raise ConfigError(f"reward {path}: a gate needs 'then'")
        _validate(value, f"{path}.gate")
        _validate(node["then"], f"{path}.then")
    elif key == "sum":
        if not isinstance(value, Sequence) or isinstance(value, str) or not value:
            raise ConfigError(f"reward {path}.sum: expected a non-empty list of {{weight, of}} tables")
        for i, term in enumerate(value):
            if not isinstance(term, Mapping) or set(term) != {"weight", "of"}:
                raise ConfigError(f"reward {path}.sum[{i}]: expected a table with 'weight' and 'of'")
            if isinstance(term["weight"], bool) or not isinstance(term["weight"], (int, float)) or term["weight"] < 0:
                raise ConfigError(f"reward {path}.sum[{i}].weight: expected a number >= 0")
            _validate(term["of"], f"{path}.sum[{i}].of")
        if sum(t["weight"] for t in value) <= 0:
            raise ConfigError(f"reward {path}.sum: the weights add up to 0")
    else:  # all_of, any_of, min
        if not isinstance(value, Sequence) or isinstance(value, str) or not value:
            raise ConfigError(f"reward {path}.{key}: expected a non-empty list of nodes")
        for i, child in enumerate(value):
            _validate(child, f"{path}.{key}[{i}]")


def _selected(selector: str, results: Sequence[CriterionResult], checks: Mapping[str, str]) -> list[CriterionResult]:
    out = []
    for r in results:
        for part in selector.split("+"):
            field, _, pattern = part.partition(":")
            value = {"kind": r.kind, "check": checks.get(r.criterion_id, ""), "id": r.criterion_id}.get(field)
            if part == "*" or (value is not None and fnmatch.fnmatchcase(value, pattern)):
                out.append(r)
                break
    return out


def evaluate(node: Any, results: Sequence[CriterionResult], checks: Mapping[str, str] | None = None) -> float | None:
    """The value in [0, 1] of a (validated) reward node over criterion results, or None when the node is
    absent (it selects no criterion: see the module docstring).

    :param checks: criterion id -> check name, for ``check:`` selectors.
    """
    checks = checks or {}
    if isinstance(node, str) or "select" in node:
        items = _selected(node if isinstance(node, str) else node["select"], results, checks)
        return sum(r.score for r in items) / len(items) if items else None
    if "const" in node:
        return float(node["const"])
    if "gate" in node:
        gate = evaluate(node["gate"], results, checks)
        return evaluate(node["then"], results, checks) if gate is None or gate >= 1.0 else 0.0
    if "sum" in node:
        terms = [(float(t["weight"]), evaluate(t["of"], results, checks)) for t in node["sum"]]
        present = [(w, v) for w, v in terms if v is not None]
        total = sum(w for w, _ in present)
        if not present or total <= 0:
            return None
        return sum(w * v for w, v in present) / total
    values = [v for v in (evaluate(child, results, checks)
                          for child in next(node[k] for k in ("all_of", "any_of", "min") if k in node)) if v is not None]
    if not values:
        return None
    if "all_of" in node:
        return 1.0 if all(v >= 1.0 for v in values) else 0.0
    if "any_of" in node:
        return 1.0 if any(v >= 1.0 for v in values) else 0.0
    return min(values)


class Reward:
    """A validated reward tree: ``Reward(spec)(results, checks)`` is the total in [0, 1].

    :param spec: the node tree (module docstring); ``None`` means :func:`default_reward`.
    """

    def __init__(self, spec: Any = None) -> None:
        self.spec = default_reward() if spec is None else spec
        _validate(self.spec, "reward")

    def __call__(self, results: Sequence[CriterionResult], checks: Mapping[str, str] | None = None) -> float:
        """Evaluate the tree (rounded to 6 decimals)."""
        value = evaluate(self.spec, results, checks)
        return 0.0 if value is None else round(min(1.0, max(0.0, value)), 6)


def compile_reward(spec: Any) -> Reward:
    """Validate ``spec`` and return it as a :class:`Reward` (raises :class:`ConfigError` naming the bad node)."""
    return Reward(spec)
