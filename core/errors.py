"""Typed errors. Each says what went wrong and what to do next.

The CLI maps :class:`UsageError` (and subclasses) to exit code 2 and every other :class:`SynthError` to
exit code 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SynthError", "UsageError", "ConfigError", "UnknownImplementationError", "PluginLoadError",
    "RunDirectoryError", "DomainError", "StageError", "close_matches", "require_non_negative_int",
]


class SynthError(Exception):
    """Base class of every error synthagent raises on purpose."""


class UsageError(SynthError):
    """The user asked for something that cannot work as given (exit code 2). Nothing was started."""


class ConfigError(UsageError):
    """A configuration file, ``--set`` override or option value is invalid."""


class UnknownImplementationError(UsageError):
    """A stage names an implementation that no loaded plugin registered."""


class PluginLoadError(UsageError):
    """A plugin failed to import or to register; the message names the plugin and its error."""


class RunDirectoryError(UsageError):
    """The run directory cannot be used as asked (exists without ``--resume``, unwritable, mismatched)."""


class DomainError(UsageError):
    """A domain pack file is invalid; the message names the file, the JSON path and the fix."""


class StageError(SynthError):
    """A pipeline stage failed at run time (exit code 1); records written so far are kept for ``--resume``."""


def close_matches(name: str, known: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` hint for ``name`` among ``known``, or an empty string."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def require_non_negative_int(owner: str, name: str, value: Any, zero_means: str) -> int:
    """Return ``value`` if it is an ``int`` >= 0 (``bool`` is not), else raise :class:`ConfigError`.

    :param owner: the plugin in the message, e.g. ``"executor 'ray'"``.
    :param zero_means: what 0 asks for, e.g. ``"one per CPU"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{owner}: {name} must be an integer >= 0 (0: {zero_means}), got {value!r}")
    return value
