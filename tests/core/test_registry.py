"""Plugin loading: built-ins via entry points, --plugin modules, and clear errors for broken plugins."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from synthagent.core.errors import ConfigError, PluginLoadError, UnknownImplementationError
from synthagent.core.hookspecs import HOOK_KINDS
from synthagent.core.registry import load_plugins

OFF = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("tp_")]:
        del sys.modules[name]


def write(dir_: Path, name: str, body: str) -> None:
    (dir_ / f"{name}.py").write_text(textwrap.dedent(body))


def test_builtins_register_through_the_distribution_entry_points() -> None:
    p = load_plugins(environ=OFF)
    names = {kind: p.registry(kind).names() for kind in HOOK_KINDS}
    assert "offline-domains" in names["generator"] and "oracle" in names["llm"] and "sqlite" in names["tools"]
    sources = {entry["source"] for entry in p.loaded}
    assert sources == {"builtin"}
    assert all(entry["version"] not in ("", "unknown") for entry in p.loaded)


def test_unknown_name_lists_known_ones_with_hint() -> None:
    p = load_plugins(environ=OFF)
    with pytest.raises(UnknownImplementationError) as err:
        p.registry("generator").get("offline-domain")
    assert "known: bfcl-multi-turn, graph-domains, offline-domains, persona-fuzzy" in str(err.value)
    assert "Did you mean 'offline-domains'" in str(err.value)


def test_plugin_module_by_path_registers(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_good", """
        from synthagent.core.hookspecs import hookimpl
        __version__ = "1.2.3"
        class Gen:
            def __init__(self, flavour="plain"):
                self.flavour = flavour
        @hookimpl
        def synth_register_task_generators(register):
            register("tp-gen", Gen, description="test")
    """)
    p = load_plugins(["tp_good"], environ=OFF)
    impl = p.registry("generator").get("tp-gen")
    assert (impl.plugin, impl.version) == ("tp_good", "1.2.3")
    assert impl.create({"flavour": "x"}).flavour == "x"
    with pytest.raises(ConfigError, match="unknown option 'flavor'.*Did you mean 'flavour'"):
        impl.create({"flavor": "x"})


def test_plugin_that_raises_on_import_is_named(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_broken", "raise RuntimeError('boom at import')\n")
    with pytest.raises(PluginLoadError, match=r"plugin 'tp_broken' failed to import .*RuntimeError: boom at import"):
        load_plugins(["tp_broken"], environ=OFF)


def test_missing_plugin_module_is_named() -> None:
    with pytest.raises(PluginLoadError, match="tp_does_not_exist"):
        load_plugins(["tp_does_not_exist"], environ=OFF)


def test_duplicate_name_names_both_plugins(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_dup", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_user_simulators(register):
            register("rule", object)
    """)
    with pytest.raises(PluginLoadError, match="'rule' is registered twice: by plugin 'simulators.users.rule' and by plugin 'tp_dup'"):
        load_plugins(["tp_dup"], environ=OFF)


def test_unknown_hook_name_fails_loudly(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_typo", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_task_generator(register):
            pass
    """)
    with pytest.raises(PluginLoadError, match="unknown hook"):
        load_plugins(["tp_typo"], environ=OFF)


def test_plugin_failing_inside_its_hook_is_named(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_hookfail", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_executors(register):
            raise ValueError("no executors today")
    """)
    with pytest.raises(PluginLoadError, match="'tp_hookfail' failed in synth_register_executors: ValueError"):
        load_plugins(["tp_hookfail"], environ=OFF)


def test_environment_variable_loads_plugins(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_env", """
        from synthagent.core.hookspecs import hookimpl
        @hookimpl
        def synth_register_mapping_stores(register):
            register("tp-store", dict)
    """)
    p = load_plugins(environ={**OFF, "SYNTHAGENT_PLUGINS": "tp_env"})
    assert "tp-store" in p.registry("mapping")
