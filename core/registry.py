"""Plugin loading and the typed registries that hooks fill.

The plugin manager is built per command (and per test): there is no module-level manager and importing this
module has no side effects. Load order: the built-in plugins (the ``synthagent`` distribution's own entry
points, or their module paths when running from an uninstalled source tree), third-party entry points of the
group ``synthagent`` (unless ``SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD`` is set), modules named in
``SYNTHAGENT_PLUGINS`` (comma-separated), then ``--plugin`` arguments (an entry-point name or a module path).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from synthagent.core import hookspecs
from synthagent.core.errors import ConfigError, PluginLoadError, UnknownImplementationError, close_matches

__all__ = [
    "BUILTIN_MODULES",
    "ENV_AUTOLOAD_OFF",
    "ENV_PLUGINS",
    "Implementation",
    "Registry",
    "Plugins",
    "load_plugins",
]

T = TypeVar("T")

#: Built-in plugin modules, used only when the distribution's entry points are not installed.
BUILTIN_MODULES: tuple[str, ...] = (
    "synthagent.plugins.generators.offline_domains",
    "synthagent.plugins.simulators.tools.sqlite",
    "synthagent.plugins.simulators.users.rule",
    "synthagent.plugins.backends.oracle",
    "synthagent.plugins.rubrics.workflow",
    "synthagent.plugins.rubrics.scorer",
    "synthagent.plugins.mapping.memory",
    "synthagent.plugins.executors.local",
    "synthagent.plugins.executors.process",
    "synthagent.plugins.executors.ray",
    "synthagent.plugins.backends.openai",
    "synthagent.plugins.simulators.tools.llm",
    "synthagent.plugins.simulators.users.llm",
    "synthagent.plugins.generators.persona_fuzzy",
    "synthagent.plugins.backends.local",
    "synthagent.plugins.generators.graph_domains",
    "synthagent.plugins.rubrics.judge",
    "synthagent.plugins.rubrics.demonstrated",
    "synthagent.plugins.mapping.sqlite",
    "synthagent.plugins.mapping.redis",
    "synthagent.plugins.training.trl",
)
ENV_AUTOLOAD_OFF = "SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "SYNTHAGENT_PLUGINS"
_DIST = "synthagent"


@attrs.frozen
class Implementation(Generic[T]):
    """A registered implementation: its kind, name, factory and the plugin (with version) it came from."""

    kind: str
    name: str
    factory: Callable[..., T]
    plugin: str
    version: str
    description: str = ""

    def create(self, options: Mapping[str, Any] | None = None) -> T:
        """Build the implementation from its options, checking option names against the factory.

        Raises :class:`ConfigError` naming an unknown option and listing the accepted ones.
        """
        options = dict(options or {})
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            sig = None
        if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            accepted = [n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
            for key in options:
                if key not in accepted:
                    raise ConfigError(
                        f"unknown option {key!r} for {self.kind} {self.name!r}; it accepts {accepted or 'no options'}."
                        + close_matches(key, accepted)
                    )
        try:
            return self.factory(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.kind} {self.name!r} rejected its options {options}: {exc}") from exc


class Registry(Generic[T]):
    """Named implementations of one hook kind. Duplicate names and unknown names are clear errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Implementation[T]] = {}

    def add(self, impl: Implementation[T]) -> None:
        """Add ``impl``; a name already taken raises :class:`PluginLoadError` naming both plugins."""
        existing = self._items.get(impl.name)
        if existing is not None:
            raise PluginLoadError(
                f"{self.kind} {impl.name!r} is registered twice: by plugin {existing.plugin!r} and by plugin "
                f"{impl.plugin!r}. Uninstall one, or rename one of them."
            )
        self._items[impl.name] = impl

    def get(self, name: str) -> Implementation[T]:
        """The implementation called ``name``; unknown names list the known ones with a close-match hint."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownImplementationError(
                f"unknown {self.kind} {name!r}; known: {known}.{close_matches(name, self._items)}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __iter__(self) -> Any:
        return iter(sorted(self._items.values(), key=lambda i: i.name))

    def __contains__(self, name: object) -> bool:
        return name in self._items


@attrs.define
class Plugins:
    """The loaded plugin manager and one registry per hook kind."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry[Any]]
    loaded: list[dict[str, str]]

    def registry(self, kind: str) -> Registry[Any]:
        """The registry of hook kind ``kind`` (``generator``, ``user``, ``tools``, ...)."""
        return self.registries[kind]

    def describe(self) -> list[dict[str, str]]:
        """Every implementation: kind, name, plugin, version, description."""
        return [
            {"kind": impl.kind, "name": impl.name, "plugin": impl.plugin, "version": impl.version,
             "description": impl.description}
            for kind in hookspecs.HOOK_KINDS
            for impl in self.registries[kind]
        ]


def _module_version(module: Any) -> str:
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    top = getattr(module, "__name__", "").split(".")[0]
    try:
        return metadata.version(top)
    except metadata.PackageNotFoundError:
        return "unknown"


def _import(label: str, target: str) -> Any:
    try:
        return importlib.import_module(target)
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
        raise PluginLoadError(
            f"plugin {label!r} failed to import ({target}): {type(exc).__name__}: {exc}. "
            f"Fix or uninstall it, or set {ENV_AUTOLOAD_OFF}=1 to skip third-party plugins."
        ) from exc


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=hookspecs.PROJECT), key=lambda ep: ep.name)


def load_plugins(extra: Iterable[str] = (), *, environ: Mapping[str, str] | None = None) -> Plugins:
    """Build a plugin manager, load every plugin and fill the registries.

    :param extra: ``--plugin`` values: entry-point names or importable module paths.
    :param environ: the environment to read ``SYNTHAGENT_*`` variables from (default ``os.environ``).
    :raises PluginLoadError: a plugin failed to import or register (the message names it).
    """
    env = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded: list[dict[str, str]] = []
    names_seen: set[str] = set()

    def add(module: Any, label: str, version: str, source: str) -> None:
        if label in names_seen or pm.is_registered(module):
            return
        try:
            pm.register(module, name=label)
        except Exception as exc:  # noqa: BLE001
            raise PluginLoadError(f"plugin {label!r} could not be registered: {type(exc).__name__}: {exc}") from exc
        names_seen.add(label)
        loaded.append({"name": label, "module": getattr(module, "__name__", repr(module)), "version": version,
                       "source": source})

    eps = _entry_points()
    own = [ep for ep in eps if ep.dist is not None and ep.dist.name == _DIST]
    if own:
        for ep in own:
            add(_import(ep.name, ep.value), ep.name, ep.dist.version if ep.dist else "unknown", "builtin")
    else:
        for path in BUILTIN_MODULES:
            label = path.removeprefix("synthagent.plugins.")  # as the entry point is named: last parts repeat
            module = _import(label, path)
            add(module, label, _module_version(module), "builtin")

    by_name = {ep.name: ep for ep in eps}
    if not env.get(ENV_AUTOLOAD_OFF):
        for ep in eps:
            if ep in own:
                continue
            dist_version = ep.dist.version if ep.dist else "unknown"
            add(_import(ep.name, ep.value), ep.name, dist_version, "entry-point")

    requested = [p.strip() for p in env.get(ENV_PLUGINS, "").split(",") if p.strip()] + list(extra)
    for name in requested:
        named = by_name.get(name)
        if named is not None:
            add(_import(name, named.value), name, named.dist.version if named.dist else "unknown", "entry-point")
        else:
            module = _import(name, name)
            add(module, name, _module_version(module), "--plugin")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"a plugin implements an unknown hook: {exc}. Check the hook name (synth_register_*).") from exc

    versions = {entry["name"]: entry["version"] for entry in loaded}
    registries: dict[str, Registry[Any]] = {kind: Registry(kind) for kind in hookspecs.HOOK_KINDS}
    for kind, hook_name in hookspecs.HOOK_KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for hookimpl in hook.get_hookimpls():
            plugin_name = hookimpl.plugin_name
            version = versions.get(plugin_name, "unknown")

            def register(name: str, factory: Callable[..., Any], description: str = "", *,
                         _kind: str = kind, _plugin: str = plugin_name, _version: str = version) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginLoadError(f"plugin {_plugin!r} registered a {_kind} without a name")
                registries[_kind].add(Implementation(_kind, name, factory, _plugin, _version, description))

            try:
                hookimpl.function(**({"register": register} if "register" in hookimpl.argnames else {}))
            except PluginLoadError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PluginLoadError(
                    f"plugin {plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
    return Plugins(pm=pm, registries=registries, loaded=loaded)
