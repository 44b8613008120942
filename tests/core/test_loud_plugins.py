"""Plugin mistakes fail loudly, naming the kind, the name and the plugin (issue 24, point 3).

Each test sets up the mistake that used to pass without a word (a hook that returns its implementations, an
undecorated hook, a misspelled config table or pack key, an option of the wrong type or NaN, a component
without its protocol's method, output of the wrong type, an impossible combination) and checks the loud
failure, with real parts: real plugin modules on disk, the real SQLite sandbox, real domain files.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.config import load_config
from synthagent.core.errors import ConfigError, DomainError, PluginError, PluginLoadError, PluginWarning
from synthagent.core.models import Task
from synthagent.core.pipeline import Pipeline
from synthagent.core.protocols import GenerationContext
from synthagent.core.registry import load_plugins
from synthagent.core.runtime import Runtime, plugin_bug

OFF = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("tp_loud")]:
        del sys.modules[name]


def write(dir_: Path, name: str, body: str) -> None:
    (dir_ / f"{name}.py").write_text(textwrap.dedent(body))


# -- 1. hooks that register nothing ---------------------------------------------------------------------------

def test_a_hook_that_returns_its_implementations_instead_of_registering_is_an_error(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_loud_returns", """
        from synthagent.core.hookspecs import hookimpl
        class Gen:
            async def generate(self, ctx):
                yield None
        @hookimpl
        def synth_register_task_generators(register):
            return [("tp-returned", Gen)]
    """)
    with pytest.raises(PluginLoadError) as err:
        load_plugins(["tp_loud_returns"], environ=OFF)
    message = str(err.value)
    assert "plugin 'tp_loud_returns'" in message and "synth_register_task_generators" in message
    assert "returned a list and registered nothing" in message and "call register(" in message


def test_a_hook_that_registers_and_also_returns_something_is_warned(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_loud_both", """
        from synthagent.core.hookspecs import hookimpl
        class Gen:
            async def generate(self, ctx):
                yield None
        @hookimpl
        def synth_register_task_generators(register):
            register("tp-both", Gen)
            return ["tp-both"]
    """)
    with pytest.warns(PluginWarning, match="plugin 'tp_loud_both': synth_register_task_generators returned a list"):
        plugins = load_plugins(["tp_loud_both"], environ=OFF)
    assert "tp-both" in plugins.registry("generator")  # what it registered is kept


def test_a_hook_function_without_hookimpl_is_an_error_naming_plugin_and_hook(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_loud_undecorated", """
        class Gen:
            async def generate(self, ctx):
                yield None
        def synth_register_task_generators(register):   # no @hookimpl: pluggy never calls it
            register("tp-undecorated", Gen)
    """)
    with pytest.raises(PluginLoadError) as err:
        load_plugins(["tp_loud_undecorated"], environ=OFF)
    message = str(err.value)
    assert "plugin 'tp_loud_undecorated'" in message and "synth_register_task_generators" in message
    assert "not decorated with @hookimpl" in message


def test_a_misspelled_undecorated_hook_is_warned_with_the_close_hook(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_loud_misspelled", """
        def synth_register_task_generator(register):   # singular, and no @hookimpl
            pass
    """)
    with pytest.warns(PluginWarning) as caught:
        load_plugins(["tp_loud_misspelled"], environ=OFF)
    message = str(caught[0].message)
    assert "plugin 'tp_loud_misspelled'" in message and "synth_register_task_generator " in message
    assert "Did you mean 'synth_register_task_generators'?" in message


def test_the_builtins_load_without_a_plugin_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        load_plugins(environ=OFF)


# -- 2. unknown config tables and pack keys -------------------------------------------------------------------

def test_an_unknown_plugin_table_is_refused_with_did_you_mean(plugin_dir: Path, tmp_path: Path) -> None:
    write(plugin_dir, "tp_loud_goals", """
        from synthagent.core.hookspecs import hookimpl
        class Goals:
            def __init__(self, path=""):
                self.path = path
            async def generate(self, ctx):
                if False:
                    yield None
        @hookimpl
        def synth_register_task_generators(register):
            register("csv-goals", Goals)
    """)
    cfg = tmp_path / "synth.toml"
    cfg.write_text('generator = "csv-goals"\n\n[plugins.csv-gaols]\npath = "goals.csv"\n')
    config = load_config(cfg)  # the config parser knows no plugin: the table is accepted here ...
    assert config.plugins == {"csv-gaols": {"path": "goals.csv"}}
    with pytest.raises(ConfigError) as err:  # ... and refused where the plugins are known, before any work
        Runtime(config, load_plugins(["tp_loud_goals"], environ=OFF))
    assert "unknown plugin table 'csv-gaols'; did you mean 'csv-goals'?" in str(err.value)


def test_a_kind_sub_table_of_the_wrong_kind_is_refused(plugins: Any) -> None:
    config = load_config(None, ["plugins.sqlite.user.timeout_s=2"])  # sqlite is tools and mapping, not a user
    with pytest.raises(ConfigError, match="'plugins.sqlite.user': 'sqlite' is not a user implementation"):
        Runtime(config, plugins)


def _pack_with(tmp_path: Path, edit: Any) -> Path:
    from synthagent.plugins.generators.offline_domains.pack import builtin_domains_dir

    folder = tmp_path / "pack"
    folder.mkdir()
    raw = json.loads((builtin_domains_dir() / "banking.json").read_text())
    edit(raw)
    (folder / "banking.json").write_text(json.dumps(raw))
    return folder


def test_misspelled_pack_keys_are_refused_with_did_you_mean(tmp_path: Path) -> None:
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
    from synthagent.plugins.generators.offline_domains.pack import problems_of

    def misspell(raw: dict[str, Any]) -> None:
        with_answer = next(s for s in raw["scenarios"] if s.get("answer"))
        with_answer["answr"] = with_answer.pop("answer")  # before: the scenario silently lost its answer values
        raw["scenarios"][0]["joins"] = raw["scenarios"][0].pop("join", {})

    folder = _pack_with(tmp_path, misspell)
    with pytest.raises(DomainError) as err:
        OfflineDomainsGenerator(domains_dir=str(folder))
    problems = "\n".join(problems_of(err.value))
    assert "unknown scenario key 'answr'; did you mean 'answer'?" in problems
    assert "unknown scenario key 'joins'; did you mean 'join'?" in problems
    assert "banking.json: $.scenarios[" in problems  # the file and the JSON path


def test_the_builtin_pack_has_no_unknown_key() -> None:
    from synthagent.plugins.generators.offline_domains.pack import load_pack

    assert len(load_pack(None, [])) >= 8


def test_a_misspelled_effect_field_in_an_api_pool_gets_did_you_mean() -> None:
    from synthagent.plugins.generators.graph_domains.pool import check_effect

    problems = check_effect({"kind": "read", "entity": "order", "key": "order_id", "wher": {"id": "order_id"}},
                            {"id": {"type": "string"}}, "pool.jsonl:1")
    assert any("x-effect.wher is not an effect field; did you mean 'where'?" in p for p in problems), problems


# -- 3. option types and finiteness from the declarations -----------------------------------------------------

@pytest.mark.parametrize("value,wanted", [("nan", "must be a positive finite number, got nan"),
                                          ("-1", "must be a positive finite number, got -1"),
                                          ("inf", "must be a positive finite number, got inf"),
                                          ("0", "must be a positive finite number, got 0")])
def test_a_sqlite_timeout_that_would_switch_the_time_limit_off_is_refused(plugins: Any, value: str,
                                                                            wanted: str) -> None:
    from synthagent.plugins.simulators.tools.sqlite import SQLiteToolSimulator

    if value in ("nan", "-1"):  # the silent behaviour: the factory takes it, and the time limit is gone
        sim = SQLiteToolSimulator(timeout_s=float(value))
        assert not sim.timeout_s > 0
    config = load_config(None, [f"plugins.sqlite.tools.timeout_s={value}"])
    with pytest.raises(ConfigError) as err:
        Runtime(config, plugins)
    message = str(err.value)
    assert message.startswith(f"plugin option plugins.sqlite.tools.timeout_s: {wanted}")
    assert "tools 'sqlite'" in message and "plugin 'simulators.tools.sqlite'" in message


def test_a_valid_sqlite_timeout_still_bounds_a_real_statement(plugins: Any) -> None:
    """The option that passes the check reaches the real sandbox and stops a pathological statement."""
    import sqlite3

    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator
    from synthagent.plugins.simulators.tools.sqlite import ToolExecutionError

    runtime = Runtime(load_config(None, ["plugins.sqlite.tools.timeout_s=0.2"]), plugins)
    task = next(t for t in OfflineDomainsGenerator(domains=["banking"]).sample(3, seed=0))
    session: Any = asyncio.run(runtime.components.tools.start(task, 0))
    assert session.db.timeout_s == 0.2
    table = task.initial_state.tables[0].name  # type: ignore[union-attr]
    slow = "SELECT count(*) FROM " + ", ".join(f"{table} a{i}" for i in range(40))
    start = time.monotonic()
    with pytest.raises(ToolExecutionError) as err:
        session.db._guarded(slow, [], table, sqlite3.SQLITE_SELECT)
    assert err.value.code == "timeout" and time.monotonic() - start < 5
    asyncio.run(session.aclose())


@pytest.mark.parametrize("setting,needle", [
    ('plugins.offline-domains.max_hidden="two"', "plugin option plugins.offline-domains.max_hidden: must be an "
                                                 "integer, got 'two' (generator 'offline-domains'"),
    ("plugins.offline-domains.domains=\"banking\"", "plugin option plugins.offline-domains.domains: must be a list"),
    ("plugins.offline-domains.domains=[1, 2]", "plugins.offline-domains.domains: must be a list of strings"),
    ("plugins.openai.backoff_s=nan", "plugin option plugins.openai.backoff_s: must be a finite number >= 0, got nan"),
    ("plugins.oracle.vary=\"yes\"", "plugin option plugins.oracle.vary: must be true or false, got 'yes'"),
])
def test_option_types_are_checked_against_the_declarations(plugins: Any, setting: str, needle: str) -> None:
    extra = ["llm.backend=openai", "llm.base_url=http://127.0.0.1:9/v1", "llm.model=m"] if "openai" in setting else []
    config = load_config(None, [setting, *extra])
    with pytest.raises(ConfigError) as err:
        Runtime(config, plugins)
    assert needle in str(err.value)


def test_a_third_party_option_declared_positive_is_checked(plugin_dir: Path) -> None:
    write(plugin_dir, "tp_loud_bounds", """
        from synthagent.core.hookspecs import hookimpl
        class Gen:
            option_bounds = {"batch": "positive"}
            def __init__(self, batch: int = 4, label: str = "x", ratio=0.5):
                self.batch = batch
            async def generate(self, ctx):
                if False:
                    yield None
        @hookimpl
        def synth_register_task_generators(register):
            register("tp-bounds", "tp_loud_bounds:Gen")
    """)
    plugins = load_plugins(["tp_loud_bounds"], environ=OFF)
    impl = plugins.registry("generator").get("tp-bounds")
    with pytest.raises(ConfigError, match=r"plugins.tp-bounds.batch: must be a positive finite number, got 0"):
        impl.create({"batch": 0})
    with pytest.raises(ConfigError, match=r"plugins.tp-bounds.batch: must be an integer, got 2.5"):
        impl.create({"batch": 2.5})
    with pytest.raises(ConfigError, match=r"plugins.tp-bounds.ratio: must be a number, got 'half'"):
        impl.create({"ratio": "half"})  # unannotated: the type of its default
    assert impl.create({"batch": 8, "label": "y", "ratio": 1}).batch == 8


# -- 4. protocols at build, outputs where the pipeline receives them ------------------------------------------

def _plugin(dir_: Path, name: str, hook: str, impl_name: str, body: str) -> None:
    write(dir_, name, f"""
        from synthagent.core.hookspecs import hookimpl
        {textwrap.indent(textwrap.dedent(body), '        ').strip()}
        @hookimpl
        def {hook}(register):
            register("{impl_name}", Impl)
    """)


def test_a_generator_without_generate_is_refused_before_the_run_directory_exists(plugin_dir: Path,
                                                                                  tmp_path: Path) -> None:
    _plugin(plugin_dir, "tp_loud_nogen", "synth_register_task_generators", "no-generate", """
        class Impl:
            def make(self, ctx):   # the wrong name: nothing calls it
                return []
    """)
    config = load_config(None, ["generator=no-generate", "tasks=2"])
    with pytest.raises(PluginLoadError) as err:
        Pipeline(config, load_plugins(["tp_loud_nogen"], environ=OFF))
    message = str(err.value)
    assert "generator 'no-generate' (plugin 'tp_loud_nogen') does not implement TaskGenerator" in message
    assert "no callable `generate`" in message
    assert list(tmp_path.glob("runs*")) == []


def _run(config_items: list[str], extra: list[str], root: Path) -> dict[str, Any]:
    pipeline = Pipeline(load_config(None, config_items), load_plugins(extra, environ=OFF))
    pipeline.open_store(root, resume=False)
    return asyncio.run(pipeline.run())


def test_a_generator_yielding_a_dict_is_a_plugin_error_naming_the_item(plugin_dir: Path, tmp_path: Path) -> None:
    _plugin(plugin_dir, "tp_loud_dictgen", "synth_register_task_generators", "dict-gen", """
        class Impl:
            async def generate(self, ctx):
                yield {"id": "t1", "instruction": "do it"}
    """)
    with pytest.raises(PluginError) as err:
        _run(["generator=dict-gen", "tasks=1"], ["tp_loud_dictgen"], tmp_path / "r")
    message = str(err.value)
    assert "generator 'dict-gen' (plugin 'tp_loud_dictgen') yielded a dict" in message
    assert "item 0 of the generation, not a synthagent.core.models.Task" in message


def test_a_scorer_returning_a_float_is_a_plugin_error_naming_the_trajectory(plugin_dir: Path, tmp_path: Path) -> None:
    _plugin(plugin_dir, "tp_loud_floatscore", "synth_register_reward_scorers", "float-scorer", """
        class Impl:
            async def score(self, task, rubric, trajectory):
                return 1.0
    """)
    with pytest.raises(PluginError) as err:
        _run(["scorer=float-scorer", "tasks=2"], ["tp_loud_floatscore"], tmp_path / "r")
    message = str(err.value)
    assert "scorer 'float-scorer' (plugin 'tp_loud_floatscore') returned a float (1.0)" in message
    assert "when scoring trajectory traj-" in message or "when scoring trajectory " in message
    assert "not a synthagent.core.models.Score" in message


def test_a_tool_simulator_bug_is_a_plugin_error_not_an_infrastructure_failure(plugin_dir: Path,
                                                                               tmp_path: Path) -> None:
    _plugin(plugin_dir, "tp_loud_buggytools", "synth_register_tool_simulators", "buggy-tools", """
        class Session:
            async def call(self, call):
                return {"rows": []}["rowz"]           # a KeyError: a bug in the plugin
            def final_state(self):
                return None
            async def aclose(self):
                pass
        class Impl:
            async def start(self, task, seed):
                return Session()
    """)
    root = tmp_path / "r"
    with pytest.raises(PluginError) as err:
        _run(["tools=buggy-tools", "tasks=2", "simulate.retries=3"], ["tp_loud_buggytools"], root)
    message = str(err.value)
    assert "tools 'buggy-tools' (plugin 'tp_loud_buggytools') raised KeyError: 'rowz'" in message
    assert "during the rollout of task " in message and "not an infrastructure failure" in message
    assert "return {\"rows\": []}[\"rowz\"]" in err.value.details  # the plugin's traceback travels with it
    trajectories = root / "trajectories.jsonl"  # no infra_error record that --resume would retry forever
    assert not trajectories.exists() or all(
        json.loads(line)["termination"] != "infra_error" for line in trajectories.read_text().splitlines())


def test_a_policy_backend_bug_is_a_plugin_error_not_an_infrastructure_failure(plugin_dir: Path,
                                                                               tmp_path: Path) -> None:
    """The run's own LLM backend plays the policy: a bug in its ``chat`` was an ``infra_error`` trajectory,
    retried on every resume."""
    _plugin(plugin_dir, "tp_loud_buggyllm", "synth_register_llm_backends", "buggy-llm", """
        class Impl:
            name = "buggy-llm"
            async def chat(self, request):
                return {"choices": []}["choice"]      # a KeyError: a bug in the plugin
    """)
    root = tmp_path / "r"
    with pytest.raises(PluginError) as err:
        _run(["llm.backend=buggy-llm", "tasks=2", "simulate.retries=3"], ["tp_loud_buggyllm"], root)
    message = str(err.value)
    assert "llm 'buggy-llm' (plugin 'tp_loud_buggyllm') raised KeyError: 'choice'" in message, message
    assert "during the rollout of task " in message and "not an infrastructure failure" in message
    assert 'return {"choices": []}["choice"]' in err.value.details
    trajectories = root / "trajectories.jsonl"
    assert not trajectories.exists() or all(
        json.loads(line)["termination"] != "infra_error" for line in trajectories.read_text().splitlines())


@pytest.mark.parametrize("body, said", [
    ("def build(self, task, demonstrations):\n    return {'subgoals': []}", "returned a dict ({'subgoals': []})"),
    ("async def build(self, task, demonstrations):\n    return 0.5", "returned a float (0.5)"),
    ("def build(self, task, demonstrations):\n    return task.nope", "raised AttributeError"),
])
def test_a_rubric_builder_mistake_in_the_pipeline_is_a_plugin_error_naming_the_task(
        plugin_dir: Path, tmp_path: Path, body: str, said: str) -> None:
    name = f"tp_loud_rubric_{abs(hash(body)) % 10**6}"
    _plugin(plugin_dir, name, "synth_register_rubric_builders", "bad-rubric",
            "class Impl:\n" + textwrap.indent(body, "    "))
    with pytest.raises(PluginError) as err:
        _run(["rubric=bad-rubric", "tasks=2"], [name], tmp_path / "r")
    message = str(err.value)
    assert f"rubric 'bad-rubric' (plugin '{name}') {said}" in message, message
    assert "the rubric of task " in message


def test_infrastructure_failures_are_not_plugin_bugs() -> None:
    from synthagent.core.engine import WorkerLostError
    from synthagent.core.errors import UsageError
    from synthagent.core.teacher import TeacherUnavailable
    from synthagent.plugins.backends.openai import LLMUnavailableError

    for exc in (ConnectionRefusedError(), TimeoutError(), LLMUnavailableError("x"), WorkerLostError("x"),
                TeacherUnavailable("x"), RuntimeError("x")):
        assert not plugin_bug(exc), exc
    for exc in (KeyError("k"), TypeError("t"), AttributeError("a"), ValueError("v"), UsageError("u")):
        assert plugin_bug(exc), exc


def test_the_checked_generation_passes_real_tasks_through(plugins: Any) -> None:
    runtime = Runtime(load_config(None, []), plugins)

    async def go() -> Any:
        return [t async for t in runtime.generate(GenerationContext(count=2, seed=0))]

    tasks = asyncio.run(go())
    assert len(tasks) == 2 and all(isinstance(t, Task) for t in tasks)


# -- 5. impossible combinations -------------------------------------------------------------------------------

@pytest.mark.parametrize("settings,needle", [
    (["generator=persona-fuzzy", "llm.backend=openai", "llm.base_url=http://127.0.0.1:9/v1", "llm.model=m"],
     "generator='persona-fuzzy' cannot run with tools='sqlite'"),
    (["user=llm"], "llm.backend='oracle' cannot run with user='llm'"),
])
def test_impossible_combinations_are_refused_before_the_run_starts(plugins: Any, tmp_path: Path,
                                                                   settings: list[str], needle: str) -> None:
    config = load_config(None, settings)
    with pytest.raises(ConfigError) as err:
        Pipeline(config, plugins)
    assert needle in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_the_llm_user_with_its_own_backend_may_run_beside_the_oracle(plugins: Any) -> None:
    config = load_config(None, ["user=llm", "plugins.llm.user.backend=oracle"])
    Runtime(config, plugins)  # its own backend: the oracle as llm.backend is no longer the user's model


def test_a_declared_combination_check_of_the_wrong_shape_is_named(plugin_dir: Path) -> None:
    _plugin(plugin_dir, "tp_loud_combo", "synth_register_user_simulators", "combo-user", """
        class Impl:
            def incompatible_with(self, selected, components):
                return "tools"
            async def start(self, task, seed):
                return None
    """)
    with pytest.raises(PluginLoadError, match="user 'combo-user' declares an `incompatible_with` that returned"):
        Runtime(load_config(None, ["user=combo-user"]), load_plugins(["tp_loud_combo"], environ=OFF))


# -- 7 (point 5 of the issue). HTTP 401/403 from a real loopback server ---------------------------------------

@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_an_authentication_error_sent_once(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthagent.core.errors import AuthenticationError
    from synthagent.core.models import Message
    from synthagent.core.protocols import ChatRequest
    from synthagent.core.testing import ScriptedOpenAIServer
    from synthagent.plugins.backends.openai import OpenAIBackend

    monkeypatch.setenv("TP_KEY", "sk-wrong")
    with ScriptedOpenAIServer(faults={str(status): 1.0}) as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_env="TP_KEY", max_retries=6,
                                backoff_s=0.01)
        with pytest.raises(AuthenticationError) as err:
            asyncio.run(backend.chat(ChatRequest(messages=(Message("user", "hi"),))))
    assert sum(server.served.values()) == 1  # not retried
    assert str(err.value) == (f"authentication failed (HTTP {status}) at {server.base_url}/chat/completions - check "
                              "llm.api_key_env (the key in $TP_KEY was refused)")
    assert backend.stats["auth_failed"] == 1 and backend.stats["retries"] == 0


def test_a_refused_key_stops_a_rollout_instead_of_recording_an_infra_error(plugins: Any) -> None:
    from synthagent.core.errors import AuthenticationError
    from synthagent.core.testing import ScriptedOpenAIServer
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    task = OfflineDomainsGenerator().sample(1, seed=0)[0]
    with ScriptedOpenAIServer(faults={"401": 1.0}) as server:
        runtime = Runtime(load_config(None, ["llm.backend=openai", f"llm.base_url={server.base_url}", "llm.model=m",
                                             "llm.api_key_env="]), plugins)
        with pytest.raises(AuthenticationError, match="no key was sent, llm.api_key_env is empty"):
            asyncio.run(runtime.rollout(task, 0))
        with pytest.raises(AuthenticationError):  # never turned into an infra_error record
            runtime.infra_failure(task.id, 0, AuthenticationError("x"))


def test_an_llm_setting_the_backend_does_not_take_is_said_not_dropped(synth, tmp_path: Path) -> None:
    """Issue 25: ``llm.base_url`` with the default ``oracle`` backend was silently dropped."""
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "w", "--tasks", "2",
                    "--set", 'llm.base_url="http://localhost:9/v1"'])
    assert result.returncode == 0, result.stderr
    assert "Warning: llm.base_url has no effect with llm.backend = 'oracle' (it takes [" in result.stderr
    quiet = synth(["run", "-q", "--out", str(tmp_path), "--name", "q", "--tasks", "2"])
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr  # defaults are nobody's mistake
