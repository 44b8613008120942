"""``python -m synthagent.plugins.generators.offline_domains check [DIR]``: validate a domain pack and print stats."""

from __future__ import annotations

import sys
from pathlib import Path

from synthagent.core.errors import DomainError
from synthagent.plugins.generators.offline_domains.pack import anchor_rows, builtin_domains_dir, load_domain, problems_of


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
        print(f"ok    {path.name}: {len(domain.state.tables)} tables, {rows} rows, {len(domain.tools)} tools, "
              f"{len(domain.scenarios)} scenarios, {anchors} anchor rows")
    print(f"{total_tools} tools in valid domains; {failed} invalid file(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
