"""The typed plugin contract: hook kinds from the hookspecs, lazy import-string factories, plugin commands."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from synthagent.core import hookspecs
from synthagent.core.errors import ConfigError, PluginLoadError
from synthagent.core.registry import builtin_modules, load_plugins

OFF = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("tc_")]:
        del sys.modules[name]


def write(dir_: Path, name: str, body: str) -> None:
    (dir_ / f"{name}.py").write_text(textwrap.dedent(body))


def test_hook_kinds_are_derived_from_the_hookspec_functions() -> None:
    marker = f"{hookspecs.PROJECT}_spec"
    specs = {name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, marker)}
    assert set(hookspecs.HOOK_KINDS.values()) == specs
    assert hookspecs.HOOK_KINDS["generator"] == "synth_register_task_generators"
    assert hookspecs.HOOK_KINDS[hookspecs.COMMAND_KIND] == "synth_register_commands"
    from synthagent.core.protocols import TaskGenerator

    assert hookspecs.synth_register_task_generators.synth_hook.protocol is TaskGenerator
    # every kind has a registry, so a new spec is loaded without any other list to update
    assert set(load_plugins(environ=OFF).registries) == set(hookspecs.HOOK_KINDS)


def test_a_kind_declared_twice_is_refused() -> None:
    @hookspecs.registers("generator", object)
    def synth_register_more_generators(register: object) -> None:
        """Example: none."""

    hookspecs.synth_register_more_generators = synth_register_more_generators  # type: ignore[attr-defined]
    try:
        with pytest.raises(RuntimeError, match="declared twice"):
            hookspecs.hook_specs()
    finally:
        del hookspecs.synth_register_more_generators  # type: ignore[attr-defined]


def test_lazy_factory_is_listed_without_import_and_checked_when_built(plugin_dir: Path) -> None:
    write(plugin_dir, "tc_lazy", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_task_generators(register):
            register("tc-gen", "tc_lazy_impl:Gen", description="lazy")
    """)
    write(plugin_dir, "tc_lazy_impl", """
        class Gen:
            def __init__(self, flavour="plain"):
                self.flavour = flavour
    """)
    p = load_plugins(["tc_lazy"], environ=OFF)
    rows = [r for r in p.describe() if r["name"] == "tc-gen"]
    assert rows == [{"kind": "generator", "name": "tc-gen", "plugin": "tc_lazy", "version": "unknown",
                     "description": "lazy"}]
    impl = p.registry("generator").get("tc-gen")
    assert impl.lazy and "tc_lazy_impl" not in sys.modules
    assert impl.create({"flavour": "spicy"}).flavour == "spicy"
    assert "tc_lazy_impl" in sys.modules
    with pytest.raises(ConfigError, match=r"unknown option 'flavor'.*accepts \['flavour'\].*Did you mean 'flavour'"):
        impl.create({"flavor": "x"})


@pytest.mark.parametrize(("target", "message"), [
    ("tc_missing_mod:Gen", r"generator 'tc-bad' of plugin 'tc_badlazy': 'tc_missing_mod:Gen' does not resolve: "
                           r"module 'tc_missing_mod' failed to import"),
    ("json:NoSuchThing", r"'json:NoSuchThing' does not resolve: 'json' has no attribute 'NoSuchThing'"),
    ("json:__doc__", r"resolves to str, not a factory"),
])
def test_lazy_factory_that_does_not_resolve_names_the_plugin(plugin_dir: Path, target: str, message: str) -> None:
    write(plugin_dir, "tc_badlazy", f"""
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_task_generators(register):
            register("tc-bad", {target!r})
    """)
    impl = load_plugins(["tc_badlazy"], environ=OFF).registry("generator").get("tc-bad")
    with pytest.raises(PluginLoadError, match=message):
        impl.create({})


def test_malformed_import_string_fails_at_load(plugin_dir: Path) -> None:
    write(plugin_dir, "tc_malformed", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_reward_scorers(register):
            register("tc-scorer", "tc_module.Scorer")
    """)
    with pytest.raises(PluginLoadError, match=r"plugin 'tc_malformed' registered scorer 'tc-scorer' with a bad "
                                              r"import string 'tc_module.Scorer': expected 'package.module:Attr'"):
        load_plugins(["tc_malformed"], environ=OFF)


def test_registering_a_non_callable_fails_at_load(plugin_dir: Path) -> None:
    write(plugin_dir, "tc_noncallable", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_user_simulators(register):
            register("tc-user", 42)
    """)
    with pytest.raises(PluginLoadError, match="registered user 'tc-user' with int, not a factory"):
        load_plugins(["tc_noncallable"], environ=OFF)


def test_builtin_plugins_come_from_pyproject_when_not_installed() -> None:
    installed = {ep.name: ep.value for ep in metadata.entry_points(group=hookspecs.PROJECT)
                 if ep.dist is not None and ep.dist.name == "synthagent"}
    assert dict(builtin_modules()) == installed and len(installed) >= 15


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_checks_what_a_plugin_registers(tmp_path: Path) -> None:
    tree = tmp_path / "tree" / "synthagent"
    tree.mkdir(parents=True)
    (tree / "core").symlink_to(REPO / "core")
    (tree / "plugins").symlink_to(REPO / "plugins")
    (tmp_path / "tc_typed.py").write_text(textwrap.dedent("""
        from collections.abc import AsyncIterator
        from synthagent.core.hookspecs import hookimpl
        from synthagent.core.models import Task
        from synthagent.core.protocols import GenerationContext, Register, TaskGenerator

        class Gen:
            def __init__(self, flavour: str = "plain") -> None:
                self.flavour = flavour
            async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
                if False:
                    yield

        class NotAGenerator:
            def run(self) -> None: ...

        @hookimpl
        def synth_register_task_generators(register: Register[TaskGenerator]) -> None:
            register("good", Gen, description="fine")
            register("lazy", "my_package.gen:Gen")
            register("bad", NotAGenerator)
    """))
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                             "--cache-dir", str(tmp_path / ".mypy"), "tc_typed.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MYPYPATH": str(tmp_path / "tree")})
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert "tc_typed.py:21:" in errors[0] and "NotAGenerator" in errors[0] and "TaskGenerator" in errors[0]


# --- plugin commands -------------------------------------------------------------------------------------

COMMAND_PLUGIN = """
    from synthagent.core.hookspecs import hookimpl
    @hookimpl
    def synth_register_commands(register):
        register("tc-hello", "tc_cmd_impl:hello", description="say hello")
"""
COMMAND_IMPL = """
    import click
    from synthagent.core.cli import guard
    from synthagent.core.errors import ConfigError

    @click.command()
    @click.option("--who", default="world")
    @guard
    def hello(who):
        if who == "nobody":
            raise ConfigError("--who: nobody is not a name")
        click.echo(f"hello {who}")
"""


def _cmd_env(tmp_path: Path, plugins: str = "tc_cmd") -> dict[str, str]:
    return {"PYTHONPATH": str(tmp_path), "SYNTHAGENT_PLUGINS": plugins}


def test_a_plugin_command_runs_and_is_listed_without_being_imported(synth, tmp_path: Path) -> None:
    write(tmp_path, "tc_cmd", COMMAND_PLUGIN)
    boom = "\nif __import__('os').environ.get('TC_BOOM'):\n    raise SystemExit('imported')\n"
    (tmp_path / "tc_cmd_impl.py").write_text(textwrap.dedent(COMMAND_IMPL) + boom)
    env = _cmd_env(tmp_path)
    ran = synth(["tc-hello", "--who", "tests"], env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello tests\n"
    bad = synth(["tc-hello", "--who", "nobody"], env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "Error: --who: nobody is not a name"
    listed = synth(["plugins", "--json"], env={**env, "TC_BOOM": "1"})  # importing the command would exit
    assert listed.returncode == 0, listed.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(listed.stdout)}
    assert rows[("command", "tc-hello")]["plugin"] == "tc_cmd"
    assert rows[("command", "graph")]["plugin"] == "generators.graph_domains"
    helped = synth(["--help"], env={**env, "TC_BOOM": "1"})
    assert helped.returncode == 0 and "Plugin commands" in helped.stdout and "synth plugins" in helped.stdout


def test_plugin_command_errors_are_one_line(synth, tmp_path: Path) -> None:
    write(tmp_path, "tc_cmd_clash", """
        import click
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_commands(register):
            register("run", click.Command("run"))
    """)
    write(tmp_path, "tc_cmd_notcmd", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_commands(register):
            register("tc-nope", "json:dumps")
    """)
    clash = synth(["tc-anything"], env=_cmd_env(tmp_path, "tc_cmd_clash"))
    assert clash.returncode == 2
    assert clash.stderr.strip() == ("Error: plugin 'tc_cmd_clash' registers command 'run', which is a built-in synth "
                                    "command; rename it")
    builtin = synth(["show", "--help"], env=_cmd_env(tmp_path, "tc_cmd_clash"))  # built-ins never load plugins
    assert builtin.returncode == 0 and "Usage: synth show" in builtin.stdout
    notcmd = synth(["tc-nope"], env=_cmd_env(tmp_path, "tc_cmd_notcmd"))
    assert notcmd.returncode == 2
    assert notcmd.stderr.strip() == "Error: command 'tc-nope' of plugin 'tc_cmd_notcmd' is function, not a click.Command"
    unknown = synth(["tc-unknown"])
    assert unknown.returncode == 2 and "No such command 'tc-unknown'" in unknown.stderr


def test_help_loads_no_plugin_and_no_heavy_library() -> None:
    code = textwrap.dedent("""
        import sys
        from synthagent.core.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        loaded = sorted(m for m in sys.modules if m.startswith(("synthagent.plugins", "pluggy", "langgraph", "torch",
                        "networkx", "numpy", "rich", "synthagent.core.registry", "synthagent.core.config",
                        "importlib.metadata")))
        print("LOADED", loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "LOADED []", result.stdout
    assert "synth run" in result.stdout


def test_synth_graph_comes_from_the_graph_domains_plugin(synth, tmp_path: Path) -> None:
    result = synth(["graph", "--embedding", "tfidf", "--json", "--seed", "0"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["embedding"] == "tfidf" and report["tools"] >= 300 and len(report["domains"]) >= 5
    helped = synth(["graph", "--help"])
    assert helped.returncode == 0
    for option in ("--pool", "--embedding", "--seed", "--png", "--json"):
        assert option in helped.stdout
    missing = synth(["graph", "--pool", str(tmp_path / "nope.json")])
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    core = "\n".join(p.read_text() for p in (REPO / "core").glob("*.py"))
    assert "graph_domains" not in core and "graph-domains\"" not in core
