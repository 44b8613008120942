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
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import attrs
import pluggy

from synthagent.core import hookspecs
from synthagent.core.errors import ConfigError, PluginLoadError, SynthError, UnknownImplementationError, close_matches

__all__ = [
    "builtin_modules",
    "ENV_AUTOLOAD_OFF",
    "ENV_PLUGINS",
    "Implementation",
    "Registry",
    "Plugins",
    "load_plugins",
]

if TYPE_CHECKING:
    import click

    from synthagent.core.protocols import (
        Executor,
        LLMBackend,
        MappingStore,
        RewardScorer,
        RLAlgorithm,
        RubricBuilder,
        TaskGenerator,
        ToolSimulator,
        UserSimulator,
    )

T = TypeVar("T")

ENV_AUTOLOAD_OFF = "SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "SYNTHAGENT_PLUGINS"
_DIST = "synthagent"
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def builtin_modules() -> list[tuple[str, str]]:
    """(name, module) of the built-in plugins from a source tree's ``pyproject.toml`` entry points.

    Used only when the ``synthagent`` distribution's entry points are not installed; core names no plugin.
    """
    import tomllib

    try:
        data = tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PluginLoadError(f"the built-in plugins are not installed and {_PYPROJECT} is unreadable: {exc}") from exc
    table = data.get("project", {}).get("entry-points", {}).get(hookspecs.PROJECT, {})
    return sorted((str(name), str(module)) for name, module in table.items())


def _check_import_string(target: str) -> str | None:
    """Why ``target`` is not a ``"package.module:Attr"`` import string (``None`` when it is one)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        return "expected 'package.module:Attr'"
    if not all(part.isidentifier() for part in module.split(".") + attr.split(".")):
        return "a module path and attribute must be dotted Python identifiers"
    return None


def resolve_import_string(target: str, *, what: str) -> Any:
    """Import ``"package.module:Attr"`` (``Attr`` may be dotted) and return the attribute.

    :param what: names the implementation and its plugin in the error.
    :raises PluginLoadError: the module does not import or has no such attribute.
    """
    reason = _check_import_string(target)
    if reason:
        raise PluginLoadError(f"{what}: bad import string {target!r}: {reason}")
    module_name, _, attr = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
        raise PluginLoadError(f"{what}: {target!r} does not resolve: module {module_name!r} failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise PluginLoadError(f"{what}: {target!r} does not resolve: {module_name!r} has no attribute {attr!r}") from None
    return value


@attrs.frozen
class Implementation(Generic[T]):
    """A registered implementation: its kind, name, factory and the plugin (with version) it came from.

    ``factory`` is a callable, or a lazy import string ``"package.module:Attr"`` that :meth:`resolve` imports
    only when the implementation is built (listing implementations imports nothing).
    """

    kind: str
    name: str
    #: The factory as registered: a callable, or a lazy import string (the constructor argument ``factory``).
    target: Callable[..., T] | str = attrs.field(alias="factory")
    plugin: str
    version: str
    description: str = ""

    @property
    def lazy(self) -> bool:
        """Whether the factory is an import string (resolved only when the implementation is built)."""
        return isinstance(self.target, str)

    @property
    def factory(self) -> Callable[..., T]:
        """The factory itself; a lazy import string is imported now (see :meth:`resolve`)."""
        return self.resolve()

    def resolve(self) -> Callable[..., T]:
        """The factory itself, importing a lazy import string first.

        :raises PluginLoadError: the import string does not resolve (the message names the plugin).
        """
        if not isinstance(self.target, str):
            return self.target
        value = resolve_import_string(self.target, what=f"{self.kind} {self.name!r} of plugin {self.plugin!r}")
        if self.kind != hookspecs.COMMAND_KIND and not callable(value):
            raise PluginLoadError(f"{self.kind} {self.name!r} of plugin {self.plugin!r}: {self.target!r} resolves "
                                  f"to {type(value).__name__}, not a factory")
        return value  # type: ignore[no-any-return]

    def accepted_options(self) -> list[str] | None:
        """The option names the factory takes (keyword parameters), or None when it takes any (``**kwargs``)
        or its signature cannot be read."""
        try:
            sig = inspect.signature(self.resolve())
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return [n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def create(self, options: Mapping[str, Any] | None = None) -> T:
        """Build the implementation from its options, checking option names against the factory.

        Raises :class:`ConfigError` naming an unknown option and listing the accepted ones, and
        :class:`PluginLoadError` when a lazy factory does not resolve.
        """
        options = dict(options or {})
        factory = self.resolve()
        accepted = self.accepted_options()
        if accepted is not None:
            for key in options:
                if key not in accepted:
                    raise ConfigError(
                        f"unknown option {key!r} for {self.kind} {self.name!r}; it accepts {accepted or 'no options'}."
                        + close_matches(key, accepted)
                    )
        try:
            return factory(**options)
        except SynthError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.kind} {self.name!r} rejected its options {options}: {exc}") from exc
        except Exception as exc:  # a broken factory must not end in a traceback: name the plugin instead
            raise PluginLoadError(f"{self.kind} {self.name!r} (plugin {self.plugin!r}) failed to start: "
                                  f"{type(exc).__name__}: {exc}") from exc


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

    def __iter__(self) -> Iterator[Implementation[T]]:
        return iter(sorted(self._items.values(), key=lambda i: i.name))

    def __contains__(self, name: object) -> bool:
        return name in self._items


@attrs.define
class Plugins:
    """The loaded plugin manager and one registry per hook kind."""

    pm: pluggy.PluginManager
    registries: dict[str, Registry[Any]]
    loaded: list[dict[str, str]]

    @overload
    def registry(self, kind: Literal["generator"]) -> Registry[TaskGenerator]: ...
    @overload
    def registry(self, kind: Literal["user"]) -> Registry[UserSimulator]: ...
    @overload
    def registry(self, kind: Literal["tools"]) -> Registry[ToolSimulator]: ...
    @overload
    def registry(self, kind: Literal["mapping"]) -> Registry[MappingStore]: ...
    @overload
    def registry(self, kind: Literal["rubric"]) -> Registry[RubricBuilder]: ...
    @overload
    def registry(self, kind: Literal["scorer"]) -> Registry[RewardScorer]: ...
    @overload
    def registry(self, kind: Literal["algorithm"]) -> Registry[RLAlgorithm]: ...
    @overload
    def registry(self, kind: Literal["llm"]) -> Registry[LLMBackend]: ...
    @overload
    def registry(self, kind: Literal["executor"]) -> Registry[Executor]: ...
    @overload
    def registry(self, kind: Literal["command"]) -> Registry[click.Command]: ...
    @overload
    def registry(self, kind: str) -> Registry[Any]: ...

    def registry(self, kind: str) -> Registry[Any]:
        """The registry of hook kind ``kind`` (``generator``, ``user``, ``tools``, ...), typed by kind."""
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
        for label, path in builtin_modules():
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

            def register(name: str, factory: Callable[..., Any] | str, description: str = "", *,
                         _kind: str = kind, _plugin: str = plugin_name, _version: str = version) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginLoadError(f"plugin {_plugin!r} registered a {_kind} without a name")
                if isinstance(factory, str):
                    reason = _check_import_string(factory)
                    if reason:
                        raise PluginLoadError(f"plugin {_plugin!r} registered {_kind} {name!r} with a bad import "
                                              f"string {factory!r}: {reason}")
                elif not callable(factory):
                    raise PluginLoadError(f"plugin {_plugin!r} registered {_kind} {name!r} with "
                                          f"{type(factory).__name__}, not a factory or an import string")
                registries[_kind].add(Implementation(_kind, name, factory, _plugin, _version, description))

            def register_command(name: str, command: Any, description: str = "", *,
                                 _register: Callable[..., None] = register) -> None:
                _register(name, command, description)

            given = register_command if kind == hookspecs.COMMAND_KIND else register
            try:
                hookimpl.function(**({"register": given} if "register" in hookimpl.argnames else {}))
            except PluginLoadError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PluginLoadError(
                    f"plugin {plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
    return Plugins(pm=pm, registries=registries, loaded=loaded)
