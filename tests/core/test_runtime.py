"""The Runtime: one owner of components and rollouts; capabilities checked once; records unchanged."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.capabilities import capabilities
from synthagent.core.config import RunConfig, config_from_dict, load_config
from synthagent.core.errors import ConfigError, PluginLoadError, RunDirectoryError
from synthagent.core.models import trajectory_id
from synthagent.core.runtime import Runtime
from synthagent.core.stages import PIPELINE
from synthagent.core.config import STAGES

NO_AUTOLOAD = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}

#: sha256 over the default run's records (ids and contents, timings aside) and its exports. A change to
#: this value changes what `synth run` produces: make it on purpose, say why in CHANGELOG.md, update it here.
DEFAULT_RUN_RECORDS = "116f9b5c4ffe0782d91cf85c8e9c82a5c064154a7b3b2078ef2fc870a0bdfcd2d826341d52e15ac1517107d201a4e30865caa52d4a0c8e38"


def _strip(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k != "timings"}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


def records_fingerprint(root: Path) -> str:
    """Per file (in pipeline order), the first 16 hex digits of sha256 over its sorted canonical records."""
    out = []
    for name in ("tasks", "trajectories", "demonstrations", "rubrics", "scores", "exports/sft", "exports/rl"):
        lines = (root / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = sorted(json.dumps(_strip(json.loads(x)), sort_keys=True) for x in lines if x.strip())
        out.append(hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16])
    return "".join(out)


def test_default_run_records_are_pinned(default_run: Any) -> None:
    """The default run's records are pinned (the Runtime refactor left them byte-identical; the phrase banks
    of issue 15 changed the wording of trajectories, demonstrations, scores and the SFT export on purpose;
    issue 13 shuffled the offered tools, so every task and everything after it changed, and added the
    user-query penalty to the rubrics; issue 23 made the oracle's closing speak to the user, "place a hold for
    you at your chosen branch", not "for the member at their chosen branch"; issue 26 renumbered the call ids
    of the SFT export)."""
    assert records_fingerprint(default_run.root) == DEFAULT_RUN_RECORDS


def test_stages_are_named_objects_in_config_order() -> None:
    assert tuple(stage.name for stage in PIPELINE) == STAGES
    assert [stage.file for stage in PIPELINE] == ["tasks", "trajectories", "rubrics", "scores", None]


def test_runtime_builds_checks_and_reports(plugins: Any) -> None:
    runtime = Runtime(load_config(None, ["tasks=3"]), plugins)
    assert runtime.capabilities["rubric"] >= {"demonstrations", "setup", "stats"}
    assert "slots" not in runtime.capabilities["generator"]
    assert runtime.demonstrations == 3 and runtime.demonstrator is runtime.components.llm
    assert runtime.trajectory_id("task-x", 2) == trajectory_id("task-x", "oracle", 2, 0)
    failure = runtime.infra_failure("task-x", 1, TimeoutError("server gone"))
    assert failure.termination == "infra_error" and failure.error == "TimeoutError: server gone"
    assert failure.id == runtime.trajectory_id("task-x", 1)


def test_runtime_rollout_equals_the_pipeline_record(plugins: Any, tmp_path: Path) -> None:
    """A rollout through the runtime is the record the simulate stage wrote (same id, same messages)."""
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.store import RunStore

    config = load_config(None, ["tasks=4", "seed=9"])
    pipeline = Pipeline(config, plugins)
    pipeline.open_store(tmp_path / "r", resume=False)
    asyncio.run(pipeline.run())
    store = RunStore.open(tmp_path / "r")
    tasks, trajectories = store.tasks.load(), {t.id: t for t in store.trajectories}
    store.close()
    assert len(trajectories) == 4

    async def again() -> list[Any]:
        async with Runtime(config, plugins) as runtime:
            return [await runtime.rollout(t, 0) for t in tasks]

    for traj in asyncio.run(again()):
        assert traj.id in trajectories
        assert traj.messages == trajectories[traj.id].messages
        assert traj.final_state_digest == trajectories[traj.id].final_state_digest


def test_from_run_dir_uses_the_strict_parser(plugins: Any, tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    config = RunConfig(tasks=5, seed=4).to_dict()
    (root / "manifest.json").write_text(json.dumps({"config": config}))
    runtime = Runtime.from_run_dir(root, plugins=plugins)
    assert runtime.config.tasks == 5 and runtime.config.seed == 4 and runtime.run_dir == str(root)
    config["simulate"]["max_trns"] = 3  # a typo the old permissive parser dropped silently
    (root / "manifest.json").write_text(json.dumps({"config": config}))
    with pytest.raises(ConfigError, match="max_trns.*manifest.json.*max_turns"):
        Runtime.from_run_dir(root, plugins=plugins)
    (root / "manifest.json").write_text("[1, 2]")
    with pytest.raises(RunDirectoryError, match="no configuration object"):
        Runtime.from_run_dir(root, plugins=plugins)
    with pytest.raises(RunDirectoryError, match="no manifest.json"):
        Runtime.from_run_dir(tmp_path / "missing", plugins=plugins)


def test_config_from_dict_round_trips() -> None:
    config = load_config(None, ["tasks=7", "export.vertical=[\"banking\"]", "plugins.oracle.vary=true"])
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


class _Declares:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


@pytest.mark.parametrize(("kind", "attrs", "message"), [
    ("tools", {"stats": 3}, "`stats` of type int"),
    ("tools", {"setup": "yes"}, "`setup` that is not callable"),
    ("user", {"aclose": lambda: None}, "`aclose` that is not an async method"),
    ("rubric", {"demonstrations": -1}, "`demonstrations = -1`"),
    ("rubric", {"demonstrations": 2, "demonstrator": 7}, "`demonstrator = 7`"),
    ("generator", {"slots": lambda ctx: []}, "only part of slot-by-slot generation"),
    ("executor", {"remote": "yes"}, "`remote = 'yes'`"),
    ("llm", {"max_concurrency": 0}, "`max_concurrency = 0`"),
    ("llm", {"plays_workflow": "yes"}, "`plays_workflow = 'yes'`"),
    ("mapping", {"prompt_hashes": {"a": "b"}}, "`prompt_hashes` that is not callable"),
])
def test_a_wrongly_declared_capability_is_named(kind: str, attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginLoadError, match=f"{kind} 'mine' declares .*{message[:12]}"):
        capabilities(_Declares(**attrs), kind, "mine")


def test_capabilities_found_and_kind_specific() -> None:
    async def aclose() -> None:
        return None

    comp = _Declares(stats={"hits": 1}, aclose=aclose, setup=lambda ctx: None, prompt_hashes=lambda: {},
                     max_concurrency=4, demonstrations=2)
    assert capabilities(comp, "llm", "x") == {"stats", "aclose", "setup", "prompt_hashes", "max_concurrency"}
    assert capabilities(comp, "rubric", "x") == {"stats", "aclose", "setup", "prompt_hashes", "demonstrations"}


def test_teachers_are_refused_by_trait_not_by_name() -> None:
    """Issue 25: three plugins tested ``llm.name.startswith("oracle")``. A backend that plays the gold workflow
    is refused as a teacher whatever it is called; one merely named "oracle-..." is accepted."""
    from synthagent.core.capabilities import has_capability
    from synthagent.core.protocols import RunContext
    from synthagent.plugins.backends.oracle import OracleBackend
    from synthagent.plugins.generators.persona_fuzzy import PersonaFuzzyGenerator
    from synthagent.plugins.rubrics.judge import JudgeScorer

    player = _Declares(name="my-replayer", plays_workflow=True, chat=lambda request: None)
    teacher = _Declares(name="oracle-sized-teacher", chat=lambda request: None)
    assert has_capability(OracleBackend(), "plays_workflow") and has_capability(player, "plays_workflow")
    assert not has_capability(teacher, "plays_workflow")
    for component in (PersonaFuzzyGenerator(), JudgeScorer()):
        with pytest.raises(ConfigError):
            component.setup(RunContext(llm=player, mapping=None, run_dir="", seed=0))
        component.setup(RunContext(llm=teacher, mapping=None, run_dir="", seed=0))  # the name is no reason


def test_a_plugin_with_a_bad_capability_fails_before_anything_is_written(tmp_path: Path) -> None:
    plugin = tmp_path / "bad_cap_plugin.py"
    plugin.write_text(
        "from synthagent.core.hookspecs import hookimpl\n"
        "from synthagent.plugins.simulators.users.rule import RuleUser\n"
        "class Counting(RuleUser):\n"
        "    stats = 'many'\n"
        "@hookimpl\n"
        "def synth_register_user_simulators(register):\n"
        "    register('counting', Counting)\n")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "synthagent.core", "run", "--plugin", "bad_cap_plugin",
                             "--set", "user=counting", "--out", str(tmp_path / "out"), "--tasks", "2"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={**__import__("os").environ, "PYTHONPATH": str(tmp_path), **NO_AUTOLOAD})
    assert result.returncode == 2, result.stderr
    assert "user 'counting' declares `stats` of type str" in result.stderr
    assert not (tmp_path / "out").exists()
