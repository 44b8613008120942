"""The Runtime: the one owner of a run's components and of a rollout.

A :class:`Runtime` is built once from a validated :class:`~synthagent.core.config.RunConfig` and the loaded
plugins (or rebuilt from a run directory with :meth:`Runtime.from_run_dir`). It

* builds every implementation the config names (unknown names and options fail here, before anything is
  written) and checks their optional capabilities once (:mod:`synthagent.core.capabilities`);
* runs their lifecycle: :meth:`setup` once (before the run directory exists), ``async with runtime:`` closes
  them;
* merges their counters (:meth:`stats`) and prompt hashes (:meth:`prompt_hashes`), the workers' included;
* derives record ids (:meth:`trajectory_id`) and performs one rollout (:meth:`rollout`), one score
  (:meth:`score`), one generation slot (:meth:`synthesize`).

The pipeline's stages, the executors' workers (:mod:`synthagent.core.engine`), the TRL environment and reward
validation all go through it, so a rollout is written once::

    runtime = Runtime(load_config(None, ["tasks=5"]), load_plugins())
    runtime.setup("runs/demo")
    async with runtime:
        trajectory = await runtime.rollout(task, sample=0)
        score = await runtime.score(task, rubric, trajectory)
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs

from synthagent.core.capabilities import capabilities, check_compatible, check_protocol
from synthagent.core.config import LLMConfig, RunConfig, config_from_dict
from synthagent.core.errors import ConfigError, ConfigWarning, FatalRunError, PluginError, RunDirectoryError
from synthagent.core.models import Rubric, Score, Task, Trajectory, trajectory_id
from synthagent.core.protocols import (
    Executor,
    LLMBackend,
    RewardScorer,
    RubricBuilder,
    RunContext,
    TaskGenerator,
    ToolSimulator,
    UserSession,
    UserSimulator,
)
from synthagent.core.registry import Plugins

__all__ = ["Components", "Runtime", "WorkerSpec", "build_components", "check_plugin_tables", "resolve_concurrency",
           "plugin_bug", "DEFAULT_CONCURRENCY", "COMPONENT_KINDS"]

#: Rollouts in flight when neither ``simulate.concurrency`` nor the backend says (``max_concurrency``).
DEFAULT_CONCURRENCY = 32

#: The components of a run, in the order they are set up (the executor last: it may start workers).
COMPONENT_KINDS: tuple[str, ...] = ("llm", "mapping", "generator", "user", "tools", "rubric", "scorer", "executor")

#: ``wrap_user(session) -> session``: lets a caller decorate the user session of one rollout.
UserWrapper = Callable[[UserSession], UserSession]


@attrs.define
class Components:
    """The implementations a run uses, built from the config before anything is written."""

    generator: TaskGenerator
    user: UserSimulator
    tools: ToolSimulator
    rubric: RubricBuilder
    scorer: RewardScorer
    executor: Executor
    llm: LLMBackend
    mapping: Any

    def items(self) -> list[tuple[str, Any]]:
        """``(kind, component)`` in set-up order."""
        return [(kind, getattr(self, kind)) for kind in COMPONENT_KINDS]


@attrs.frozen
class WorkerSpec:
    """What a worker process needs to rebuild a run's :class:`Runtime`.

    :param config: the validated run configuration.
    :param plugins: plugin names or module paths to load beside the built-ins (``--plugin``).
    :param environ: the ``SYNTHAGENT_*`` environment variables of the driver (plugin autoload switches).
    :param run_dir: the run directory (implementations' ``setup`` put per-run files there).
    """

    config: RunConfig
    plugins: tuple[str, ...] = ()
    environ: tuple[tuple[str, str], ...] = ()
    run_dir: str = ""

    @property
    def key(self) -> str:
        """Identifies the runtime built from this spec (one per process and key)."""
        return f"{self.config.fingerprint()}|{self.plugins}|{self.environ}|{self.run_dir}"


def check_plugin_tables(config: RunConfig, plugins: Plugins) -> None:
    """Every ``[plugins.NAME]`` table must name an implementation some loaded plugin registers, and every
    ``[plugins.NAME.KIND]`` sub-table one of that kind: a misspelled table would be ignored without a word.

    :raises ConfigError: ``unknown plugin table 'csv-gaols'; did you mean 'csv-goals'? ...``
    """
    import difflib

    from synthagent.core.hookspecs import HOOK_KINDS

    known: dict[str, list[str]] = {}
    for kind in HOOK_KINDS:
        for name in plugins.registry(kind).names():
            known.setdefault(name, []).append(kind)
    for table, options in config.plugins.items():
        if table not in known:
            close = difflib.get_close_matches(table, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown plugin table {table!r}{hint} (config [plugins.{table}]: no loaded plugin "
                              f"registers an implementation of that name; known: {', '.join(sorted(known))})")
        for sub, value in options.items():
            if sub in HOOK_KINDS and isinstance(value, Mapping) and sub not in known[table]:
                raise ConfigError(f"unknown plugin table 'plugins.{table}.{sub}': {table!r} is not a {sub} "
                                  f"implementation (it is a {', '.join(known[table])})")


#: The [llm] table's defaults: a generic setting left at its default is no one's mistake when a backend lacks it.
_LLM_DEFAULTS: dict[str, Any] = attrs.asdict(LLMConfig())


def build_components(config: RunConfig, plugins: Plugins) -> Components:
    """Look up and build every implementation the config names (unknown names, tables and options, and option
    values of the wrong type or range, fail here)."""
    check_plugin_tables(config, plugins)

    def make(kind: str, name: str, base: Mapping[str, Any] | None = None) -> Any:
        impl = plugins.registry(kind).get(name)
        options = dict(base or {})
        paths: dict[str, str] = {}
        if options:  # generic settings ([llm]) are offered; an implementation takes what it knows
            accepted = impl.accepted_options()
            if accepted is not None:
                ignored = sorted(k for k, v in options.items() if k not in accepted and v != _LLM_DEFAULTS.get(k))
                if ignored:  # set by the user, but this backend has no such option: say so, do not drop it quietly
                    import warnings

                    warnings.warn(ConfigWarning(
                        f"{', '.join(f'{kind}.{k}' for k in ignored)} {'has' if len(ignored) == 1 else 'have'} no "
                        f"effect with {kind}.backend = {name!r} (it takes {sorted(accepted) or 'no options'})"),
                        stacklevel=2)
                options = {k: v for k, v in options.items() if k in accepted}
            paths.update({k: f"{kind}.{k}" for k in options})
        own = config.options_for(name, kind)
        table = config.plugins.get(name, {})
        prefix = f"plugins.{name}.{kind}" if isinstance(table.get(kind), Mapping) else f"plugins.{name}"
        paths.update({k: f"{prefix}.{k}" for k in own})
        options.update(own)
        return impl.create(options, paths=paths)

    llm_base = attrs.asdict(config.llm)
    llm_base.pop("backend")
    return Components(
        generator=make("generator", config.generator),
        user=make("user", config.user),
        tools=make("tools", config.tools),
        rubric=make("rubric", config.rubric),
        scorer=make("scorer", config.scorer),
        executor=make("executor", config.executor),
        llm=make("llm", config.llm.backend, llm_base),
        mapping=make("mapping", config.mapping),
    )


def resolve_concurrency(config: RunConfig, llm: Any) -> int:
    """Jobs in flight: ``simulate.concurrency`` when set (> 0), else the backend's ``max_concurrency``
    (the ``openai`` backend: 64), else :data:`DEFAULT_CONCURRENCY`."""
    if config.simulate.concurrency > 0:
        return config.simulate.concurrency
    backend = getattr(llm, "max_concurrency", None)
    if isinstance(backend, int) and not isinstance(backend, bool) and backend > 0:
        return backend
    return DEFAULT_CONCURRENCY


class Runtime:
    """Owns a run's components: builds, checks, sets up and closes them, and performs rollouts.

    :param config: the validated run configuration.
    :param plugins: loaded plugins (their registries supply the implementations).
    :param components: already built components (tests, reward validation); default: built from ``config``.
    :param extra_plugins: the ``--plugin`` values the run loaded (worker processes load them again).
    """

    def __init__(self, config: RunConfig, plugins: Plugins | None = None, *, components: Components | None = None,
                 extra_plugins: tuple[str, ...] | None = None) -> None:
        built = components is None
        if components is None:
            if plugins is None:
                raise TypeError("Runtime needs plugins or components")
            components = build_components(config, plugins)
        self.config = config
        self.plugins = plugins
        self.components = components
        self._extra_plugins = extra_plugins
        if built:  # what a plugin built must be what its kind promises, before anything is written
            for kind, comp in components.items():
                check_protocol(comp, kind, self._selected().get(kind, kind), self.plugin_of(kind))
        #: checked optional capabilities of each component, by kind
        self.capabilities: dict[str, frozenset[str]] = {
            kind: capabilities(comp, kind, self._selected().get(kind, kind)) for kind, comp in components.items()}
        check_compatible(self._selected(), dict(components.items()))  # impossible combinations: refused now
        self.run_dir = ""
        self._set_up: set[int] = set()
        self._closed = False
        self._demonstrator: LLMBackend | None = None
        #: backends components asked for (:meth:`backend`): key -> (owner kind, name, backend, capabilities)
        self._backends: dict[str, tuple[str, str, Any, frozenset[str]]] = {}
        builder = components.rubric
        name = str(getattr(builder, "demonstrator", "") or "") if "demonstrations" in self.capabilities["rubric"] else ""
        if name:
            if plugins is None:
                raise TypeError(f"rubric builder asks for demonstrator {name!r}: the Runtime needs plugins")
            options = dict(getattr(builder, "demonstrator_options", {}) or {})
            where = f"plugins.{config.rubric}.demonstrator_options"
            self._demonstrator = plugins.registry("llm").get(name).create(
                options, paths={k: f"{where}.{k}" for k in options})

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, run_dir: str | Path, *, plugins: Plugins | None = None) -> Runtime:
        """Rebuild the runtime of an existing run directory from its manifest (the strict config parser;
        plugins the run loaded with ``--plugin`` are loaded again). Call :meth:`setup` before use."""
        import json

        from synthagent.core.registry import load_plugins

        root = Path(run_dir)
        path = root / "manifest.json"
        if not path.is_file():
            raise RunDirectoryError(f"run directory {str(run_dir)!r} does not exist or is not a synthagent run "
                                    "(no manifest.json); make one with `synth run`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunDirectoryError(f"{str(path)!r} is not readable JSON: {exc}") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
            raise RunDirectoryError(f"{str(path)!r} has no configuration object (key 'config')")
        config = config_from_dict(manifest["config"], origin=str(path))
        extra = tuple(p.get("module", "") for p in manifest.get("plugins", [])
                      if isinstance(p, dict) and p.get("source") == "--plugin" and p.get("module"))
        runtime = cls(config, plugins or load_plugins(extra), extra_plugins=extra)
        runtime.run_dir = str(root)
        return runtime

    @classmethod
    def for_worker(cls, spec: WorkerSpec) -> Runtime:
        """The runtime a worker process builds from a :class:`WorkerSpec` (set up, except the executor: a
        worker never drives an executor itself)."""
        from synthagent.core.registry import load_plugins

        environ = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
        environ.update(dict(spec.environ))
        runtime = cls(spec.config, load_plugins(spec.plugins, environ=environ), extra_plugins=spec.plugins)
        runtime.setup(spec.run_dir, worker=True)
        return runtime

    def _selected(self) -> dict[str, str]:
        c = self.config
        return {"generator": c.generator, "user": c.user, "tools": c.tools, "mapping": c.mapping,
                "rubric": c.rubric, "scorer": c.scorer, "executor": c.executor, "llm": c.llm.backend}

    def selected(self) -> dict[str, str]:
        """The implementation name chosen for each kind."""
        return self._selected()

    def plugin_of(self, kind: str) -> str:
        """The plugin that registered the run's implementation of ``kind`` (``"?"`` when unknown)."""
        name = self._selected().get(kind, "")
        if self.plugins is None or name not in self.plugins.registry(kind):
            return "?"
        return self.plugins.registry(kind).get(name).plugin

    def who(self, kind: str) -> str:
        """``tools 'sqlite' (plugin 'simulators.tools.sqlite')``: names a component in messages."""
        return f"{kind} {self._selected().get(kind, kind)!r} (plugin {self.plugin_of(kind)!r})"

    def plugin_error(self, kind: str, exc: BaseException, doing: str) -> PluginError:
        """The :class:`~synthagent.core.errors.PluginError` for ``exc``, raised by the run's ``kind`` while
        ``doing`` (``"the rollout of task T sample 0"``), with its traceback as details."""
        details = "".join(traceback.format_exception(exc))
        return PluginError(f"{self.who(kind)} raised {type(exc).__name__}: {exc} during {doing}; this is a bug in "
                           "the plugin, not an infrastructure failure (its traceback is in run.log)", details)

    # -- lifecycle -------------------------------------------------------------------------------
    def setup(self, run_dir: str | Path = "", *, worker: bool = False, kinds: tuple[str, ...] | None = None) -> None:
        """Call every component's ``setup(ctx)`` once (before the run directory exists: a setup error leaves
        nothing behind). ``worker`` skips the executor; ``kinds`` limits set-up to those kinds."""
        self.run_dir = str(run_dir or self.run_dir)
        ctx = RunContext(llm=self.components.llm, mapping=self.components.mapping, run_dir=self.run_dir,
                         seed=self.config.seed, backend=self.backend)
        for kind, comp in self.components.items():
            if worker and kind == "executor":
                continue
            if kinds is not None and kind not in kinds:
                continue
            if "setup" in self.capabilities[kind] and id(comp) not in self._set_up:
                self._set_up.add(id(comp))
                comp.setup(ctx)

    def backend(self, name: str, options: Mapping[str, Any] | None = None, *, owner: str = "component") -> Any:
        """The LLM backend ``name`` with ``options`` that a component asked for through
        ``RunContext.backend``: built from the loaded plugins once per name and options (a second ask gets the
        same object), checked against :class:`~synthagent.core.protocols.LLMBackend`, set up, counted under
        ``stats()["<owner>_backend"]`` and closed by :meth:`aclose`.

        :raises ConfigError: unknown backend name or options (from the registry).
        :raises PluginError: the plugin built something that is not an LLM backend.
        """
        import json

        options = dict(options or {})
        key = json.dumps([name, options], sort_keys=True, default=str)
        if key in self._backends:
            return self._backends[key][2]
        if self.plugins is None:
            raise TypeError(f"{owner} asks for its own backend {name!r}: the Runtime needs plugins")
        impl = self.plugins.registry("llm").get(name)
        component = self._selected().get(owner, owner)
        table = self.config.plugins.get(component, {})
        where = (f"plugins.{component}.{owner}" if isinstance(table.get(owner), Mapping) else
                 f"plugins.{component}") + ".backend_options"
        built = impl.create(options, paths={k: f"{where}.{k}" for k in options})
        check_protocol(built, "llm", name, impl.plugin)
        caps = capabilities(built, "llm", name)
        if "setup" in caps:
            cast(Any, built).setup(RunContext(llm=built, mapping=self.components.mapping, run_dir=self.run_dir,
                                   seed=self.config.seed, backend=self.backend))
        self._backends[key] = (owner, name, built, caps)
        return built

    async def aclose(self) -> None:
        """Close every component that holds resources (``aclose``), and every backend a component asked for,
        once; errors of one do not skip others."""
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        seen: set[int] = set()
        for kind, comp in self.components.items():
            if "aclose" in self.capabilities[kind] and id(comp) not in seen:
                seen.add(id(comp))
                try:
                    await comp.aclose()
                except Exception as exc:  # noqa: BLE001 - close the others, then report the first
                    first = first or exc
        for _owner, _name, built, caps in self._backends.values():
            if "aclose" in caps and id(built) not in seen:
                seen.add(id(built))
                try:
                    await built.aclose()
                except Exception as exc:  # noqa: BLE001 - close the others, then report the first
                    first = first or exc
        if first is not None:
            raise first

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- what the run reports --------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, int]]:
        """Counters the components keep, by kind; with worker processes (an executor with ``worker_stats``)
        the workers' counters are added in (their ``engine`` counters are left out: see :meth:`engine_stats`); a
        rubric builder's own demonstrator backend counts under ``demonstrator``."""
        out: dict[str, dict[str, int]] = {}
        for kind in ("llm", "user", "tools", "mapping", "generator", "scorer"):
            if "stats" in self.capabilities[kind]:
                stats = getattr(self.components, kind).stats
                if stats:
                    out[kind] = dict(sorted(stats.items()))
        demonstrator = getattr(self._demonstrator, "stats", None)
        if demonstrator:  # the rubric builder's own demonstrator backend (``demonstrator = NAME``)
            out["demonstrator"] = dict(sorted(demonstrator.items()))
        for owner, _name, built, caps in self._backends.values():  # components' own backends (:meth:`backend`)
            if "stats" in caps and built.stats:
                merged = Counter(out.get(f"{owner}_backend", {}))
                merged.update(built.stats)
                out[f"{owner}_backend"] = dict(sorted(merged.items()))
        for kind, counts in self.worker_stats().items():
            if kind == "engine":
                continue
            merged = Counter(out.get(kind, {}))
            merged.update(counts)
            out[kind] = dict(sorted(merged.items()))
        return out

    def worker_stats(self) -> Mapping[str, Mapping[str, int]]:
        """The executor's workers' counters by kind (empty for an executor that runs jobs here)."""
        executor = self.components.executor
        if callable(getattr(executor, "worker_stats", None)):
            return executor.worker_stats()  # type: ignore[attr-defined,no-any-return]
        return {}

    def prompt_hashes(self) -> dict[str, str]:
        """The hashes of every prompt the components use (recorded in the manifest)."""
        hashes: dict[str, str] = {}
        for kind, comp in self.components.items():
            if "prompt_hashes" in self.capabilities[kind]:
                hashes.update(comp.prompt_hashes())
        return hashes

    @property
    def remote(self) -> bool:
        """Whether the executor runs jobs in other processes."""
        return bool(getattr(self.components.executor, "remote", False))

    @property
    def generates_remotely(self) -> bool:
        """Generation is spread over the executor's workers when they run elsewhere and the generator works
        slot by slot (``slots``/``synthesize``)."""
        return self.remote and "slots" in self.capabilities["generator"]

    def concurrency(self, llm: Any = None) -> int:
        """Jobs in flight for ``llm`` (default: the run's model); see :func:`resolve_concurrency`."""
        return resolve_concurrency(self.config, llm or self.components.llm)

    # -- demonstrations --------------------------------------------------------------------------
    @property
    def demonstrations(self) -> int:
        """Teacher demonstrations the rubric builder wants per task (0: it reads the simulate stage's)."""
        return int(self.components.rubric.demonstrations) if "demonstrations" in self.capabilities["rubric"] else 0  # type: ignore[attr-defined]

    @property
    def demonstrator(self) -> LLMBackend:
        """The backend that plays rubric demonstrations: the builder's ``demonstrator`` or the run's model."""
        return self._demonstrator or self.components.llm

    # -- records ---------------------------------------------------------------------------------
    def trajectory_id(self, task_id: str, sample: int, policy: str | None = None, seed: int | None = None) -> str:
        """The id of sample ``sample`` of ``policy`` (default: the run's model) on a task: the one recipe that
        exact resume relies on."""
        return trajectory_id(task_id, policy or self.components.llm.name, sample,
                             self.config.seed if seed is None else seed)

    def infra_failure(self, task_id: str, sample: int, error: BaseException, policy: str | None = None) -> Trajectory:
        """The record of a rollout that failed for infrastructure reasons (never scored as 0).

        :raises FatalRunError: ``error`` is one (a plugin error, refused credentials): no record, the run stops.
        """
        if isinstance(error, FatalRunError):
            raise error
        policy = policy or self.components.llm.name
        return Trajectory(
            id=self.trajectory_id(task_id, sample, policy), task_id=task_id,
            policy=policy, sample=sample, seed=0, messages=(), termination="infra_error", turns=0,
            error=f"{type(error).__name__}: {error}",
        )

    # -- one unit of work ------------------------------------------------------------------------
    async def rollout(self, task: Task, sample: int, policy: LLMBackend | None = None, *,
                      seed: int | None = None, max_turns: int | None = None,
                      params: Mapping[str, Any] | None = None, wrap_user: UserWrapper | None = None) -> Trajectory:
        """One episode of ``policy`` (default: the run's model) on ``task``: fresh tool and user sessions,
        the agent loop, the sessions closed.

        :param seed: the run seed the episode seed and id derive from (default: the config's).
        :param max_turns: agent turns (default ``simulate.max_turns``).
        :param params: sampling parameters (default: the config's temperature and max_tokens).
        :param wrap_user: decorates the user session (e.g. to stop when a token budget is spent).
        :raises PluginError: the tool or user simulator raised a programming error (:func:`plugin_bug`).
        :raises FatalRunError: the policy raised one (refused credentials: the agent loop alone would record
            it as an infrastructure failure, retried on every resume).
        """
        from synthagent.core.agent_loop import episode_seed, run_episode

        c = self.components
        run_seed = self.config.seed if seed is None else seed
        ep_seed = episode_seed(task.id, sample, run_seed)
        if params is None:
            params = {"temperature": self.config.llm.temperature, "max_tokens": self.config.llm.max_tokens}
        doing = f"the rollout of task {task.id} sample {sample}"
        watched = _FatalWatch(policy or c.llm, None if policy is not None else (
            lambda exc: self.plugin_error("llm", exc, doing)))
        owners: dict[str, tuple[str, ...]] = {"tools": (type(c.tools).__module__,), "user": (type(c.user).__module__,)}
        try:
            tool_session = await c.tools.start(task, ep_seed)
        except Exception as exc:
            raise self._as_plugin_error(exc, {"tools": owners["tools"]}, doing, default="tools") from exc
        owners["tools"] += (type(tool_session).__module__,)
        try:
            user = await c.user.start(task, ep_seed)
            owners["user"] += (type(user).__module__,)
            if wrap_user is not None:
                user = wrap_user(user)
            trajectory = await run_episode(
                task, policy=watched, tools=tool_session, user=user,  # type: ignore[arg-type]
                max_turns=max_turns or self.config.simulate.max_turns, sample=sample, seed=run_seed,
                params=params,
            )
        except Exception as exc:
            if watched.fatal is not None:
                raise watched.fatal from exc
            raise self._as_plugin_error(exc, owners, doing) from exc
        finally:
            await tool_session.aclose()
        if watched.fatal is not None:
            raise watched.fatal
        return trajectory

    def _as_plugin_error(self, exc: BaseException, owners: Mapping[str, tuple[str, ...]], doing: str,
                         default: str | None = None) -> BaseException:
        """``exc`` as a :class:`PluginError` of the component whose module raised it (the deepest frame of the
        traceback in a component's module), when it is a programming error (:func:`plugin_bug`); else ``exc``."""
        if isinstance(exc, FatalRunError) or not plugin_bug(exc):
            return exc
        kind = _raised_in(exc, owners) or default
        if kind is None:
            return exc  # not attributable to a plugin: leave it as it was
        return self.plugin_error(kind, exc, doing)

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """Score one trajectory against its task's rubric with the run's scorer.

        :raises PluginError: the scorer raised a programming error or returned something other than a Score.
        """
        doing = f"scoring trajectory {trajectory.id} (task {task.id})"
        try:
            score = await self.components.scorer.score(task, rubric, trajectory)
        except Exception as exc:
            raise self._as_plugin_error(exc, {}, doing, default="scorer") from exc
        if not isinstance(score, Score):
            raise PluginError(f"{self.who('scorer')} returned a {type(score).__name__} ({_short(score)}) when "
                              f"{doing}, not a synthagent.core.models.Score")
        return score

    async def generate(self, ctx: Any) -> AsyncIterator[Task]:
        """The generator's tasks for ``ctx`` (:class:`~synthagent.core.protocols.GenerationContext`), each
        checked to be a :class:`~synthagent.core.models.Task`.

        :raises PluginError: the generator's ``generate`` is not an async iterator, yields something that is
            not a Task, or raises a programming error.
        """
        who = self.who("generator")
        try:
            stream: Any = self.components.generator.generate(ctx)
        except Exception as exc:
            raise self._as_plugin_error(exc, {}, "generation", default="generator") from exc
        if not hasattr(stream, "__anext__"):
            raise PluginError(f"{who}: generate(ctx) returned a {type(stream).__name__}, not an async iterator of "
                              "Tasks (write it as `async def generate(self, ctx): ... yield task`)")
        index = 0
        try:
            while True:
                try:
                    item = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._as_plugin_error(exc, {}, f"generation (after {index} tasks)",
                                                default="generator") from exc
                if not isinstance(item, Task):
                    raise PluginError(f"{who} yielded a {type(item).__name__} ({_short(item)}) as item {index} of "
                                      "the generation, not a synthagent.core.models.Task")
                index += 1
                yield item
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def synthesize(self, slot: Any) -> Task | None:
        """The task of one generation slot (slot-by-slot generators), or None when the slot was dropped.

        :raises PluginError: the generator returned something other than a Task or None, or raised a
            programming error."""
        try:
            task: Any = await self.components.generator.synthesize(  # type: ignore[attr-defined]
                self.components.llm, slot, self.config.seed)
        except Exception as exc:
            raise self._as_plugin_error(exc, {}, f"generation slot {slot!r}", default="generator") from exc
        if task is not None and not isinstance(task, Task):
            raise PluginError(f"{self.who('generator')} returned a {type(task).__name__} ({_short(task)}) for "
                              f"generation slot {slot!r}, not a synthagent.core.models.Task or None")
        return task  # type: ignore[no-any-return]

    async def build_rubric(self, task: Task, demonstrations: list[Trajectory]) -> Rubric:
        """The task's rubric from its demonstrations (awaiting a builder that asks a teacher).

        :raises PluginError: the builder returned something other than a Rubric or raised a programming error.
        """
        try:
            rubric = self.components.rubric.build(task, demonstrations)
            if inspect.isawaitable(rubric):
                rubric = await rubric
        except Exception as exc:
            raise self.rubric_error(task, exc) from exc
        return self.checked_rubric(task, rubric)

    def rubric_error(self, task: Task, exc: BaseException) -> BaseException:
        """What the rubric stage raises for an exception of the run's rubric builder on ``task``: a
        :class:`PluginError` for a programming error, else ``exc`` itself."""
        return self._as_plugin_error(exc, {}, f"building the rubric of task {task.id}", default="rubric")

    def checked_rubric(self, task: Task, rubric: Any) -> Rubric:
        """``rubric``, checked to be the :class:`Rubric` the run's builder must return for ``task``.

        :raises PluginError: it is something else (named, with the builder and its plugin).
        """
        if not isinstance(rubric, Rubric):
            raise PluginError(f"{self.who('rubric')} returned a {type(rubric).__name__} ({_short(rubric)}) when "
                              f"building the rubric of task {task.id}, not a synthagent.core.models.Rubric")
        return rubric

    # -- workers ---------------------------------------------------------------------------------
    def worker_spec(self) -> WorkerSpec:
        """What an executor's worker processes need to rebuild this runtime."""
        if self._extra_plugins is not None:
            extra = self._extra_plugins
        else:
            loaded = self.plugins.loaded if self.plugins is not None else []
            extra = tuple(p["name"] for p in loaded if p.get("source") != "builtin")
        environ = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SYNTHAGENT_")))
        return WorkerSpec(self.config, extra, environ, self.run_dir)


#: Exception types that mean a bug in the code that raised them, not a server or network failure.
_BUG_TYPES: tuple[type[BaseException], ...] = (TypeError, AttributeError, LookupError, NameError, AssertionError,
                                               ArithmeticError, NotImplementedError, ValueError)


def plugin_bug(exc: BaseException) -> bool:
    """Whether ``exc`` is a programming error of the code that raised it (``TypeError``, ``KeyError``,
    ``AttributeError``, ``ValueError``, a ``UsageError`` raised mid-run, ...), as opposed to an infrastructure
    failure (``OSError`` and its connection and timeout errors, a backend that gave up, a lost worker, or an
    exception whose class says ``infrastructure = True``), which ``--resume`` retries."""
    from synthagent.core.errors import SynthError, UsageError

    if getattr(exc, "infrastructure", False) or isinstance(exc, (OSError, UnicodeError, FatalRunError)):
        return False
    if isinstance(exc, SynthError):
        return isinstance(exc, UsageError)
    return isinstance(exc, _BUG_TYPES)


def _raised_in(exc: BaseException, owners: Mapping[str, tuple[str, ...]]) -> str | None:
    """The kind whose modules (``owners``: kind -> the modules of its simulator and session classes) hold the
    deepest frame of ``exc``'s traceback (None: no frame of theirs, e.g. a failure in the core)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for kind, modules in owners.items():
            if any(owner and (module == owner or module.startswith(owner + ".")) for owner in modules):
                found = kind
        tb = tb.tb_next
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _FatalWatch:
    """The policy of one rollout, remembering a :class:`FatalRunError` it raised (the agent loop records any
    backend exception as an infrastructure failure; the rollout re-raises a fatal one instead). With ``bug``,
    a programming error of the policy (:func:`plugin_bug`) becomes the :class:`PluginError` ``bug(exc)`` gives:
    used for the run's configured LLM backend, a plugin whose bug would otherwise be retried on every resume."""

    def __init__(self, policy: LLMBackend, bug: Callable[[BaseException], PluginError] | None = None) -> None:
        self._policy = policy
        self.name = policy.name
        self.fatal: FatalRunError | None = None
        self._bug = bug

    async def chat(self, request: Any) -> Any:
        try:
            return await self._policy.chat(request)
        except FatalRunError as exc:
            self.fatal = exc
            raise
        except Exception as exc:
            if self._bug is not None and plugin_bug(exc):
                self.fatal = self._bug(exc)
            raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._policy, attr)
