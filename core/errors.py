"""Typed errors. Each says what went wrong and what to do next.

The CLI maps :class:`UsageError` (and subclasses) to exit code 2 and every other :class:`SynthError` to
exit code 1, except errors with their own ``exit_code``: :class:`NothingKeptError` (3: the run finished but kept
no task) and :class:`AuthenticationError` (4: the model server refused the API key).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SynthError", "UsageError", "ConfigError", "UnknownImplementationError", "PluginLoadError",
    "RunDirectoryError", "DomainError", "StageError", "FatalRunError", "PluginError", "PluginWarning", "ConfigWarning",
    "AuthenticationError",
    "NothingKeptError", "exit_code", "close_matches", "require_non_negative_int",
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


class PluginWarning(UserWarning):
    """A plugin did something that is probably a mistake but not unambiguously one (a hook that returned a
    value besides registering, a ``synth_*`` function that looks like a misspelled hook without ``@hookimpl``)."""


class ConfigWarning(UserWarning):
    """A setting that has no effect with the rest of the configuration (``llm.base_url`` with the offline
    ``oracle`` backend): said, never silently dropped."""


class FatalRunError(StageError):
    """A failure no retry can mend: the run stops at once (exit code 1 unless the subclass says otherwise).

    Never retried by the rollout engine, never recorded as an infrastructure failure (so ``--resume`` does not
    retry it on every resume); the message says what to fix."""

    exit_code = 1


class PluginError(FatalRunError):
    """A plugin raised an unexpected exception during a stage, or handed the pipeline something of the wrong
    type. The message names the kind, the implementation, its plugin and the record; :attr:`details` holds
    the plugin's traceback (written to ``run.log``)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details

    def __reduce__(self) -> Any:  # travels back from worker processes with its traceback text
        return (type(self), (str(self), self.details))


class AuthenticationError(FatalRunError):
    """A model server refused the credentials (HTTP 401 or 403): retrying cannot help (exit code 4)."""

    exit_code = 4


class NothingKeptError(SynthError):
    """The run finished but kept no task: nothing to train on (exit code 3). The message lists the top drop
    reasons with their counts; the records are kept."""

    exit_code = 3


def exit_code(exc: BaseException) -> int:
    """The ``synth`` exit code of ``exc``: its ``exit_code``, else 2 for a :class:`UsageError`, else 1."""
    code = getattr(type(exc), "exit_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return 2 if isinstance(exc, UsageError) else 1


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
