"""A held-out protocol that cannot leak: content fingerprints, domain and template splits, a leak check.

A task's id contains the seed, so two task sets drawn with different seeds never share an id even when they
share whole tasks: "overlap 0" by id means nothing. This module compares what a policy sees and does:

* :func:`fingerprint`: a hash of a task's *content* (the instruction, the workflow with its arguments, the
  hidden facts with their values, the offered tool names as a set), never its id, seed or slot;
* :func:`split`: leave-one-domain-out (``by="domain"``) or by template (scenario, ``by="template"``);
* :func:`check_heldout`: the checks between a training set and an evaluation set, raising
  :class:`LeakError` (exit 2, one line) on any overlap: shared content fingerprints always; shared domains
  (``split="domain"``) or templates (``split="template"``) for those protocols; and offered tool lists that
  spell out the plan (the gold tools first, in most evaluation tasks).

``synth eval --train-run RUN [--split domain|template|content]`` runs the check before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

from synthagent.core.errors import UsageError
from synthagent.core.models import Task

__all__ = ["LeakError", "fingerprint", "template_of", "split", "check_heldout", "plan_in_tools", "SPLITS"]

#: The protocols :func:`check_heldout` knows.
SPLITS = ("content", "template", "domain")


class LeakError(UsageError):
    """The evaluation set overlaps the training set (content, template or domain) or its tools spell the plan."""


def _canon(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items())}
    return value


def fingerprint(task: Task) -> str:
    """sha256 (hex) of the task's content: instruction, workflow (tool and arguments per step), hidden facts
    (name and value) and offered tools (the set of names). Not the id, seed, slot or persona id."""
    content = {
        "instruction": task.instruction,
        "workflow": [[s.tool, s.arguments] for s in task.workflow],
        "hidden": sorted([f.name, f.value] for f in task.user_context),
        "tools": sorted(t.name for t in task.tools),
    }
    blob = json.dumps(_canon(content), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def template_of(task: Task) -> str:
    """The task's template (``provenance.template``, e.g. ``banking/transfer``), else ``domain/?``."""
    return task.provenance.template or f"{task.domain}/?"


def split(tasks: Sequence[Task], by: str, held_out: Iterable[str] = (), *, fraction: float = 0.25,
          seed: int = 0) -> tuple[list[Task], list[Task]]:
    """Split ``tasks`` into (train, eval) so that no domain (``by="domain"``) or template (``by="template"``)
    is on both sides.

    :param held_out: the domains or templates to evaluate on; default: a ``fraction`` of them drawn with
        ``seed`` (at least one).
    """
    if by not in ("domain", "template"):
        raise UsageError(f"split by {by!r}: use 'domain' or 'template'")
    key = (lambda t: t.domain) if by == "domain" else template_of
    groups = sorted({key(t) for t in tasks})
    chosen = set(held_out)
    unknown = chosen - set(groups)
    if unknown:
        raise UsageError(f"held-out {by}(s) {sorted(unknown)} not among the tasks' {by}s {groups}")
    if not chosen:
        if len(groups) < 2:
            raise UsageError(f"cannot split by {by}: the tasks have only {groups}")
        chosen = set(random.Random(seed).sample(groups, max(1, round(fraction * len(groups)))))
    return [t for t in tasks if key(t) not in chosen], [t for t in tasks if key(t) in chosen]


def plan_in_tools(task: Task) -> bool | None:
    """Whether the offered tools begin with exactly the gold tools (the tool list is the plan); None when it
    cannot tell (fewer than two gold tools, or no other tool offered)."""
    gold = list(dict.fromkeys(s.tool for s in task.workflow if s.tool))
    if len(gold) < 2 or len(task.tools) <= len(gold):
        return None
    return {t.name for t in task.tools[: len(gold)]} == set(gold)


def check_heldout(train: Sequence[Task], evaluation: Sequence[Task], split: str = "content") -> dict[str, Any]:
    """Check that ``evaluation`` is held out from ``train`` under protocol ``split`` (see the module
    docstring) and return what was checked.

    :raises LeakError: one line naming the first overlap found and how large it is.
    """
    if split not in SPLITS:
        raise UsageError(f"--split {split!r}: use one of {list(SPLITS)}")
    if not train or not evaluation:
        raise UsageError(f"the leak check needs tasks on both sides (train {len(train)}, eval {len(evaluation)})")
    prints = {fingerprint(t): t for t in train}
    same = [t for t in evaluation if fingerprint(t) in prints]
    if same:
        t = same[0]
        raise LeakError(f"{len(same)} of {len(evaluation)} evaluation tasks have the content of a training task "
                        f"(e.g. eval {t.id} = train {prints[fingerprint(t)].id}: {t.instruction[:80]!r}); "
                        "draw the evaluation set from other templates or domains")
    report: dict[str, Any] = {"split": split, "train_tasks": len(train), "eval_tasks": len(evaluation),
                              "content_overlap": 0}
    if split in ("template", "domain"):
        key = template_of if split == "template" else (lambda t: t.domain)
        shared = sorted({key(t) for t in train} & {key(t) for t in evaluation})
        if shared:
            n = sum(key(t) in shared for t in evaluation)
            raise LeakError(f"{n} of {len(evaluation)} evaluation tasks come from a {split} the training set has "
                            f"({', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''}); a {split} split must not "
                            "share any")
        report[f"{split}_overlap"] = 0
    verdicts = [v for v in (plan_in_tools(t) for t in evaluation) if v is not None]
    spelled = sum(verdicts)
    if len(verdicts) >= 3 and spelled * 2 >= len(verdicts):
        raise LeakError(f"in {spelled} of {len(verdicts)} evaluation tasks the offered tools begin with exactly the "
                        "gold tools: the tool list spells out the plan; offer the tools in a shuffled order")
    report["plan_in_tools"] = f"{spelled}/{len(verdicts)}"
    return report
