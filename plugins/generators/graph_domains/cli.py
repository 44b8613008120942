"""``synth graph``: the tool graph of an API pool and its Louvain domains (environment scaling).

Registered by the graph-domains plugin through ``synth_register_commands`` as the lazy import string
``"synthagent.plugins.generators.graph_domains.cli:graph_cmd"``: ``synth --help`` does not import this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from synthagent.core.cli import guard

__all__ = ["graph_cmd"]


@click.command("graph")
@click.option("--pool", default="", help="An API pool: builtin (the default), bfcl (BFCL's function schemas) or a "
              "file or folder.")
@click.option("--embedding", type=click.Choice(["auto", "minilm", "tfidf"]), default="auto", show_default=True,
              help="How parameter descriptions are embedded.")
@click.option("--seed", type=int, default=0, show_default=True, help="Louvain seed.")
@click.option("--resolution", type=float, default=1.0, show_default=True,
              help="Louvain resolution (higher: more, smaller domains; 10 for pool bfcl).")
@click.option("--min-tools", type=int, default=4, show_default=True, help="Smallest community kept as a domain.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Also draw the graph, coloured by domain.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@guard
def graph_cmd(pool: str, embedding: str, seed: int, resolution: float, min_tools: int, png: Path | None,
              as_json: bool) -> None:
    """Build the tool dependency graph of an API pool and print its Louvain domains and modularity.

    This is what `synth run --set generator=graph-domains` uses; run it to inspect or tune a pool.
    """
    from synthagent.core.registry import Implementation
    from synthagent.plugins.generators.graph_domains import GraphDomainsGenerator

    # Built like a run builds it (options checked, errors as ConfigError), without loading every plugin.
    impl = Implementation("generator", "graph-domains", GraphDomainsGenerator, "generators.graph_domains", "", "")
    generator = impl.create({"pool": pool, "embedding": embedding, "resolution": resolution, "min_tools": min_tools})
    generator.discover(seed)
    report = generator.report()
    if png:
        generator.draw(png)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['tools']} tools -> {len(report['domains'])} domains, modularity "
                        f"{report['modularity']} ({report['embedding']}, threshold {report['threshold']})")
    for col in ("domain", "tools", "tables", "areas"):
        table.add_column(col)
    for d in report["domains"]:
        table.add_row(d["name"], str(d["tools"]), str(d["tables"]), ", ".join(f"{a}:{n}" for a, n in d["areas"].items()))
    Console().print(table)
    if png:
        Console().print(f"graph drawn to {png}")
