"""Config loading: TOML files, --set overrides, and clear errors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthagent.core.config import load_config, parse_set
from synthagent.core.errors import ConfigError


def test_defaults_are_the_offline_embedded_run() -> None:
    c = load_config()
    assert (c.generator, c.user, c.tools, c.llm.backend, c.tasks) == ("offline-domains", "rule", "sqlite", "oracle", 200)


def test_file_then_set_then_cli_shortcuts(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('seed = 3\ntasks = 10\n[simulate]\nmax_turns = 9\n[plugins.offline-domains]\ndomains = ["banking"]\n')
    c = load_config(f, ["simulate.max_turns=12", "llm.base_url=http://127.0.0.1:9/v1"], extra={"tasks": 4})
    assert (c.seed, c.tasks, c.simulate.max_turns, c.llm.base_url) == (3, 4, 12, "http://127.0.0.1:9/v1")
    assert c.options_for("offline-domains") == {"domains": ["banking"]}


@pytest.mark.parametrize("item,value", [("a=3", 3), ("a=true", True), ("a=x-y", "x-y"), ('a="3"', "3"), ("a=[1, 2]", [1, 2])])
def test_set_values_are_toml_or_plain_strings(item: str, value: object) -> None:
    assert parse_set(item) == (["a"], value)


@pytest.mark.parametrize("overrides,needle", [
    (["tasks=abc"], "'tasks' (from --set tasks=abc) must be an integer"),
    (["taks=3"], "Did you mean 'tasks'"),
    (["llm.modle=x"], "Did you mean 'model'"),
    (["tasks=0"], "must be positive"),
    (["simulate=3"], "must be a table"),
    (["noequals"], "must look like key=value"),
    (["simulate.concurrency=1.5"], "must be an integer"),
])
def test_bad_overrides_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert needle in str(err.value)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("tasks = [\n")
    with pytest.raises(ConfigError, match="malformed TOML in .*bad.toml"):
        load_config(f)


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[simulate]\nmax_turn = 3\n")
    with pytest.raises(ConfigError, match=r"simulate.max_turn' \(from .*c.toml\).*Did you mean 'max_turns'"):
        load_config(f)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_fingerprint_ignores_name_out_and_concurrency() -> None:
    a = load_config(None, ["name=a", "out=x", "simulate.concurrency=2"])
    b = load_config(None, ["name=b", "out=y", "simulate.concurrency=64"])
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != load_config(None, ["seed=9"]).fingerprint()


def test_options_can_be_qualified_by_kind_when_names_collide() -> None:
    c = load_config(None, ["plugins.sqlite.mapping.path=/tmp/m.sqlite", "plugins.sqlite.tools.timeout_s=2.0",
                           "plugins.oracle.corruption=nothing"])
    assert c.options_for("sqlite", "mapping") == {"path": "/tmp/m.sqlite"}
    assert c.options_for("sqlite", "tools") == {"timeout_s": 2.0}
    assert c.options_for("oracle", "llm") == {"corruption": "nothing"}
    assert c.options_for("sqlite", "user") == {}  # other kinds' sub-tables are not passed on
