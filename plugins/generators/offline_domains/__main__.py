"""``python -m synthagent.plugins.generators.offline_domains check [DIR]``: validate a domain pack and print stats."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from synthagent.core.errors import DomainError
from synthagent.plugins.generators.offline_domains.pack import (
    Rejected,
    anchor_rows,
    builtin_domains_dir,
    instantiate,
    load_domain,
    problems_of,
)


def _needed_facts(domain: Any) -> tuple[int, int, int]:
    """(hidden-fact choices the generator may make, choices with an unneeded fact that the user states
    instead, choices that leave the task nothing to ask), over the first anchor row of each scenario."""
    choices = stated = bare = 0
    for scenario in domain.scenarios:
        rows = anchor_rows(domain, scenario)[:1]
        for k in range(1, min(3, len(scenario.hideable)) + 1):
            for hidden in itertools.combinations(scenario.hideable, k):
                for row in rows:
                    try:
                        task = instantiate(domain, scenario, row, hidden=list(hidden), seed=0, generator="check")
                    except Rejected as exc:
                        choices += exc.reason == "nothing_to_ask"
                        bare += exc.reason == "nothing_to_ask"
                        continue
                    choices += 1
                    stated += len(task.user_context) < len(hidden)
    return choices, stated, bare


def main(argv: list[str]) -> int:
    """Validate every domain file of a folder; exit 1 when any is invalid."""
    if not argv or argv[0] != "check":
        print("usage: python -m synthagent.plugins.generators.offline_domains check [DIR]", file=sys.stderr)
        return 2
    folder = Path(argv[1]) if len(argv) > 1 else builtin_domains_dir()
    failed = 0
    total_tools = 0
    for path in sorted(folder.glob("*.json")):
        try:
            domain = load_domain(path, check_anchors=None)
        except DomainError as exc:
            failed += 1
            for problem in problems_of(exc):
                print(f"ERROR {problem}")
            continue
        rows = sum(len(r) for r in domain.state.rows.values())
        anchors = sum(len(anchor_rows(domain, s)) for s in domain.scenarios)
        total_tools += len(domain.tools)
        choices, stated, bare = _needed_facts(domain)
        print(f"ok    {path.name}: {len(domain.state.tables)} tables, {rows} rows, {len(domain.tools)} tools, "
              f"{len(domain.scenarios)} scenarios, {anchors} anchor rows; of {choices} hidden-fact choices, "
              f"{stated} hide a fact the agent does not need (the user states it instead) and {bare} leave "
              f"nothing to ask (the generator draws again)")
    print(f"{total_tools} tools in valid domains; {failed} invalid file(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
