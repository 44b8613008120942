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
import math
import os
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import attrs
import pluggy

from synthagent.core import hookspecs
from synthagent.core.errors import (
    ConfigError,
    PluginLoadError,
    PluginWarning,
    SynthError,
    UnknownImplementationError,
    close_matches,
)

__all__ = [
    "builtin_modules",
    "ENV_AUTOLOAD_OFF",
    "ENV_PLUGINS",
    "Implementation",
    "Registry",
    "Plugins",
    "load_plugins",
    "check_option_values",
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

#: Bounds a factory may declare for its numeric options (``option_bounds = {"max_retries": "non_negative"}``);
#: options named like a timeout (``timeout_s``, ``*_timeout_s``, ``timeout``) are positive without declaring it,
#: and other durations (``*_s``) are at least 0.
OPTION_BOUNDS = ("positive", "non_negative")
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _bound_of(name: str, declared: Mapping[str, str]) -> str | None:
    if name in declared:
        return declared[name]
    if name == "timeout" or name.endswith("timeout_s") or name.endswith("_timeout"):
        return "positive"
    if name.endswith("_s"):
        return "non_negative"
    return None


def _option_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The declared type of each keyword parameter of ``factory`` (a class: its ``__init__``; an attrs class:
    its fields), as far as it can be resolved; an unresolvable annotation is left out (not checked)."""
    target: Any = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    for candidate in ((target, factory) if inspect.isclass(factory) else (target,)):
        try:
            hints = typing.get_type_hints(candidate, include_extras=False)
        except Exception:  # noqa: BLE001 - a forward reference that does not resolve: try one by one below
            continue
        if hints:
            return hints
    raw = getattr(target, "__annotations__", {}) or {}
    module = importlib.import_module(getattr(factory, "__module__", "builtins") or "builtins")
    hints = {}
    for name, annotation in raw.items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(vars(module)), {})  # noqa: S307 - the plugin's own annotation
            except Exception:  # noqa: BLE001 - not resolvable here: the option is not type-checked
                continue
        hints[name] = annotation
    return hints


def _expected(tp: Any, value: Any) -> str | None:
    """What ``value`` should have been for annotation ``tp`` (None when it conforms or ``tp`` is not checked)."""
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        members = typing.get_args(tp)
        if value is None and type(None) in members:
            return None
        wanted = [w for w in (_expected(m, value) for m in members if m is not type(None)) if w is not None]
        if len(wanted) < len([m for m in members if m is not type(None)]):
            return None
        return " or ".join(dict.fromkeys(wanted))
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)
    if origin is typing.Annotated:
        return _expected(typing.get_args(tp)[0], value)
    if tp is bool:
        return None if isinstance(value, bool) else _TYPE_WORDS[bool]
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else _TYPE_WORDS[int]
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else _TYPE_WORDS[float]
    if tp is str:
        return None if isinstance(value, str) else _TYPE_WORDS[str]
    import collections.abc as cabc

    if origin in (list, tuple, set, frozenset, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.Set) or tp in (
            list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
            return "a list"
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1 and any(_expected(args[0], v) is not None for v in value):
            return "a list of " + _describe(args[0])
        return None
    if origin in (dict, cabc.Mapping, cabc.MutableMapping) or tp in (dict,):
        return None if isinstance(value, Mapping) else "a table"
    return None


def _describe(tp: Any) -> str:
    return {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(tp, "values")


def check_option_values(factory: Callable[..., Any], options: Mapping[str, Any], *, path: Callable[[str], str],
                        owner: str) -> None:
    """Check ``options`` against what ``factory`` declares: each value's type (its annotation, else the type
    of its default), finiteness of numbers, and positivity where declared (``option_bounds``) or obviously
    required (timeouts).

    :param path: the config path of an option (``plugins.sqlite.tools.timeout_s``).
    :param owner: names the implementation and its plugin in the message.
    :raises ConfigError: ``plugin option plugins.sqlite.tools.timeout_s: must be a positive finite number, got
        nan (tools 'sqlite', plugin 'simulators.tools.sqlite')``.
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    hints = _option_hints(factory) if params else {}
    declared = getattr(factory, "option_bounds", None)
    declared = dict(declared) if isinstance(declared, Mapping) else {}

    def fail(key: str, what: str, value: Any) -> None:
        raise ConfigError(f"plugin option {path(key)}: must be {what}, got {value!r} ({owner})")

    for key, value in options.items():
        param = params.get(key)
        tp: Any = hints.get(key, inspect.Parameter.empty)
        if tp is inspect.Parameter.empty and param is not None and param.default is not inspect.Parameter.empty:
            default = param.default
            tp = {bool: bool, float: float, int: float, str: str}.get(type(default), inspect.Parameter.empty)
        wanted = _expected(tp, value)
        if wanted is not None:
            fail(key, wanted, value)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        bound = _bound_of(key, declared)
        if isinstance(value, float) and not math.isfinite(value):
            fail(key, {"positive": "a positive finite number", "non_negative": "a finite number >= 0"}.get(
                bound or "", "a finite number"), value)
        if numeric and bound == "positive" and value <= 0:
            fail(key, "a positive finite number", value)
        if numeric and bound == "non_negative" and value < 0:
            fail(key, "a finite number >= 0", value)


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

    def create(self, options: Mapping[str, Any] | None = None, *, paths: Mapping[str, str] | None = None) -> T:
        """Build the implementation from its options, checking option names against the factory and option
        values against what it declares (:func:`check_option_values`: types, finite numbers, positive timeouts).

        :param paths: the config path of an option, by name, for messages (default ``plugins.NAME.KEY``).
        Raises :class:`ConfigError` naming an unknown option and listing the accepted ones, or naming an option
        of the wrong type or range, and :class:`PluginLoadError` when a lazy factory does not resolve.
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
        where = dict(paths or {})
        check_option_values(factory, options, path=lambda key: where.get(key, f"plugins.{self.name}.{key}"),
                            owner=f"{self.kind} {self.name!r}, plugin {self.plugin!r}")
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
        _check_undecorated(module, label)
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
            before = len(registries[kind].names())
            try:
                returned = hookimpl.function(**({"register": given} if "register" in hookimpl.argnames else {}))
            except PluginLoadError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise PluginLoadError(
                    f"plugin {plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
            _check_hook_result(plugin_name, hook_name, hookimpl.argnames, returned,
                               len(registries[kind].names()) - before)
    return Plugins(pm=pm, registries=registries, loaded=loaded)


def _check_hook_result(plugin: str, hook_name: str, argnames: Iterable[str], returned: Any, registered: int) -> None:
    """A hook registers by calling ``register``; what it returns is ignored. A hook that returned something
    and registered nothing (``return [("name", Factory)]``) is a :class:`PluginLoadError`; one that returned
    something besides registering, or takes no ``register`` argument, a :class:`PluginWarning`."""
    if "register" not in argnames:
        warnings.warn(f"plugin {plugin!r}: {hook_name} takes no `register` argument, so it registers nothing; "
                      f"define it as `def {hook_name}(register)` and call register(name, factory)",
                      PluginWarning, stacklevel=3)
    if returned is None:
        return
    what = type(returned).__name__
    if not registered:
        raise PluginLoadError(
            f"plugin {plugin!r}: {hook_name} returned a {what} and registered nothing; a hook does not return its "
            "implementations: call register(name, factory, description=...) for each one")
    warnings.warn(f"plugin {plugin!r}: {hook_name} returned a {what}, which is ignored (only register(...) calls "
                  "register implementations)", PluginWarning, stacklevel=3)


def _check_undecorated(module: Any, plugin: str) -> None:
    """A plugin function named like a hook but without ``@hookimpl`` is invisible to pluggy: it registers
    nothing without a word. Named exactly like a hook: :class:`PluginLoadError`; like a misspelled one
    (``synth_register_generators``): :class:`PluginWarning` naming the close hook."""
    marker = f"{hookspecs.PROJECT}_impl"
    hooks = list(hookspecs.HOOK_KINDS.values())
    for attr in sorted(getattr(module, "__dict__", {})):
        if not attr.startswith("synth_"):
            continue
        value = getattr(module, attr, None)
        if not callable(value) or hasattr(value, marker) or hasattr(value, "synth_hook"):
            continue
        if getattr(value, "__module__", None) not in (None, getattr(module, "__name__", None)):
            continue  # imported from elsewhere (a helper named synth_*), not this plugin's own definition
        if attr in hooks:
            raise PluginLoadError(
                f"plugin {plugin!r}: function {attr} is not decorated with @hookimpl (from "
                "synthagent.core.hookspecs import hookimpl), so pluggy never calls it and it registers nothing")
        hint = close_matches(attr, hooks)
        if hint:
            warnings.warn(f"plugin {plugin!r}: function {attr} is not a hook and is never called (no @hookimpl)."
                          f"{hint}", PluginWarning, stacklevel=3)
