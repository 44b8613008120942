"""Bad input: one clear line on stderr, exit code 2, and no partial or corrupted run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def check_usage_error(result, needle: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert needle in lines[0], lines[0]


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("extra,needle", [
    (["--set", "generator=persona-fuzzzy"], "unknown generator 'persona-fuzzzy'; known: bfcl-multi-turn, graph-domains, offline-domains, persona-fuzzy. Did you mean 'persona-fuzzy'?"),
    (["--set", "llm.backend=nope"], "unknown llm 'nope'; known: bfcl-oracle, openai, oracle"),
    (["--set", "taks=3"], "Did you mean 'tasks'"),
    (["--set", "tasks=lots"], "'tasks' (from --set tasks=lots) must be an integer"),
    (["--set", "simulate.max_turns=-1"], "must be positive"),
    (["--set", "plugins.offline-domains.domain=[\"x\"]"], "unknown option 'domain' for generator 'offline-domains'"),
    (["--set", "plugins.offline-domains.domains=[\"atlantis\"]"], "unknown domain(s) ['atlantis']"),
    (["--plugin", "tp_missing_module"], "plugin 'tp_missing_module' failed to import"),
])
def test_bad_arguments(synth, tmp_path: Path, extra: list[str], needle: str) -> None:
    out = tmp_path / "runs"
    check_usage_error(synth(["run", "--out", str(out), "--name", "x", *extra]), needle)
    assert listing(out) == []


def test_plugin_that_raises_on_import(synth, tmp_path: Path) -> None:
    (tmp_path / "tp_explodes.py").write_text("raise ImportError('needs libfoo 2.0')\n")
    out = tmp_path / "runs"
    result = synth(["run", "--out", str(out), "--plugin", "tp_explodes"], env={"PYTHONPATH": str(tmp_path)})
    check_usage_error(result, "plugin 'tp_explodes' failed to import (tp_explodes): ImportError: needs libfoo 2.0")
    assert listing(out) == []


def test_malformed_toml(synth, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("seed = \n")
    check_usage_error(synth(["run", "--config", str(cfg), "--out", str(tmp_path / "runs")]), "malformed TOML")
    assert listing(tmp_path / "runs") == []


def test_unknown_key_in_config_file(synth, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[simulate]\nturns = 3\n")
    check_usage_error(synth(["run", "--config", str(cfg), "--out", str(tmp_path / "runs")]), "unknown config key 'simulate.turns'")
    assert listing(tmp_path / "runs") == []


def test_existing_directory_without_resume_is_untouched(synth, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert synth(["run", "-q", "--out", str(out), "--name", "r", "--tasks", "8"]).returncode == 0
    before = {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()}
    check_usage_error(synth(["run", "--out", str(out), "--name", "r", "--tasks", "8"]), "already exists; pass --resume")
    assert {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()} == before


def test_resume_with_a_different_config_is_refused(synth, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert synth(["run", "-q", "--out", str(out), "--name", "r", "--tasks", "8"]).returncode == 0
    manifest = (out / "r/manifest.json").read_text()
    check_usage_error(synth(["run", "--out", str(out), "--name", "r", "--tasks", "9", "--resume"]),
                      "different configuration")
    assert (out / "r/manifest.json").read_text() == manifest


def test_unwritable_output_directory(synth, tmp_path: Path) -> None:
    check_usage_error(synth(["run", "--out", "/proc/synthagent-runs"]), "/proc/synthagent-runs")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    check_usage_error(synth(["run", "--out", str(blocker / "runs")]), "is not a directory")


def test_resume_without_a_run(synth, tmp_path: Path) -> None:
    check_usage_error(synth(["run", "--out", str(tmp_path), "--resume"]), "no run directory")
    assert json.dumps(listing(tmp_path)) == "[]"


# ---------------------------------------------------------------------------------------------------------------
# The bad-input corpus: every malformed input is answered in-process (click's CliRunner) with its exit code, one
# line on stderr naming the problem, no traceback, and every file under the test's folder byte-for-byte unchanged
# (so no run directory appears and an existing one is not touched).

import copy
import hashlib
import shutil
import sys
from collections.abc import Callable

from click.testing import CliRunner

from synthagent.core.cli import cli

sys.path.insert(0, str(Path(__file__).parent))
from nested_pack import nested_domain  # noqa: E402


def tree_hash(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with the sha256 of its bytes (folders: empty)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            for p in sorted(root.rglob("*"))}


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=True)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished four-task run, made once; cases copy it."""
    out = tmp_path_factory.mktemp("corpus-run")
    result = invoke(["run", "-q", "--out", str(out), "--name", "r", "--tasks", "4"])
    assert result.exit_code == 0, result.output
    return out / "r"


def _toml(text: str | bytes) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        f = d / "c.toml"
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", "--config", str(f), "--out", str(d / "runs")]
    return make


def _args(*extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["run", "--out", str(d / "runs"), "--name", "x", *extra]


def _pack(mutate: Callable[[dict], object] | None = None, raw: bytes | None = None) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        folder = d / "pack"
        folder.mkdir()
        if raw is not None:
            (folder / "airline.json").write_bytes(raw)
        else:
            data = copy.deepcopy(nested_domain())
            if mutate:
                mutate(data)
            (folder / "airline.json").write_text(json.dumps(data))
        return _args("--set", f'plugins.offline-domains.domains_dir="{folder}"')(d)
    return make


_SPEC = {"type": "function", "function": {"name": "cancel_order", "description": "Cancel an order.",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}},
         "x-effect": {"kind": "update", "entity": "order", "key": "order_id", "where": {"order_id": "order_id"},
                      "const": {"status": "cancelled"}, "require": {"status": ["open"]}}}


def _pool(effect: dict | None = None, raw: bytes | None = None) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        f = d / "pool.jsonl"
        if raw is not None:
            f.write_bytes(raw)
        else:
            spec = copy.deepcopy(_SPEC)
            spec["x-effect"].update(effect or {})
            f.write_text(json.dumps(spec) + "\n")
        return _args("--set", "generator=graph-domains", "--set", f'plugins.graph-domains.pool="{f}"',
                     "--set", 'plugins.graph-domains.embedding="tfidf"')(d)
    return make


def _personas(text: bytes) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        f = d / "personas.jsonl"
        f.write_bytes(text)
        return _args("--set", "generator=persona-fuzzy", "--set", f'plugins.persona-fuzzy.personas="{f}"')(d)
    return make


_PLUGIN = """
from synthagent.core.hookspecs import hookimpl

class Broken:
    def __init__(self):
        {body}

@hookimpl
def synth_register_task_generators(register):
    register("{name}", Broken)
"""


def _plugin(body: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        module = f"tp_corpus_{hashlib.sha1(str(d).encode()).hexdigest()[:10]}"
        (d / "mods").mkdir()
        (d / "mods" / f"{module}.py").write_text(_PLUGIN.format(body=body, name=module.replace("_", "-")))
        sys.path.insert(0, str(d / "mods"))
        return _args("--plugin", module, "--set", f"generator={module.replace('_', '-')}")(d)
    return make


def _run_dir(mutate: Callable[[Path], None], command: str = "resume") -> Callable[..., list[str]]:
    def make(d: Path, run: Path) -> list[str]:
        root = d / "runs" / "r"
        shutil.copytree(run, root)
        mutate(root)
        if command == "show":
            return ["show", str(root)]
        if command == "report":
            return ["report", str(root), "--out", str(d / "report")]
        return ["run", "-q", "--out", str(d / "runs"), "--name", "r", "--tasks", "4", "--resume"]
    return make


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data)


def _rewrite_line(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        lines = (root / name).read_text().splitlines()
        record = json.loads(lines[0])
        change(record)
        (root / name).write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    return mutate


def _set(path: str, value: object) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        *head, last = path.split("/")
        node = data
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


CORPUS: list[tuple[str, Callable[..., list[str]], int, str]] = [
    # config files
    ("config-not-utf8", _toml(b'seed = 1\nname = "\xff\xfe"\n'), 2, "is not UTF-8 text (line 2"),
    ("config-malformed", _toml("seed = \n"), 2, "malformed TOML"),
    ("config-unknown-key", _toml("[export]\nmin_scor = 1\n"), 2, "Did you mean 'min_score'"),
    ("config-min-score-nan", _toml("[export]\nmin_score = nan\n"), 2, "'min_score' must be a finite number"),
    ("config-min-score-above-1", _toml("[export]\nmin_score = 1.5\n"), 2, "'min_score' must be between 0 and 1"),
    ("config-timeout-negative", _toml("[llm]\ntimeout_s = -1\n"), 2, "'timeout_s' must be positive"),
    ("config-timeout-inf", _toml("[llm]\ntimeout_s = inf\n"), 2, "'timeout_s' must be a finite number"),
    ("config-temperature-negative", _toml("[llm]\ntemperature = -0.5\n"), 2, "'temperature' must not be negative"),
    ("config-temperature-inf", _toml("[llm]\ntemperature = inf\n"), 2, "'temperature' must be a finite number"),
    ("config-temperature-huge", _toml("[llm]\ntemperature = 7\n"), 2, "'temperature' must be between 0 and 2"),
    ("config-max-turns-huge", _toml(f"[simulate]\nmax_turns = {10**30}\n"), 2, "'max_turns' must be at most 10,000"),
    ("config-samples-zero", _toml("[simulate]\nsamples = 0\n"), 2, "'samples' must be positive"),
    ("config-concurrency-negative", _toml("[simulate]\nconcurrency = -3\n"), 2, "'concurrency' must not be negative"),
    ("config-retries-huge", _toml("[simulate]\nretries = 1000\n"), 2, "'retries' must be at most 100"),
    ("config-max-tokens-zero", _toml("[llm]\nmax_tokens = 0\n"), 2, "'max_tokens' must be positive"),
    ("config-seed-string", _toml('seed = "x"\n'), 2, "'seed' (from"),
    ("config-generator-number", _toml("generator = 5\n"), 2, "'generator' (from"),
    ("config-section-not-table", _toml("simulate = 3\n"), 2, "'simulate' must be a table"),
    ("config-plugins-not-tables", _toml("plugins = 3\n"), 2, "must be a table of tables"),
    ("config-vertical-not-list", _toml('[export]\nvertical = "banking"\n'), 2, "must be a list of strings"),
    ("config-missing-file", lambda d: ["run", "--config", str(d / "nope.toml"), "--out", str(d / "runs")], 2,
     "cannot read config file"),
    # command line
    ("cli-set-without-equals", _args("--set", "tasks"), 2, "must look like key=value"),
    ("cli-set-empty-key", _args("--set", ".x=1"), 2, "has an empty key part"),
    ("cli-set-into-scalar", _args("--set", "simulate.max_turns.x=1"), 2, "'simulate.max_turns'"),
    ("cli-tasks-zero", _args("--tasks", "0"), 2, "'tasks' must be positive"),
    ("cli-tasks-negative", _args("--tasks", "-5"), 2, "'tasks' must be positive"),
    ("cli-tasks-absurd", _args("--tasks", str(10**20)), 2, "'tasks' must be at most 10,000,000"),
    ("cli-min-score-nan", _args("--set", "export.min_score=nan"), 2, "'min_score' must be a finite number"),
    ("cli-timeout-inf", _args("--set", "llm.timeout_s=-inf"), 2, "'timeout_s' must be a finite number"),
    ("cli-unknown-generator", _args("--set", "generator=offline-domain"), 2, "Did you mean 'offline-domains'"),
    ("cli-unknown-executor", _args("--set", "executor=nope"), 2, "unknown executor 'nope'"),
    ("cli-unknown-plugin-option", _args("--set", "plugins.rule.bogus=1"), 2, "unknown option 'bogus'"),
    ("cli-plugin-option-rejected", _args("--set", "plugins.offline-domains.min_hidden=5"), 2, "min_hidden"),
    ("cli-resume-nothing", lambda d: ["run", "--out", str(d / "runs"), "--resume"], 2, "no run directory"),
    ("cli-resume-missing-name", _args("--resume"), 2, "does not exist; drop --resume"),
    ("cli-from-missing-run", _args("--from", "score"), 2, "does not exist; drop --resume"),
    # plugins
    ("plugin-missing", _args("--plugin", "tp_corpus_missing"), 2, "plugin 'tp_corpus_missing' failed to import"),
    ("plugin-factory-attributeerror", _plugin("raise AttributeError('no attribute frob')"), 2,
     "failed to start: AttributeError: no attribute frob"),
    ("plugin-factory-runtimeerror", _plugin("raise RuntimeError('backend down')"), 2,
     "failed to start: RuntimeError: backend down"),
    ("plugin-factory-keyerror", _plugin("{}['k']"), 2, "failed to start: KeyError"),
    # domain packs
    ("pack-missing-folder", lambda d: _args("--set", f'plugins.offline-domains.domains_dir="{d}/none"')(d), 2,
     "does not exist"),
    ("pack-not-json", _pack(raw=b"{nope"), 2, "cannot read domain file"),
    ("pack-not-utf8", _pack(raw=b'{"name": "\xff"}'), 2, "cannot read domain file"),
    ("pack-top-level-list", _pack(raw=b"[]"), 2, "airline.json: $: the top level must be a JSON object"),
    ("pack-list-in-text-column", _pack(_set("rows/customers/0/name", ["a", "b"])), 2,
     "$.rows.customers[0].name: must be a scalar"),
    ("pack-object-in-text-column", _pack(_set("rows/bookings/0/flight", {"no": 1})), 2,
     "$.rows.bookings[0].flight: must be a scalar"),
    ("pack-integer-past-64-bits", _pack(_set("rows/customers/0/name", 2**64)), 2, "outside SQLite's 64-bit range"),
    ("pack-nan-in-row", _pack(raw=json.dumps(nested_domain()).replace('"amount": 99.0', '"amount": NaN').encode()),
     2, "not a finite number"),
    ("pack-column-type-list", _pack(_set("tables/customers/columns/name", ["TEXT"])), 2,
     "$.tables.customers.columns.name: must be a string"),
    ("pack-column-type-unknown", _pack(_set("tables/customers/columns/name", "BLOB")), 2, "type must be one of"),
    ("pack-tools-object", _pack(_set("tools", {"a": 1})), 2, "$.tools: must be a list"),
    ("pack-effect-table-list", _pack(_set("tools/0/effect/table", ["customers"])), 2,
     "$.tools[0].effect.table: must be a string"),
    ("pack-order-by-list", _pack(_set("tools/1/effect/order_by", ["flight"])), 2,
     "$.tools[1].effect.order_by: must be a string"),
    ("pack-const-list-in-text", _pack(_set("tools/2/effect/const", {"status": ["x"]})), 2,
     "$.tools[2].effect.const.status: must be a scalar"),
    ("pack-anchor-where-list", _pack(_set("scenarios/0/anchor/where/status", ["confirmed"])), 2,
     "$.scenarios[0].anchor.where.status: must be a scalar"),
    ("pack-step-list", _pack(_set("scenarios/0/steps/0", ["find_customer_by_email"])), 2,
     "$.scenarios[0].steps[0]: must be an object"),
    ("pack-keywords-number", _pack(_set("scenarios/0/facts/email/keywords", [1])), 2,
     "$.scenarios[0].facts.email.keywords[0]: must be a string"),
    ("pack-param-type-unknown", _pack(_set("tools/0/parameters/properties/email/type", "text")), 2,
     "needs a 'type' of string, integer, number, boolean, array or object"),
    # API pools
    ("pool-missing", lambda d: _args("--set", "generator=graph-domains", "--set",
                                     f'plugins.graph-domains.pool="{d}/none.jsonl"')(d), 2, "does not exist"),
    ("pool-not-json", _pool(raw=b"{nope\n"), 2, "pool.jsonl:1 is not valid JSON"),
    ("pool-not-utf8", _pool(raw=b'{"name": "\xff"}\n'), 2, "cannot read API pool file"),
    ("pool-const-list", _pool({"const": {"status": ["a", "b"]}}), 2, "x-effect.const.status: must be a scalar"),
    ("pool-require-object", _pool({"require": {"status": [{"a": 1}]}}), 2, "x-effect.require.status: must be a scalar"),
    ("pool-const-huge-int", _pool({"const": {"status": 2**70}}), 2, "outside SQLite's 64-bit range"),
    ("pool-columns-string", _pool({"columns": "status"}), 2, "x-effect.columns must be a list of column names"),
    ("pool-order-by-list", _pool({"order_by": ["status"]}), 2, "x-effect.order_by must be a column name"),
    ("pool-reserved-entity", _pool({"entity": "sqlite_schema"}), 2, "'sqlite_schema' is a name SQLite reserves"),
    ("pool-unknown-effect-field", _pool({"limit": 5}), 2, "x-effect.limit is not an effect field"),
    ("pool-many-string", _pool({"many": "yes"}), 2, "x-effect.many must be true or false"),
    ("pool-require-empty", _pool({"require": {"status": []}}), 2, "needs at least one allowed value"),
    # persona files
    ("personas-not-json", _personas(b'{"id": "p1", "description": "a"}\n{oops\n'), 2, "line 2 is not valid JSON"),
    ("personas-missing-description", _personas(b'{"id": "p1"}\n'), 2, "line 1 must be an object"),
    ("personas-duplicate-id", _personas(b'{"id": "p", "description": "a"}\n{"id": "p", "description": "b"}\n'), 2,
     "duplicate persona id 'p'"),
    ("personas-not-utf8", _personas(b'{"id": "p", "description": "\xff"}\n'), 2, "cannot read personas file"),
    ("personas-list", _personas(b'["p", "a"]\n'), 2, "line 1 must be an object"),
    # run directories
    ("run-manifest-list", _run_dir(_write("manifest.json", b"[]")), 2, "must hold a JSON object, got list"),
    ("run-manifest-list-show", _run_dir(_write("manifest.json", b"[1]"), "show"), 2, "must hold a JSON object"),
    ("run-manifest-not-json", _run_dir(_write("manifest.json", b"{"), "show"), 2, "is not valid JSON"),
    ("run-manifest-missing", _run_dir(lambda r: (r / "manifest.json").unlink(), "show"), 2, "no manifest.json"),
    ("run-record-wrong-fields-show", _run_dir(_rewrite_line("trajectories.jsonl", lambda r: r.pop("messages")), "show"),
     2, "trajectories.jsonl:1: not a valid Trajectory record: required field missing @ $.messages"),
    ("run-record-wrong-type-show", _run_dir(_rewrite_line("scores.jsonl", _set("breakdown", "all good")), "show"),
     2, "scores.jsonl:1: not a valid Score record"),
    ("run-record-not-object-show", _run_dir(_write("rubrics.jsonl", b'["x"]\n'), "show"), 1,
     "rubrics.jsonl line 1 is corrupted"),
    ("run-record-not-utf8-show", _run_dir(_write("scores.jsonl", b'{"id": "s\xff"}\n'), "show"), 1,
     "scores.jsonl line 1 is corrupted"),
]


@pytest.mark.parametrize("name,make,code,needle", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_corpus(tmp_path: Path, small_run: Path, name: str, make, code: int, needle: str) -> None:
    args = make(tmp_path, small_run) if name.startswith("run-") else make(tmp_path)
    before = tree_hash(tmp_path)
    result = invoke(args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, (result.stderr, result.exception)
    assert "Traceback" not in result.stderr and isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert needle in lines[0], lines[0]
    assert tree_hash(tmp_path) == before


def test_the_corpus_is_large_and_covers_every_surface() -> None:
    kinds = {name.split("-")[0] for name, *_ in CORPUS}
    assert len(CORPUS) >= 60 and kinds >= {"config", "cli", "plugin", "pack", "pool", "personas", "run"}
