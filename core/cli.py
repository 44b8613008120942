"""The ``synth`` command line.

Exit codes: 0 success, 2 usage or configuration error (nothing was started), 1 runtime failure (records
written so far are kept; ``synth run --resume`` continues; a plugin error names the plugin), 3 the run finished
but kept no task (the message lists the top drop reasons with counts), 4 the model server refused the API key
(HTTP 401/403; not retried), 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from synthagent.core.errors import NothingKeptError, PluginError, PluginLoadError, SynthError, UsageError, exit_code

if TYPE_CHECKING:
    from synthagent.core.registry import Implementation

__all__ = ["main", "cli", "guard", "PluginCommandGroup"]

log = logging.getLogger("synthagent")


def _fail(exc: BaseException) -> NoReturn:
    from synthagent.core.redact import redact_text

    code = exit_code(exc)  # 2 usage, 3 nothing kept, 4 authentication refused, else 1
    click.echo(f"Error: {redact_text(str(exc))}", err=True)  # never a key: URLs, api_key=..., Bearer ...
    if os.environ.get("SYNTHAGENT_DEBUG"):
        click.echo(redact_text("".join(traceback.format_exception(exc))), err=True)
    sys.exit(code)


class _RedactingFormatter(logging.Formatter):
    """run.log lines with secrets redacted (:func:`synthagent.core.redact.redact_text`), tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        from synthagent.core.redact import redact_text

        return redact_text(super().format(record))


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SynthErrors into one-line messages with the documented exit codes (for plugin commands too)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SynthError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("Interrupted. Records written so far are kept; continue with `synth run --resume`.", err=True)
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # never a traceback: one line (SYNTHAGENT_DEBUG=1 prints the trace)
            _fail(SynthError(f"internal error: {type(exc).__name__}: {exc} (set SYNTHAGENT_DEBUG=1 for the traceback)"))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


_guard = guard  # the name the built-in commands below use

_PLUGIN_COMMANDS = "synthagent.plugin_commands"


class PluginCommandGroup(click.Group):
    """A click group of its own commands plus those plugins add with ``synth_register_commands``.

    Plugins are loaded only when a command name is not built in, or when every command is listed
    (``list_commands``, e.g. shell completion): ``synth --help`` and the built-in commands never load them.
    The group's help lists the built-in commands and points to ``synth plugins`` for plugin commands.
    """

    def _plugin_commands(self, ctx: click.Context) -> dict[str, Implementation[Any]]:
        meta = ctx.find_root().meta
        if _PLUGIN_COMMANDS not in meta:
            from synthagent.core.hookspecs import COMMAND_KIND
            from synthagent.core.registry import load_plugins

            try:
                registry = load_plugins().registry(COMMAND_KIND)
                found = {impl.name: impl for impl in registry}
                for name, impl in found.items():
                    if name in self.commands:
                        raise PluginLoadError(f"plugin {impl.plugin!r} registers command {name!r}, which is a built-in "
                                              "synth command; rename it")
            except SynthError as exc:
                _fail(exc)
            meta[_PLUGIN_COMMANDS] = found
        return meta[_PLUGIN_COMMANDS]  # type: ignore[no-any-return]

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in and plugin command names, sorted (loads the plugins)."""
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, else the plugin command ``cmd_name`` (imported now), else ``None``."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        impl = self._plugin_commands(ctx).get(cmd_name)
        if impl is None:
            return None
        try:
            resolved: Any = impl.resolve()
            if not isinstance(resolved, click.Command):
                raise PluginLoadError(f"command {cmd_name!r} of plugin {impl.plugin!r} is {type(resolved).__name__}, "
                                      "not a click.Command")
        except SynthError as exc:
            _fail(exc)
        return resolved

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The built-in commands (without loading plugins), then where plugin commands are listed."""
        limit = formatter.width - 6 - max((len(name) for name in self.commands), default=0)
        rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in sorted(self.commands.items()) if not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        with formatter.section("Plugin commands"):
            formatter.write_text("Plugins add more commands (hook synth_register_commands); "
                                 "`synth plugins` lists them as kind 'command'.")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from synthagent.core import __version__

    click.echo(f"synthagent, version {__version__}")
    ctx.exit()


@click.group(cls=PluginCommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def cli() -> None:
    """synthagent: synthetic agentic training work from a teacher LLM.

    \b
    synth run                 generate tasks, simulate trajectories, build rubrics, score, export
    synth plugins             list every registered implementation (and the plugin it came from)
    synth show RUN            print a run's summary
    synth report RUN          an offline HTML page with plots of a run (or of an eval directory)
    synth train               train a model on a run with an RL algorithm plugin (grpo, sft, dpo; extra [train])
    synth eval                evaluate a policy on held-out tasks or a benchmark; compare two evaluations
    synth NAME                a command a plugin adds (synth plugins lists them)

    With no configuration, `synth run` uses the embedded offline default: the built-in SQLite domain pack,
    a rule-based user and the oracle teacher. No network, GPU or API key needed.
    """
    _plain_warnings()


def _plain_warnings() -> None:
    """synthagent's own warnings (a setting with no effect, a probable plugin mistake) print as one line,
    ``Warning: ...``, not with the source line that raised them; other libraries' warnings are unchanged."""
    import warnings

    from synthagent.core.errors import ConfigWarning, PluginWarning

    default = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if issubclass(category, (ConfigWarning, PluginWarning)):
            return f"Warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


class _StageChoice(click.Choice):
    """``click.Choice`` of the pipeline stages, read from the config module only when needed (fast start)."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from synthagent.core.config import STAGES

        return tuple(STAGES)

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass


def toolset_generators(plugins: Any) -> tuple[list[str], str | None]:
    """The generators that take a toolset (a ``tools_from`` option), and the one ``--tools-from`` uses when
    none is named: the first that declares ``offline_toolsets = True`` (it needs no teacher model)."""
    takes = [impl for impl in plugins.registry("generator") if "tools_from" in (impl.accepted_options() or ())]
    offline = next((impl.name for impl in takes if getattr(impl.resolve(), "offline_toolsets", False) is True), None)
    return sorted(impl.name for impl in takes), offline


def _with_toolset(config: Any, config_path: Path | None, overrides: Sequence[str], extra: Mapping[str, Any],
                  tools_from: str, plugins: Any) -> list[str]:
    """``overrides`` plus the settings that ``--tools-from`` stands for: the generator's ``tools_from`` option
    (an absolute path, so a resume from another folder reads the same file), and the offline toolset
    generator (:func:`toolset_generators`) when the command line names no generator."""
    from synthagent.core.resume import explicit_keys

    if tools_from.startswith("mcp:"):
        source = tools_from  # the server is started when the generator is built
    elif Path(tools_from).is_file():
        source = str(Path(tools_from).resolve())
    else:
        raise UsageError(f"--tools-from: {tools_from!r} is not a file (or mcp:COMMAND for an MCP server)")
    chosen = ("generator",) in explicit_keys(config_path, overrides, extra)
    takes, offline = toolset_generators(plugins)
    if chosen and config.generator not in takes:
        raise UsageError(f"--tools-from: generator {config.generator!r} takes no toolset; generators that do: "
                         f"{', '.join(takes) or 'none loaded'}")
    if not chosen and offline is None:
        raise UsageError("--tools-from: no loaded generator makes tasks for a toolset offline; name one with "
                         f"--set generator=... (generators that take a toolset: {', '.join(takes) or 'none'})")
    generator = config.generator if chosen else str(offline)
    added = [] if chosen else [f'generator="{generator}"']
    return [*overrides, *added, f"plugins.{generator}.tools_from={json.dumps(source)}"]


def _latest_run(out: Path) -> Path:
    runs = [p for p in out.glob("*/manifest.json")] if out.is_dir() else []
    if not runs:
        raise UsageError(f"--resume: no run directory in {str(out)!r} to resume; pass --name")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


@cli.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML configuration file (see docs/configuration.md).")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set simulate.max_turns=20 (repeatable; values are TOML).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that holds run directories  [default: config 'out', i.e. runs]")
@click.option("-n", "--name", help="Run directory name  [default: config 'name', else run-YYYYmmdd-HHMMSS]")
@click.option("--seed", type=int, help="Random seed; the same seed gives the same records.")
@click.option("--tasks", type=int, help="Number of tasks to generate.")
@click.option("--resume", is_flag=True,
              help="Continue an existing run directory (the latest in --out when --name is not given).")
@click.option("--from", "from_stage", type=_StageChoice(),
              help="Re-run this stage and every later one in an existing run (implies --resume).")
@click.option("-p", "--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Load a plugin by entry-point name or module path (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary table; print only the run directory.")
@click.option("--tools-from", "tools_from", metavar="FILE|mcp:COMMAND",
              help="Your own tools (OpenAI tool schemas as JSON/JSONL, an OpenAPI 3 document, or mcp:COMMAND, "
                   "the tool list of an MCP server started over stdio): tasks are made "
                   "for exactly these tools (generator graph-domains unless --set generator=... names another "
                   "that takes a toolset; docs/own-tools.md).")
@_guard
def run_cmd(config_path: Path | None, overrides: Sequence[str], out: Path | None, name: str | None,
            seed: int | None, tasks: int | None, resume: bool, from_stage: str | None, plugins: Sequence[str],
            quiet: bool, tools_from: str | None) -> None:
    """Run the pipeline: generate -> simulate -> rubric -> score -> export.

    Writes OUT/NAME/ with manifest.json, tasks.jsonl, trajectories.jsonl, rubrics.jsonl, scores.jsonl,
    summary.json, exports/sft.jsonl and exports/rl.jsonl. A killed run continues exactly where it stopped
    with --resume: no record is lost or written twice.

    \b
    Examples:
      synth run
      synth run --tasks 50 --seed 3 --name small
      synth run --resume --name small
      synth run --from score --name small
      synth run --set generator=offline-domains --set 'plugins.offline-domains.domains=["banking"]'
      synth run --tools-from my_tools.json --tasks 30
    """
    import asyncio

    from synthagent.core.config import load_config
    from synthagent.core.pipeline import Pipeline
    from synthagent.core.registry import load_plugins

    from synthagent.core.resume import check_run_name, explicit_keys, resume_config
    from synthagent.core.store import RunStore

    extra = {"seed": seed, "tasks": tasks}
    config = load_config(config_path, overrides, extra=extra)
    loaded = load_plugins(plugins)
    if tools_from is not None:
        overrides = _with_toolset(config, config_path, overrides, extra, tools_from, loaded)
        config = load_config(config_path, overrides, extra=extra)
    out_dir = out or Path(config.out)
    resume = resume or from_stage is not None
    run_name = name or config.name
    if run_name:
        check_run_name(run_name)
    if resume and not run_name:
        root = _latest_run(out_dir)
    else:
        root = out_dir / (run_name or datetime.now().strftime("run-%Y%m%d-%H%M%S"))
    if resume and not root.exists():
        raise UsageError(f"--resume: {str(root)!r} does not exist; drop --resume to start it")
    if resume:  # the stored configuration, with the options given here checked against it
        config = resume_config(RunStore.read_manifest(root), config, explicit_keys(config_path, overrides, extra), root)
    progress = _Progress(quiet)
    pipeline = Pipeline(config, loaded, progress=progress.update)  # builds every implementation: fails early
    store = pipeline.open_store(root, resume=resume)  # a writer: holds the run directory's lock until the end
    handler = logging.FileHandler(store.root / "run.log", encoding="utf-8")
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("run %s: %s (config fingerprint %s)", "resumed" if resume else "started", store.root,
             store.manifest.get("fingerprint", "")[:12])
    try:
        with progress:
            summary = asyncio.run(pipeline.run(from_stage=from_stage))
        _log_drops(summary)  # in run.log: a partial drop is said, not fatal
    except SynthError as exc:
        details = exc.details if isinstance(exc, PluginError) and exc.details else ""  # the plugin's traceback
        log.error("run failed: %s%s", exc, f"\n{details}" if details else "")
        raise
    except KeyboardInterrupt:
        log.warning("interrupted")
        raise
    except Exception as exc:
        log.exception("run failed")
        raise SynthError(f"run failed: {type(exc).__name__}: {exc} (details in {store.root / 'run.log'}; "
                         "continue with --resume)") from exc
    finally:
        log.removeHandler(handler)
        handler.close()
    log.info("run finished")
    if not quiet:
        _print_summary(summary, store.root)
    else:  # only the path, on stdout: RUN=$(synth run -q) works in scripts
        click.echo(str(store.root))
    unusable = _no_usable_trajectory(summary)
    log_to = store.root / "run.log"
    if unusable:
        raise NothingKeptError(f"the run produced no usable trajectory: {unusable} (records are in {store.root}; "
                               f"see {log_to})")


def _log_drops(summary: dict[str, Any]) -> None:
    """Name the top drop reasons in run.log when the run kept fewer tasks than it generated."""
    funnel = summary.get("funnel") or {}
    if summary.get("tasks") and funnel.get("kept", 0) < summary["tasks"]:
        log.warning("kept %d of %d tasks; top drop reasons: %s", funnel.get("kept", 0), summary["tasks"],
                    _reasons_text(summary.get("drop_reasons") or {}))


def _reasons_text(reasons: dict[str, int], top: int = 3) -> str:
    """``rubric: uncovered (5), export: below_min_score (2)``: the ``top`` most frequent drop reasons."""
    if not reasons:
        return "none recorded"
    return ", ".join(f"{name} ({n})" for name, n in list(reasons.items())[:top])


def _no_usable_trajectory(summary: dict[str, Any]) -> str:
    """Why a finished run has nothing to train on (empty when it has something): it kept no task (no task was
    generated, every rollout failed for infrastructure reasons, every rubric was dropped, every trajectory
    scored below ``export.min_score``), with the top 3 drop reasons and their counts (:func:`synthagent.core.summary.drop_reasons`)."""
    reasons = _reasons_text(summary.get("drop_reasons") or {})
    if not summary.get("tasks"):
        return f"no task was generated; top drop reasons: {reasons}"
    funnel = summary.get("funnel") or {}
    if funnel.get("kept", 0) > 0 or (summary.get("exports") or {}).get("sft"):
        return ""
    trajectories = summary.get("trajectories") or 0
    why = ""
    if trajectories and summary.get("infra_errors") == trajectories:
        why = f"all {trajectories} rollouts failed for infrastructure reasons (is the model server up?); "
    return f"{why}the run kept 0 of {summary['tasks']} tasks; top drop reasons: {reasons}"


class _Progress:
    """Rich progress bars, one per stage (nothing when quiet or when rich output is disabled).

    Stages run one after another, so a stage starts when the previous one last reported: a bar's clock is
    started then, not at the stage's first report (the rubric stage reports only after its demonstrations,
    which would otherwise leave them out of its elapsed time).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bars: dict[str, Any] = {}
        self._progress: Any = None
        self._last_report = 0.0

    def __enter__(self) -> _Progress:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._progress.start()
            self._last_report = self._progress.get_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, stage: str, advance: int, total: int | None) -> None:
        if self._progress is None:
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = self._progress.add_task(stage, total=total)
            task = next(t for t in self._progress.tasks if t.id == bar)
            task.start_time = self._last_report  # the stage began when the previous one last reported
        elif total is not None:
            self._progress.update(bar, total=total)
        self._progress.advance(bar, advance)
        self._last_report = self._progress.get_time()


def _funnel_text(f: dict[str, Any]) -> str:
    """``50 slots -> 44 kept; dropped: demonstrations=4, toolset=2`` (the funnel row of ``synth show``)."""
    dropped = ", ".join(f"{k}={v}" for k, v in (f.get("dropped") or {}).items()) or "none"
    return f"{f.get('slots', 0)} slots -> {f.get('kept', 0)} kept; dropped: {dropped}"


def _rate_text(r: dict[str, Any] | None, what: str) -> str:
    """``0.78 (39/50 slots)``."""
    if not r:
        return "-"
    return f"{'-' if r.get('rate') is None else r['rate']} ({r.get('succeeded', 0)}/{r.get('of', 0)} {what})"


def _requests_text(figures: dict[str, dict[str, int]]) -> str:
    """``llm: 120 requests, 3 faults, 3 retries, 0 gave up`` per component that counts its requests."""
    return "; ".join(f"{name}: {f['requests']} requests, {f['faults']} faults, {f['retries']} retries, "
                     f"{f['gave_up']} gave up" for name, f in figures.items()) or "none counted"


def _print_summary(summary: dict[str, Any], root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"synthagent run {summary['run']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("tasks", summary["tasks"]),
        ("trajectories", summary["trajectories"]),
        ("scores", summary["scores"]),
        ("mean score", summary["score_mean"]),
        ("success rate (rollouts scored)", summary["success_rate"]),
        ("tasks succeeded / kept", _rate_text((summary.get("success") or {}).get("kept"), "kept tasks")),
        ("tasks succeeded / slots", _rate_text((summary.get("success") or {}).get("slots"), "slots")),
        ("tool calls / task", summary["tool_calls_per_task"]),
        ("hidden facts / task", summary["hidden_facts_per_task"]),
        ("terminations", ", ".join(f"{k}={v}" for k, v in summary["terminations"].items())),
        ("infra errors", summary["infra_errors"]),
        ("funnel (slots -> kept)", _funnel_text(summary.get("funnel") or {})),
        ("drop reasons", _reasons_text(summary.get("drop_reasons") or {}, top=6)
         if summary.get("drop_reasons") or not summary["tasks"] else "none"),
        ("redrawn at generation (no slot lost)",
         ", ".join(f"{k}={v}" for k, v in (summary.get("redrawn") or {}).items()) or "none"),
        ("model requests", _requests_text(summary.get("requests") or {})),
        ("SFT rows / RL rows", f"{summary['exports']['sft']} / {summary['exports']['rl']}"),
        ("DPO pairs", _dpo_text(summary)),
        ("time (s)", ", ".join(f"{k}={v}" for k, v in summary["timings_s"].items())),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console = Console()
    console.print(table)
    console.print(f"run directory: {root}")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per implementation).")
@click.option("-p", "--plugin", "plugins", multiple=True, metavar="MODULE", help="Also load this plugin.")
@_guard
def plugins_cmd(as_json: bool, plugins: Sequence[str]) -> None:
    """List every registered implementation: hook kind, name, plugin and version."""
    from synthagent.core.registry import load_plugins

    loaded = load_plugins(plugins)
    rows = loaded.describe()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="synthagent implementations")
    for col in ("kind", "name", "plugin", "version", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(escape(str(row[col])) for col in ("kind", "name", "plugin", "version", "description")))
    Console().print(table)


@cli.command("show")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as JSON.")
@_guard
def show_cmd(run: Path, as_json: bool) -> None:
    """Print the summary of run directory RUN (recomputed from its records)."""
    from synthagent.core.summary import summarize
    from synthagent.core.store import RunStore

    store = RunStore.open(run, readonly=True)
    try:
        summary = summarize(store)
    finally:
        store.close()
    if as_json:  # strict JSON: the summary holds no NaN or Infinity (records are checked when read)
        click.echo(json.dumps(summary, indent=2, allow_nan=False))
    else:
        _print_summary(summary, run)


@cli.command("train")
@click.option("-a", "--algorithm", required=True, help="RL algorithm by name (synth plugins lists them: grpo, sft, dpo, ...).")
@click.option("-m", "--model", "model", required=True, type=click.Path(path_type=Path),
              help="A local Hugging Face model directory to start from.")
@click.option("-r", "--run", "run_dir", required=True, type=click.Path(path_type=Path),
              help="The run directory (from synth run) whose tasks, rubrics and exports to train on.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for the model, metrics.jsonl and curves.png  [default: RUN/train/ALGORITHM]")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="An algorithm option or a TRL config field, e.g. --set max_steps=50 (repeatable; values are TOML).")
@click.option("-p", "--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Load a plugin by entry-point name or module path (repeatable).")
@_guard
def train_cmd(algorithm: str, model: Path, run_dir: Path, out: Path | None, overrides: Sequence[str],
              plugins: Sequence[str]) -> None:
    """Train MODEL on run RUN with an RL algorithm plugin and print its final metrics as JSON.

    \b
    Examples:
      synth train --algorithm sft --model ./SmolLM2 --run runs/base --set max_steps=50
      synth train --algorithm grpo --model runs/base/train/sft/model --run runs/base --set max_steps=20
      accelerate launch -m synthagent.core train --algorithm grpo ...   (multi-GPU, DeepSpeed, FSDP)
    """
    from synthagent.core.config import parse_set
    from synthagent.core.errors import RunDirectoryError
    from synthagent.core.protocols import TrainRequest
    from synthagent.core.registry import load_plugins

    options: dict[str, Any] = {}
    for item in overrides:
        keys, value = parse_set(item)
        node = options
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    impl = load_plugins(plugins).registry("algorithm").get(algorithm)
    if not (run_dir / "manifest.json").is_file():
        raise RunDirectoryError(f"--run {str(run_dir)!r} is not a run directory (no manifest.json); make one with synth run")
    if not (model / "config.json").is_file():
        raise UsageError(f"--model {str(model)!r} is not a local Hugging Face model directory (no config.json)")
    request = TrainRequest(run_dir=str(run_dir), model=str(model),
                           output_dir=str(out or run_dir / "train" / algorithm), options=options)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):  # trainers print their logs; stdout carries only the result
            result = impl.create().train(request)
    except ImportError as exc:
        raise UsageError(f"algorithm {algorithm!r} needs the training extra: pip install 'synthagent[train]' ({exc})") from exc
    except SynthError:
        raise
    except Exception as exc:
        raise SynthError(f"training failed: {type(exc).__name__}: {exc}") from exc
    click.echo(json.dumps({k: v for k, v in dict(result).items() if k != "task_ids"}, indent=2, default=str))


@cli.command("eval")
@click.option("--policy", metavar="NAME",
              help="The LLM backend to evaluate (synth plugins lists them: oracle, openai, transformers, ...).")
@click.option("-r", "--run", "run_dir", type=click.Path(path_type=Path),
              help="Evaluate on this run directory's tasks (with its rubrics, user and tool simulator).")
@click.option("-b", "--bench", metavar="NAME", help="Evaluate on a named benchmark (hook synth_register_benchmarks).")
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="llm.KEY=VALUE sets a policy option (llm.model=..., llm.base_url=..., llm.temperature=0); "
                   "any other key overrides the environment's config (values are TOML; repeatable).")
@click.option("-k", "--repeats", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Episodes per task (pass^k is reported for k = 1..repeats).")
@click.option("--tasks", type=click.IntRange(1), help="Evaluate at most this many tasks (a benchmark: how many to draw).")
@click.option("--seed", type=int, help="Seed of a benchmark's tasks  [default: the benchmark's]")
@click.option("--train-run", type=click.Path(path_type=Path),
              help="Refuse to evaluate unless the tasks are held out from this training run's (see --split).")
@click.option("--split", type=click.Choice(["content", "template", "domain"]), default="content", show_default=True,
              help="Held-out protocol checked against --train-run: no shared task content; also no shared "
                   "template, or no shared domain.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that holds eval directories  [default: RUN/evals with --run, else evals]")
@click.option("-n", "--name", help="Eval directory name  [default: POLICY-YYYYmmdd-HHMMSS]")
@click.option("--resume", is_flag=True, help="Continue the eval directory --name (episodes already written are kept).")
@click.option("--compare", nargs=2, type=click.Path(path_type=Path), metavar="A B",
              help="Compare two eval directories: paired difference and exact McNemar test (evaluates nothing).")
@click.option("-p", "--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Load a plugin by entry-point name or module path (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_guard
def eval_cmd(policy: str | None, run_dir: Path | None, bench: str | None, overrides: Sequence[str], repeats: int,
             tasks: int | None, seed: int | None, train_run: Path | None, split: str, out: Path | None,
             name: str | None, resume: bool, compare: tuple[Path, Path] | None, plugins: Sequence[str],
             as_json: bool, quiet: bool) -> None:
    """Evaluate a policy on a run's tasks or a named benchmark, or compare two evaluations.

    The headline success is independent of the training reward: the final state equals the gold state and
    the required answer values are reported (a benchmark's own checker for benchmarks that have one). Writes
    an eval directory (manifest.json, tasks, rubrics, trajectories, scores, episodes.jsonl, results.json);
    `synth report EVAL_DIR` draws it. See docs/evaluation.md.

    \b
    Examples:
      synth eval --policy oracle --run runs/heldout
      synth eval --policy transformers --set llm.model=runs/train/train/sft/model --run runs/heldout -k 4
      synth eval --policy openai --set llm.base_url=http://localhost:8000/v1 --bench offline-domains
      synth eval --policy oracle --run runs/heldout --train-run runs/train --split domain
      synth eval --compare runs/heldout/evals/sft runs/heldout/evals/grpo
    """
    import asyncio

    from synthagent.core.evaluation import compare as compare_evals

    if compare:
        if policy or run_dir or bench:
            raise UsageError("--compare A B compares two eval directories: drop --policy, --run and --bench")
        result = compare_evals(*compare)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            _print_compare(result)
        return
    if not policy:
        raise UsageError("synth eval needs --policy NAME (an LLM backend: synth plugins lists them), or --compare A B")
    if bool(run_dir) == bool(bench):
        raise UsageError("synth eval needs exactly one of --run RUN and --bench NAME")
    results, root = asyncio.run(_evaluate(policy, run_dir, bench, overrides, repeats, tasks, seed, train_run, split,
                                          out, name, resume, plugins, quiet))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        _print_eval(results, root)


async def _evaluate(policy_name: str, run_dir: Path | None, bench: str | None, overrides: Sequence[str],
                    repeats: int, count: int | None, seed: int | None, train_run: Path | None, split: str,
                    out: Path | None, name: str | None, resume: bool, plugins: Sequence[str],
                    quiet: bool) -> tuple[dict[str, Any], Path]:
    import attrs

    from synthagent.core.capabilities import capabilities
    from synthagent.core.config import config_from_dict, parse_set
    from synthagent.core.errors import ConfigError, RunDirectoryError
    from synthagent.core.evaluation import EvalSpec, eval_id, evaluate, prepare_tasks
    from synthagent.core.heldout import check_heldout
    from synthagent.core.protocols import Benchmark, RunContext
    from synthagent.core.registry import load_plugins
    from synthagent.core.runtime import Runtime
    from synthagent.core.store import RunStore

    loaded = load_plugins(plugins)
    policy_options: dict[str, Any] = {}
    env_sets: list[tuple[list[str], Any, str]] = []
    for item in overrides:
        keys, value = parse_set(item)
        if keys[0] == "llm":
            if len(keys) != 2 or keys[1] == "backend":
                raise UsageError(f"--set {item!r}: policy options are llm.KEY=VALUE (the backend is --policy)")
            policy_options[keys[1]] = value
        else:
            env_sets.append((keys, value, item))
    data: dict[str, Any]
    success = "state"
    if run_dir is not None:
        if not (run_dir / "manifest.json").is_file():
            raise RunDirectoryError(f"--run {str(run_dir)!r} is not a run directory (no manifest.json); make one with synth run")
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        data = dict(manifest.get("config") or {})
        source: dict[str, Any] = {"run": str(run_dir)}
    else:
        impl = loaded.registry("benchmark").get(str(bench))
        benchmark = impl.create()
        if not isinstance(benchmark, Benchmark):
            raise ConfigError(f"benchmark {bench!r} is {type(benchmark).__name__}, not a synthagent Benchmark")
        if benchmark.success not in ("state", "scorer"):
            raise ConfigError(f"benchmark {bench!r}: success must be 'state' or 'scorer', got {benchmark.success!r}")
        success = benchmark.success
        data = {}
        items = benchmark.overrides
        pairs = [parse_set(x) for x in items] if isinstance(items, (list, tuple)) else list(_flatten(dict(items)))
        for keys, value in pairs:
            _put(data, keys, value)
        source = {"bench": bench}
    for keys, value, _item in env_sets:
        _put(data, keys, value)
    if seed is not None:
        data["seed"] = seed
    if count is not None and bench:
        data["tasks"] = count
    config = config_from_dict(data, origin=str(run_dir or f"benchmark {bench}"))
    impl = loaded.registry("llm").get(policy_name)
    accepted = impl.accepted_options()
    factory_options = {k: v for k, v in policy_options.items()
                       if accepted is None or k in accepted or k not in ("temperature", "max_tokens")}
    policy = impl.create(factory_options)
    runtime = Runtime(config, loaded, extra_plugins=tuple(plugins))
    spec = EvalSpec(policy=policy_name, policy_options=policy_options, source=source, repeats=repeats, success=success)
    out_dir = out or (run_dir / "evals" if run_dir is not None else Path("evals"))
    root = out_dir / (name or f"{policy_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if resume:
        if not name:
            raise UsageError("--resume needs --name (the eval directory to continue)")
        store = RunStore.open(root)
        if store.manifest.get("eval_id") != eval_id(spec):
            raise UsageError(f"--resume: {str(root)!r} evaluated something else (policy, options, source or repeats "
                             "differ); choose another --name")
        eval_tasks = store.tasks.load()
    else:
        if root.exists():
            raise RunDirectoryError(f"eval directory {str(root)!r} exists; pass --resume to continue it or choose another --name")
        if run_dir is not None:
            src = RunStore.open(run_dir, readonly=True)  # a source is read, never locked or repaired
            try:
                rubric_of = {r.task_id: r for r in src.rubrics}
                eval_tasks = [t for t in src.tasks if t.id in rubric_of and not rubric_of[t.id].dropped]
            finally:
                src.close()
            if not eval_tasks:
                raise RunDirectoryError(f"--run {str(run_dir)!r} has no task with a kept rubric to evaluate on")
            eval_tasks = eval_tasks[: count or len(eval_tasks)]
        else:
            from synthagent.core.protocols import GenerationContext
            from synthagent.core.stages.generate import missing_evidence

            eval_tasks = []
            ctx = GenerationContext(count=config.tasks, seed=config.seed, llm=runtime.components.llm, done_slots=frozenset())
            async for task in runtime.components.generator.generate(ctx):
                if missing_evidence(task) is None:
                    eval_tasks.append(task)
                if len(eval_tasks) >= config.tasks:
                    break
    heldout = None
    if train_run is not None:
        train = RunStore.open(train_run, readonly=True)
        try:
            heldout = check_heldout(train.tasks.load(), eval_tasks, split)
        finally:
            train.close()
    runtime.setup(root)
    policy_caps = capabilities(policy, "llm", policy_name)
    if "setup" in policy_caps:
        cast(Any, policy).setup(RunContext(llm=policy, mapping=runtime.components.mapping, run_dir=str(root), seed=config.seed))
    if not resume:
        from synthagent.core.redact import redact_config

        store = RunStore.create(out_dir, root.name, {  # no secret written (policy URLs, keys)
            "kind": "eval", "eval_id": eval_id(spec), "spec": redact_config(attrs.asdict(spec)),
            "config": redact_config(config.to_dict()),
            "heldout": heldout, "plugins": loaded.loaded, "created": datetime.now().isoformat(timespec="seconds")})
        for task in eval_tasks:
            store.tasks.append(task)
        if run_dir is not None:
            src = RunStore.open(run_dir, readonly=True)
            try:
                for rubric in (r for r in src.rubrics if r.task_id in {t.id for t in eval_tasks}):
                    store.rubrics.append(rubric)
            finally:
                src.close()
        store.tasks.sync()
    progress = _Progress(quiet)
    try:
        async with runtime:
            tasks_, rubrics = await prepare_tasks(runtime, store, len(eval_tasks), config.seed)
            with progress:
                results = await evaluate(runtime, policy, store, tasks_, rubrics, spec, progress=progress.update)
    finally:
        if "aclose" in policy_caps:
            await cast(Any, policy).aclose()
        store.close()
    return results, root


def _flatten(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Any:
    """(key path, value) pairs of a benchmark's overrides: nested tables and dotted keys (``simulate.max_turns``)."""
    for key, value in data.items():
        path = (*prefix, *str(key).split("."))
        if isinstance(value, dict) and (prefix or path[0] in ("plugins", "llm", "simulate", "export")):
            yield from _flatten(value, path)
        else:
            yield list(path), value


def _put(data: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    from synthagent.core.config import set_path

    set_path(data, keys, value, what=f"--set {'.'.join(keys)}")


def _dpo_text(summary: dict[str, Any]) -> str:
    """``3`` or ``0 (fewer_than_two_scored=200)``: the DPO pairs and why tasks have none."""
    n = (summary.get("exports") or {}).get("dpo")
    unpaired = summary.get("dpo_unpaired") or {}
    return f"{n}" + (" (no pair: " + ", ".join(f"{k}={v}" for k, v in unpaired.items()) + ")" if unpaired else "")


def _print_eval(results: dict[str, Any], root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    s, r = results["success"], results["rubric"]
    table = Table(title=f"synth eval {results['policy']} on {next(iter(results['source'].values()))}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("tasks / episodes", f"{results['tasks']} / {results['episodes']}"),
        ("success (state + answer)" if results.get("success_mode") == "state" else "success (checker)",
         f"{s['successes']}/{s['n']} = {s['rate']}  95% CI [{s['ci95'][0]}, {s['ci95'][1]}]"),
        ("pass^k", ", ".join(f"k={k}: {v}" for k, v in results["pass_hat_k"].items())),
        ("rubric reward (mean)", str(r["mean_reward"])),
        ("rubric success", f"{r['success']['rate']}"),
        ("failures", ", ".join(f"{k}={v}" for k, v in results["failures"].items()) or "0"),
        ("infra errors", str(results["infra_errors"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console = Console()
    console.print(table)
    console.print(f"eval directory: {root}")


def _print_compare(result: dict[str, Any]) -> None:
    click.echo(f"A {result['a']}: {result['a_success']['successes']}/{result['pairs']} "
               f"CI {result['a_success']['ci95']}")
    click.echo(f"B {result['b']}: {result['b_success']['successes']}/{result['pairs']} "
               f"CI {result['b_success']['ci95']}")
    click.echo(f"paired on {result['pairs']} episodes of {result['tasks']} tasks: A - B = {result['difference']:+.4f} "
               f"(per task {result['per_task_difference']:+.4f}); only A {result['only_a']}, only B {result['only_b']}, "
               f"exact McNemar p = {result['mcnemar_p']}")


@cli.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for index.html and its PNG plots  [default: RUN/report]")
@_guard
def report_cmd(run: Path, out: Path | None) -> None:
    """Write an HTML report of run directory RUN: the summary table and PNG plots (rewards, tool calls,
    turns, mapping hit rate, failures and drops, learning curves when the run trained). Opens offline.

    RUN may also be an eval directory (synth eval): the page then shows the success bars with their 95%
    intervals, pass^k and failures by kind."""
    from synthagent.core.report import write_eval_report, write_report

    page = write_eval_report(run, out) if (run / "episodes.jsonl").is_file() else write_report(run, out)
    click.echo(f"report written to {page}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``synth`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="synth")
