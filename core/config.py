"""Run configuration: TOML file + ``--set key=value`` overrides, validated strictly.

Every key is checked: an unknown key names the closest known one, a value of the wrong type names the key,
the expected type and where the value came from (the file or the ``--set`` argument). Implementation options
live in ``[plugins.NAME]`` tables and are checked against the implementation's factory when it is built.

Example ``synth.toml``::

    seed = 7
    tasks = 400
    generator = "offline-domains"

    [simulate]
    max_turns = 20
    concurrency = 64

    [plugins.offline-domains]
    domains = ["orders", "banking"]
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from synthagent.core.errors import ConfigError, close_matches
from synthagent.core.models import canonical_json
from synthagent.core.redact import redact_text

__all__ = ["LLMConfig", "SimulateConfig", "ExportConfig", "RunConfig", "load_config", "config_from_dict", "parse_set", "set_path",
           "STAGES"]

#: Pipeline stages in order.
STAGES: tuple[str, ...] = ("generate", "simulate", "rubric", "score", "export")


#: Upper bounds of count options: far above any real run, low enough that a typo (``10**20``) fails at once
#: with this limit in the message instead of hanging or overflowing.
LIMITS: dict[str, int] = {"tasks": 10_000_000, "samples": 1_000, "max_turns": 10_000, "concurrency": 100_000,
                          "retries": 100, "max_tokens": 10_000_000}


def _finite_and_bounded(attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {attribute.name!r} must be a finite number, got {value!r}")
    limit = LIMITS.get(attribute.name)
    if limit is not None and value > limit:
        raise ConfigError(f"config key {attribute.name!r} must be at most {limit:,}, got {value!r}")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _finite_and_bounded(attribute, value)
    if value <= 0:
        raise ConfigError(f"config key {attribute.name!r} must be positive, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _finite_and_bounded(attribute, value)
    if value < 0:
        raise ConfigError(f"config key {attribute.name!r} must not be negative, got {value!r}")


def _temperature(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _non_negative(instance, attribute, value)
    if value > 2:
        raise ConfigError(f"config key {attribute.name!r} must be between 0 and 2, got {value!r}")


def _unit_interval(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    _non_negative(instance, attribute, value)
    if value > 1:
        raise ConfigError(f"config key {attribute.name!r} must be between 0 and 1 (scores are fractions), "
                          f"got {value!r}")


@attrs.frozen
class LLMConfig:
    """The teacher / policy model (``[llm]``). The API key is read from the environment variable named by
    ``api_key_env`` and never stored."""

    backend: str = "oracle"
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = attrs.field(default=0.0, validator=_temperature)
    max_tokens: int = attrs.field(default=1024, validator=_positive)
    timeout_s: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen
class SimulateConfig:
    """Rollouts (``[simulate]``): trajectories per task, the turn limit, the number in flight (0: sized to the
    backend, see :func:`synthagent.core.engine.resolve_concurrency`) and the retries of a failed rollout."""

    samples: int = attrs.field(default=1, validator=_positive)
    max_turns: int = attrs.field(default=30, validator=_positive)
    concurrency: int = attrs.field(default=0, validator=_non_negative)
    #: A rollout that raised or ended in ``infra_error`` runs again on fresh tool and user sessions this many
    #: times before it is recorded as an infrastructure failure.
    retries: int = attrs.field(default=1, validator=_non_negative)


@attrs.frozen
class ExportConfig:
    """Exports (``[export]``): SFT keeps trajectories scoring at least ``min_score``."""

    min_score: float = attrs.field(default=1.0, validator=_unit_interval)
    #: Domains of the vertical split of the two-stage SFT curriculum (``exports/curriculum/vertical.jsonl``);
    #: the general split (every domain) is ``exports/curriculum/general.jsonl``. Empty: no curriculum export.
    vertical: tuple[str, ...] = ()


@attrs.frozen
class RunConfig:
    """A whole run's configuration. Stage keys (``generator``, ``user``, ...) name implementations."""

    name: str = ""
    out: str = "runs"
    seed: int = 0
    tasks: int = attrs.field(default=200, validator=_positive)
    generator: str = "offline-domains"
    user: str = "rule"
    tools: str = "sqlite"
    mapping: str = "sqlite"
    rubric: str = "workflow-rubric"
    scorer: str = "rubric"
    executor: str = "local"
    llm: LLMConfig = attrs.field(factory=LLMConfig)
    simulate: SimulateConfig = attrs.field(factory=SimulateConfig)
    export: ExportConfig = attrs.field(factory=ExportConfig)
    plugins: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def options_for(self, name: str, kind: str = "") -> dict[str, Any]:
        """Options of implementation ``name`` of hook ``kind``: the ``[plugins.NAME]`` table, or its
        ``[plugins.NAME.KIND]`` sub-table when two kinds share the name (``sqlite`` tools and mapping)."""
        from synthagent.core.hookspecs import HOOK_KINDS

        table = dict(self.plugins.get(name, {}))
        if kind and isinstance(table.get(kind), dict):
            return dict(table[kind])
        return {k: v for k, v in table.items() if not (k in HOOK_KINDS and isinstance(v, dict))}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the manifest)."""
        return attrs.asdict(self)

    def fingerprint(self) -> str:
        """Canonical JSON of everything that decides the records (not ``name``/``out``/concurrency/retries:
        retries change only how infrastructure failures are handled, and leaving them out keeps runs started
        before they existed resumable)."""
        data = self.to_dict()
        for key in ("name", "out"):
            data.pop(key)
        data["simulate"].pop("concurrency")
        data["simulate"].pop("retries")
        return canonical_json(data)


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _check_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - only the types above are used
        ok = True
    if not ok:
        raise ConfigError(f"{where} must be {_TYPE_NAMES.get(tp, tp)}, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str, origins: Mapping[str, str]) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key {prefix.rstrip('.')!r} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"unknown config key {path!r}{_origin(origins, path)}; known keys here: {sorted(fields)}."
                + close_matches(key, fields)
            )
        where = f"config key {path!r}{_origin(origins, path)}"
        tp = hints[key]
        if attrs.has(tp):
            kwargs[key] = _build(tp, value, f"{path}.", origins)
        elif typing.get_origin(tp) is dict:
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise ConfigError(f"{where} must be a table of tables ([plugins.NAME]), got {value!r}")
            kwargs[key] = {str(k): dict(v) for k, v in value.items()}
        elif typing.get_origin(tp) in (list, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must be a list of strings, got {value!r}")
            kwargs[key] = tuple(value)
        elif isinstance(tp, types.UnionType):
            kwargs[key] = value
        else:
            kwargs[key] = _check_scalar(tp, value, where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {prefix.rstrip('.') or 'the top level'})") from None


def set_path(data: dict[str, Any], keys: Sequence[str], value: Any, *, what: str = "") -> None:
    """Set ``data[k1][k2]...[kn] = value``, creating tables on the way; a key path through a non-table is a
    :class:`ConfigError` naming ``what`` (e.g. the ``--set`` argument)."""
    node = data
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what or '.'.join(keys)}: {k!r} is not a table")
        node = child
    node[keys[-1]] = value


def config_from_dict(data: Mapping[str, Any], *, origin: str = "") -> RunConfig:
    """A :class:`RunConfig` from plain data (``RunConfig.to_dict()``, a run manifest's ``config``), validated
    by the same strict rules as a config file; ``origin`` names where the data came from in errors."""
    origins = {}
    if origin:
        def mark(d: Mapping[str, Any], prefix: str) -> None:
            for k, v in d.items():
                origins[f"{prefix}{k}"] = origin
                if isinstance(v, Mapping) and prefix == "":
                    mark(v, f"{k}.")

        mark(data, "")
    return _build(RunConfig, data, "", origins)  # type: ignore[no-any-return]


def _origin(origins: Mapping[str, str], path: str) -> str:
    origin = origins.get(path)
    return f" (from {origin})" if origin else ""


def parse_set(item: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value``. The value is read as a TOML value (``3``, ``true``, ``"x"``, ``[1, 2]``);
    anything that is not valid TOML is taken as a plain string, so ``--set generator=persona-fuzzy`` works."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r} must look like key=value (e.g. --set simulate.max_turns=20)")
    key, raw = item.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {item!r} has an empty key part")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    extra: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read ``path`` (TOML), apply ``--set`` ``overrides`` then ``extra`` (CLI shortcuts), and validate.

    :raises ConfigError: unreadable or malformed TOML, unknown keys, wrong types (the message says which).
    """
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            line = p.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (line {line}, byte {exc.start}); "
                              "save it as UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"malformed TOML in {str(p)!r}: {exc}") from exc

        def mark(d: Mapping[str, Any], prefix: str) -> None:
            for k, v in d.items():
                origins[f"{prefix}{k}"] = str(p)
                if isinstance(v, Mapping) and prefix == "":
                    mark(v, f"{k}.")

        mark(data, "")
    for item in overrides:
        keys, value = parse_set(item)
        set_path(data, keys, value, what=f"--set {redact_text(item)!r}")
        origins[".".join(keys)] = f"--set {redact_text(item)}"  # never echo a key (llm.api_key=..., URLs)
    for key, value in (extra or {}).items():
        if value is not None:
            data[key] = value
            origins[key] = f"--{key}"
    executor = data.get("executor", attrs.fields(RunConfig).executor.default)
    if isinstance(executor, str) and isinstance(data.get(executor), Mapping) and executor not in attrs.fields_dict(RunConfig):
        # shorthand: [ray] (or --set ray.address=...) is [plugins.ray] when executor = "ray"
        plugins = data.setdefault("plugins", {})
        if isinstance(plugins, dict):
            table = data.pop(executor)
            plugins[executor] = {**dict(plugins.get(executor) or {}), **dict(table)}
            for key in [k for k in origins if k == executor or k.startswith(executor + ".")]:
                origins["plugins." + key] = origins.pop(key)
    return _build(RunConfig, data, "", origins)
