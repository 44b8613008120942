"""Optional capabilities: what an implementation *may* offer beyond its kind's one method.

Each capability is a named, runtime-checkable protocol. The :class:`~synthagent.core.runtime.Runtime` checks
every component once, when it is built, with :func:`capabilities`: an attribute that is present but has the
wrong shape (a ``stats`` that is not a mapping, an ``aclose`` that is not a coroutine function, ``slots``
without ``synthesize``) is a :class:`~synthagent.core.errors.PluginLoadError` naming the implementation, so a
plugin that declares a capability wrongly fails before anything is written instead of being ignored.

=====================  ==========================================================  =====================
capability             attributes                                                  who uses it
=====================  ==========================================================  =====================
:class:`Setup`         ``setup(ctx: RunContext) -> None``                          every component
:class:`Closable`      ``async aclose() -> None``                                  every component
:class:`Stats`         ``stats: Mapping[str, int]``                                every component
:class:`PromptHashes`  ``prompt_hashes() -> Mapping[str, str]``                    every component
:class:`Demonstrated`  ``demonstrations: int``, optional ``demonstrator: str`` and  rubric builders
                       ``demonstrator_options: Mapping``
:class:`SlotGenerator` ``slots(ctx) -> Iterable``, ``async synthesize(llm, slot,   task generators
                       seed) -> Task | None``
:class:`RemoteExecutor` ``remote: bool``, ``worker_stats() -> {kind: {name: n}}``  executors
:class:`ConcurrencyHint` ``max_concurrency: int``                                  LLM backends
:class:`WorkflowPlayer`  ``plays_workflow: bool`` (True: plays the gold workflow,    LLM backends
                       writes no free text; the offline oracle)
:class:`Combination`   ``incompatible_with(selected, components) -> (kind, why)``  every component
=====================  ==========================================================  =====================

Besides the optional capabilities, :func:`check_protocol` checks that a component has its kind's required
methods (a generator's ``generate``, a scorer's ``score``, ...) when it is built, and
:func:`check_compatible` refuses combinations a component declares impossible (``incompatible_with``), both
before the run directory exists.

Example: a tool simulator that counts cache hits and releases a connection::

    class CachedTools:
        def __init__(self):
            self.stats = collections.Counter()   # Stats: merged into summary.json under "tools"

        def setup(self, ctx):                    # Setup: once, before the run directory exists
            self.path = ctx.run_dir

        async def start(self, task, seed): ...

        async def aclose(self):                  # Closable: when the run ends
            ...
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from synthagent.core.errors import PluginLoadError

__all__ = [
    "Setup",
    "Closable",
    "Stats",
    "PromptHashes",
    "Demonstrated",
    "SlotGenerator",
    "RemoteExecutor",
    "ConcurrencyHint",
    "WorkflowPlayer",
    "Combination",
    "CAPABILITIES",
    "REQUIRED",
    "capabilities",
    "has_capability",
    "check_protocol",
    "check_compatible",
]


@runtime_checkable
class Setup(Protocol):
    """Called once per run (and once per worker process) before any stage, before the run directory exists.

    Raise :class:`~synthagent.core.errors.ConfigError` for a combination that cannot work: nothing is written.
    """

    def setup(self, ctx: Any) -> None:
        """Take what the run offers (:class:`~synthagent.core.protocols.RunContext`)."""
        ...


@runtime_checkable
class Closable(Protocol):
    """Holds resources released when the run (or a worker) ends."""

    async def aclose(self) -> None:
        """Release resources; called once."""
        ...


@runtime_checkable
class Stats(Protocol):
    """Keeps counters (failures by kind, guard firings, cache hits) that the run summary gathers by kind."""

    stats: Mapping[str, int]


@runtime_checkable
class PromptHashes(Protocol):
    """Uses prompts (package data) whose hashes the manifest records."""

    def prompt_hashes(self) -> Mapping[str, str]:
        """``{prompt name: sha256}``."""
        ...


@runtime_checkable
class Demonstrated(Protocol):
    """A rubric builder that wants ``demonstrations`` teacher rollouts per task (samples 0..K-1).

    ``demonstrator`` (optional) names the LLM backend that plays them, built with ``demonstrator_options``;
    empty means the run's own model.
    """

    demonstrations: int


@runtime_checkable
class SlotGenerator(Protocol):
    """A generator that works slot by slot, so executors with worker processes can spread generation."""

    def slots(self, ctx: Any) -> Iterable[Any]:
        """The generation slots of a run (those in ``ctx.done_slots`` may be skipped)."""
        ...

    async def synthesize(self, llm: Any, slot: Any, seed: int) -> Any:
        """The task of one slot, or None when the slot is dropped (the reason goes in ``stats``)."""
        ...


@runtime_checkable
class RemoteExecutor(Protocol):
    """An executor that runs jobs in other processes (its workers rebuild the components from the config)."""

    remote: bool

    def worker_stats(self) -> Mapping[str, Mapping[str, int]]:
        """The workers' counters by kind (``llm``, ``tools``, ..., ``engine``), summed over workers."""
        ...


@runtime_checkable
class ConcurrencyHint(Protocol):
    """An LLM backend that says how many requests it serves at once (sizes ``simulate.concurrency = 0``)."""

    max_concurrency: int

    def chat(self, request: Any) -> Any:
        """(The backend's own method.)"""
        ...


@runtime_checkable
class WorkflowPlayer(Protocol):
    """An LLM backend that plays each task's gold workflow instead of writing free text (the offline
    ``oracle``): it can be a policy or a demonstrator, never a teacher that writes JSON (task synthesis, effect
    annotation, judging). Components refuse it by this trait, not by its name."""

    plays_workflow: bool

    def chat(self, request: Any) -> Any:
        """(The backend's own method.)"""
        ...


@runtime_checkable
class Combination(Protocol):
    """Says which selected implementations of other kinds this one cannot run with. The run is refused before
    it starts (exit 2, nothing written), the message naming both options (:func:`check_compatible`)::

        def incompatible_with(self, selected, components):
            if selected["tools"] == "sqlite":
                return "tools", "its tasks have no database (initial_state); use tools=llm"
            return None
    """

    def incompatible_with(self, selected: Mapping[str, str], components: Mapping[str, Any]) -> tuple[str, str] | None:
        """``(other kind, reason)`` when the run's ``selected`` names (kind -> name) and built ``components``
        cannot work with this one; None when they can."""
        ...


def _fail(kind: str, name: str, what: str) -> PluginLoadError:
    return PluginLoadError(f"{kind} {name!r} declares {what}; fix the implementation (see synthagent.core.capabilities)")


def _callable_check(attr: str) -> Any:
    """A checker of a capability that is one method ``attr``: absent, or callable."""

    def check(comp: Any, kind: str, name: str) -> bool:
        method = getattr(comp, attr, None)
        if method is None:
            return False
        if not callable(method):
            raise _fail(kind, name, f"a `{attr}` that is not callable")
        return True

    return check


_check_setup = _callable_check("setup")
_check_prompt_hashes = _callable_check("prompt_hashes")
_check_combination = _callable_check("incompatible_with")


def _check_closable(comp: Any, kind: str, name: str) -> bool:
    close = getattr(comp, "aclose", None)
    if close is None:
        return False
    if not inspect.iscoroutinefunction(close):
        raise _fail(kind, name, "an `aclose` that is not an async method")
    return True


def _check_stats(comp: Any, kind: str, name: str) -> bool:
    stats = getattr(comp, "stats", None)
    if stats is None:
        return False
    if not isinstance(stats, Mapping):
        raise _fail(kind, name, f"`stats` of type {type(stats).__name__}, not a mapping of counters")
    return True


def _check_demonstrated(comp: Any, kind: str, name: str) -> bool:
    k = getattr(comp, "demonstrations", None)
    if k is None:
        return False
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise _fail(kind, name, f"`demonstrations = {k!r}`, not an integer >= 0")
    who = getattr(comp, "demonstrator", "")
    if who is not None and not isinstance(who, str):
        raise _fail(kind, name, f"`demonstrator = {who!r}`, not a backend name")
    opts = getattr(comp, "demonstrator_options", None)
    if opts is not None and not isinstance(opts, Mapping):
        raise _fail(kind, name, "`demonstrator_options` that is not a mapping")
    return k > 0


def _check_slots(comp: Any, kind: str, name: str) -> bool:
    slots, synth = getattr(comp, "slots", None), getattr(comp, "synthesize", None)
    if slots is None and synth is None:
        return False
    if not callable(slots) or not inspect.iscoroutinefunction(synth):
        raise _fail(kind, name, "only part of slot-by-slot generation (it needs `slots(ctx)` and "
                                "`async synthesize(llm, slot, seed)`)")
    return True


def _check_remote(comp: Any, kind: str, name: str) -> bool:
    stats = getattr(comp, "worker_stats", None)
    if stats is not None and not callable(stats):
        raise _fail(kind, name, "a `worker_stats` that is not callable")
    remote = getattr(comp, "remote", False)
    if not isinstance(remote, bool):
        raise _fail(kind, name, f"`remote = {remote!r}`, not true or false")
    return remote or stats is not None


def _check_workflow_player(comp: Any, kind: str, name: str) -> bool:
    plays = getattr(comp, "plays_workflow", None)
    if plays is None:
        return False
    if not isinstance(plays, bool):
        raise _fail(kind, name, f"`plays_workflow = {plays!r}`, not true or false")
    return plays


def _check_concurrency(comp: Any, kind: str, name: str) -> bool:
    n = getattr(comp, "max_concurrency", None)
    if n is None:
        return False
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _fail(kind, name, f"`max_concurrency = {n!r}`, not a positive integer")
    return True


#: Capability name -> (protocol, checker, the hook kinds it applies to; empty = every kind).
CAPABILITIES: dict[str, tuple[type, Any, frozenset[str]]] = {
    "setup": (Setup, _check_setup, frozenset()),
    "aclose": (Closable, _check_closable, frozenset()),
    "stats": (Stats, _check_stats, frozenset()),
    "prompt_hashes": (PromptHashes, _check_prompt_hashes, frozenset()),
    "demonstrations": (Demonstrated, _check_demonstrated, frozenset({"rubric"})),
    "slots": (SlotGenerator, _check_slots, frozenset({"generator"})),
    "remote": (RemoteExecutor, _check_remote, frozenset({"executor"})),
    "max_concurrency": (ConcurrencyHint, _check_concurrency, frozenset({"llm"})),
    "plays_workflow": (WorkflowPlayer, _check_workflow_player, frozenset({"llm"})),
    "incompatible_with": (Combination, _check_combination, frozenset()),
}

#: What each kind must have: the methods of its protocol in :mod:`synthagent.core.protocols`.
REQUIRED: dict[str, tuple[str, ...]] = {
    "generator": ("generate",), "user": ("start",), "tools": ("start",), "mapping": ("get", "put"),
    "rubric": ("build",), "scorer": ("score",), "executor": ("map",), "llm": ("chat",),
}
_PROTOCOLS = {"generator": "TaskGenerator", "user": "UserSimulator", "tools": "ToolSimulator",
              "mapping": "MappingStore", "rubric": "RubricBuilder", "scorer": "RewardScorer", "executor": "Executor",
              "llm": "LLMBackend"}

#: The config key that selects each kind (for messages about combinations).
_CONFIG_KEY = {"llm": "llm.backend"}


def check_protocol(component: Any, kind: str, name: str, plugin: str = "") -> None:
    """Check that ``component`` (implementation ``name`` of hook ``kind``, from ``plugin``) has its kind's
    required methods (:data:`REQUIRED`); an LLM backend also needs a string ``name``.

    :raises PluginLoadError: ``generator 'my-gen' (plugin 'my_pkg') does not implement TaskGenerator: it has
        no callable `generate```.
    """
    who = f"{kind} {name!r}" + (f" (plugin {plugin!r})" if plugin else "")
    for method in REQUIRED.get(kind, ()):
        if not callable(getattr(component, method, None)):
            got = type(component).__name__
            raise PluginLoadError(f"{who} does not implement {_PROTOCOLS[kind]}: its factory built a {got} with no "
                                  f"callable `{method}` (see synthagent.core.protocols.{_PROTOCOLS[kind]})")
    if kind == "llm" and not (isinstance(getattr(component, "name", None), str) and component.name):
        raise PluginLoadError(f"{who} does not implement LLMBackend: it needs a non-empty string `name` (the policy "
                              "id recorded on trajectories)")


def check_compatible(selected: Mapping[str, str], components: Mapping[str, Any]) -> None:
    """Refuse a combination that a selected component declares impossible (``incompatible_with``), naming both
    options.

    :param selected: the implementation name of each kind.
    :param components: the built component of each kind.
    :raises ConfigError: ``generator='persona-fuzzy' cannot run with tools='sqlite': ...``.
    """
    from synthagent.core.errors import ConfigError

    for kind, comp in components.items():
        check = getattr(comp, "incompatible_with", None)
        if not callable(check):
            continue
        found = check(selected, components)
        if found is None:
            continue
        if not (isinstance(found, tuple) and len(found) == 2 and all(isinstance(x, str) for x in found)):
            raise _fail(kind, selected.get(kind, "?"), f"an `incompatible_with` that returned {found!r}, not "
                                                       "None or (kind, reason)")
        other, why = found
        mine, theirs = _CONFIG_KEY.get(kind, kind), _CONFIG_KEY.get(other, other)
        raise ConfigError(f"{mine}={selected.get(kind, '?')!r} cannot run with {theirs}={selected.get(other, '?')!r}: "
                          f"{why}")


def has_capability(component: Any, capability: str, kind: str = "llm") -> bool:
    """Whether ``component`` (of hook ``kind``) offers ``capability``, checked as :func:`capabilities` checks
    it: what a component asks of another it was handed (``has_capability(ctx.llm, "plays_workflow")``)
    instead of testing its name.

    :raises KeyError: an unknown capability name. :raises PluginLoadError: the capability is declared with
        the wrong shape.
    """
    _protocol, check, kinds = CAPABILITIES[capability]
    return (not kinds or kind in kinds) and bool(check(component, kind, type(component).__name__))


def capabilities(component: Any, kind: str, name: str) -> frozenset[str]:
    """The capabilities ``component`` (implementation ``name`` of hook ``kind``) offers, checked.

    :raises PluginLoadError: a capability is declared with the wrong shape (the message names it).
    """
    found = set()
    for cap, (_protocol, check, kinds) in CAPABILITIES.items():
        if (not kinds or kind in kinds) and check(component, kind, name):
            found.add(cap)
    return frozenset(found)
