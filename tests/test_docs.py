"""Every hook, CLI command and option is documented (datasette's test_docs idea)."""

from __future__ import annotations

from pathlib import Path

from synthagent.core import hookspecs
from synthagent.core.cli import cli

REPO = Path(__file__).resolve().parents[1]


def _hookspec_functions() -> list:
    """Every function pluggy treats as a hookspec of the project (its marker attribute), not a hand list."""
    marker = f"{hookspecs.PROJECT}_spec"
    return [fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, marker)]


def test_every_hook_is_documented_with_an_example() -> None:
    text = (REPO / "docs/plugins.md").read_text()
    specs = _hookspec_functions()
    assert len(specs) >= 10
    for fn in specs:
        hook = fn.__name__
        assert f"### {hook}" in text, f"docs/plugins.md lacks a section for {hook}"
        assert fn.__doc__ and "Example" in fn.__doc__, f"{hook} has no example in its docstring"
        kind = getattr(fn, "synth_hook", None)
        assert kind is not None, f"{hook} is a hookspec without @registers(kind, protocol): it would not be loaded"
        assert hookspecs.HOOK_KINDS[kind.kind] == hook
    assert len(hookspecs.HOOK_KINDS) == len(specs)


def test_every_cli_option_is_in_the_cli_reference() -> None:
    import click

    text = (REPO / "docs/cli.md").read_text()
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)  # built-in commands and those the built-in plugins add
    assert "graph" in names and "run" in names
    for name in names:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f"synth {name}" in text
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, f"docs/cli.md lacks {opt} of synth {name}"


def test_readme_install_and_test_commands_are_what_ci_runs() -> None:
    import re

    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    readme_lines = {line.strip() for block in re.findall(r"```bash\n(.*?)```", readme, re.S)
                    for line in block.splitlines()}
    commands = [line.strip() for line in ci[ci.index("pip install -e ."):].splitlines()
                if line.strip() and not line.startswith("#") and line.strip() != "synth --version"]
    assert commands[0] == "pip install -e ." and commands[-1] == "python -m pytest -n 2"
    for line in commands:
        assert line in readme_lines, f"{line!r} from .ci/run is not a README command"
    apt = [line for line in commands if "apt-get" in line]
    assert all("chromium" in line and "redis" not in line for line in apt), "only chromium comes from apt"


def test_the_readme_plugin_runs(synth, tmp_path: Path) -> None:
    import json
    import re

    readme = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(# my_plugin\.py.*?)```", readme, re.S).group(1)
    (tmp_path / "my_plugin.py").write_text(code)
    result = synth(["run", "-q", "--plugin", "my_plugin", "--set", "scorer=state-only", "--tasks", "8",
                    "--out", str(tmp_path / "runs"), "--name", "r"], env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    scores = [json.loads(line) for line in (tmp_path / "runs/r/scores.jsonl").read_text().splitlines()]
    assert len(scores) == 8 and {s["scorer"] for s in scores} == {"state-only"}
    assert all(s["total"] == 1.0 for s in scores)
