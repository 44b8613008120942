"""Hook specifications: the reference manual for plugin authors.

Every hook receives one ``register`` callable and calls it once per implementation::

    register(name, factory, description="...")

``name`` is what users type (``--set generator=NAME``); ``factory`` is called with the implementation's
options (the config table ``[plugins.NAME]``) as keyword arguments and returns an object satisfying the
protocol in :mod:`synthagent.core.protocols`. ``factory`` may also be an import string
``"package.module:Attr"``: it is imported only when the implementation is built, so listing plugins stays
fast. ``register`` is typed per kind (:class:`~synthagent.core.protocols.Register`), so a type checker checks
what a plugin registers.

Each spec is declared with :func:`registers`, which names its hook *kind* (the config key, e.g.
``generator``) and the protocol of what it registers; :data:`HOOK_KINDS` and the plugin loader are derived
from the specs themselves, so a new spec cannot be left out of loading or of the documentation test. A plugin is any module (or object) with functions decorated by
:data:`hookimpl` and named like the specs below. Register it through the entry-point group ``synthagent``::

    [project.entry-points.synthagent]
    my_plugin = "my_package.my_module"

or load it for one run with ``synth run --plugin my_package.my_module`` or ``SYNTHAGENT_PLUGINS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from synthagent.core import protocols

if TYPE_CHECKING:
    from synthagent.core.protocols import (
        Benchmark,
        Executor,
        LLMBackend,
        MappingStore,
        Register,
        RegisterCommand,
        RewardScorer,
        RLAlgorithm,
        RubricBuilder,
        TaskGenerator,
        ToolSimulator,
        UserSimulator,
    )

PROJECT = "synthagent"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "PROJECT",
    "hookspec",
    "hookimpl",
    "registers",
    "hook_specs",
    "HookSpec",
    "HOOK_KINDS",
    "COMMAND_KIND",
    "synth_register_task_generators",
    "synth_register_user_simulators",
    "synth_register_tool_simulators",
    "synth_register_mapping_stores",
    "synth_register_rubric_builders",
    "synth_register_reward_scorers",
    "synth_register_rl_algorithms",
    "synth_register_llm_backends",
    "synth_register_executors",
    "synth_register_commands",
    "synth_register_benchmarks",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The hook kind of :func:`synth_register_commands` (``synth`` CLI commands, not pipeline components).
COMMAND_KIND = "command"


class HookSpec:
    """What :func:`registers` records on a spec function: its hook kind and the protocol it registers."""

    __slots__ = ("kind", "protocol", "name")

    def __init__(self, kind: str, protocol: Any, name: str) -> None:
        self.kind = kind
        self.protocol = protocol
        self.name = name

    def __repr__(self) -> str:
        return f"HookSpec(kind={self.kind!r}, name={self.name!r})"


def registers(kind: str, protocol: Any) -> Callable[[F], F]:
    """Declare a ``synth_register_*`` hookspec that registers implementations of hook kind ``kind``.

    ``protocol`` is what each registered factory must build (a class of :mod:`synthagent.core.protocols`,
    or the string ``"click.Command"`` for commands). The function becomes a pluggy hookspec and carries a
    :class:`HookSpec` in its ``synth_hook`` attribute; :func:`hook_specs` collects them.
    """

    def mark(fn: F) -> F:
        fn.synth_hook = HookSpec(kind, protocol, fn.__name__)  # type: ignore[attr-defined]
        return hookspec(fn)

    return mark


def hook_specs() -> dict[str, Callable[..., Any]]:
    """Every hookspec function of this module declared with :func:`registers`, by hook kind, in order."""
    found: dict[str, Callable[..., Any]] = {}
    for value in list(globals().values()):
        spec = getattr(value, "synth_hook", None)
        if isinstance(spec, HookSpec):
            if spec.kind in found:
                raise RuntimeError(f"hook kind {spec.kind!r} is declared twice ({found[spec.kind].__name__}, {spec.name})")
            found[spec.kind] = value
    return found


@registers("generator", protocols.TaskGenerator)
def synth_register_task_generators(register: Register[TaskGenerator]) -> None:
    """Register task generators (protocol :class:`~synthagent.core.protocols.TaskGenerator`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_task_generators(register):
            register("my-gen", MyGenerator, description="tasks from my API catalogue")

    .. versionadded:: 0.1
    """


@registers("user", protocols.UserSimulator)
def synth_register_user_simulators(register: Register[UserSimulator]) -> None:
    """Register user simulators (protocol :class:`~synthagent.core.protocols.UserSimulator`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_user_simulators(register):
            register("polite", PoliteUser)

    .. versionadded:: 0.1
    """


@registers("tools", protocols.ToolSimulator)
def synth_register_tool_simulators(register: Register[ToolSimulator]) -> None:
    """Register tool simulators (protocol :class:`~synthagent.core.protocols.ToolSimulator`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_tool_simulators(register):
            register("my-api-sandbox", SandboxTools)

    .. versionadded:: 0.1
    """


@registers("mapping", protocols.MappingStore)
def synth_register_mapping_stores(register: Register[MappingStore]) -> None:
    """Register mapping stores (protocol :class:`~synthagent.core.protocols.MappingStore`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_mapping_stores(register):
            register("dynamo", DynamoMappingStore)

    .. versionadded:: 0.1
    """


@registers("rubric", protocols.RubricBuilder)
def synth_register_rubric_builders(register: Register[RubricBuilder]) -> None:
    """Register rubric builders (protocol :class:`~synthagent.core.protocols.RubricBuilder`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_rubric_builders(register):
            register("strict", StrictRubric)

    .. versionadded:: 0.1
    """


@registers("scorer", protocols.RewardScorer)
def synth_register_reward_scorers(register: Register[RewardScorer]) -> None:
    """Register reward scorers (protocol :class:`~synthagent.core.protocols.RewardScorer`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_reward_scorers(register):
            register("binary", BinaryScorer)

    .. versionadded:: 0.1
    """


@registers("algorithm", protocols.RLAlgorithm)
def synth_register_rl_algorithms(register: Register[RLAlgorithm]) -> None:
    """Register RL / fine-tuning algorithms (protocol :class:`~synthagent.core.protocols.RLAlgorithm`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_rl_algorithms(register):
            register("dpo", MyDPO)

    .. versionadded:: 0.1
    """


@registers("llm", protocols.LLMBackend)
def synth_register_llm_backends(register: Register[LLMBackend]) -> None:
    """Register LLM backends (protocol :class:`~synthagent.core.protocols.LLMBackend`).

    :param register: ``register(name, factory, description="")``. The factory receives the ``[llm]``
        config table's keys (``model``, ``base_url``, ...) merged with ``[plugins.NAME]``.

    Example::

        @hookimpl
        def synth_register_llm_backends(register):
            register("my-provider", MyProviderChat)

    .. versionadded:: 0.1
    """


@registers("executor", protocols.Executor)
def synth_register_executors(register: Register[Executor]) -> None:
    """Register executors (protocol :class:`~synthagent.core.protocols.Executor`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_executors(register):
            register("dask", DaskExecutor)

    .. versionadded:: 0.1
    """


@registers(COMMAND_KIND, "click.Command")
def synth_register_commands(register: RegisterCommand) -> None:
    """Register ``synth`` CLI commands (a :class:`click.Command`, or an import string resolving to one).

    :param register: ``register(name, command, description="")``. ``command`` is a ``click.Command`` or,
        better, an import string ``"package.module:attr"``: it is imported only when ``synth NAME`` runs, so
        ``synth --help`` stays fast. A name taken by a built-in command is a :class:`PluginLoadError`.

    Example::

        @hookimpl
        def synth_register_commands(register):
            register("inspect", "my_package.cli:inspect_cmd", description="inspect my API catalogue")

    .. versionadded:: 0.2
    """


@registers("benchmark", protocols.Benchmark)
def synth_register_benchmarks(register: Register[Benchmark]) -> None:
    """Register named evaluation environments for ``synth eval --bench NAME`` (a
    :class:`~synthagent.core.protocols.Benchmark`: run-config overrides plus a description).

    :param register: ``register(name, factory, description="")``; ``factory()`` returns the Benchmark.

    Example::

        @hookimpl
        def synth_register_benchmarks(register):
            register("bfcl-multi-turn", lambda: Benchmark(
                overrides={"generator": "bfcl", "tools": "bfcl", "user": "bfcl-turns", "scorer": "bfcl"},
                success="scorer"), description="BFCL v4 multi-turn, scored by BFCL's checker")

    .. versionadded:: 0.3
    """


#: Hook kind (as used in config keys and ``synth plugins``) -> hook name, derived from the specs above.
HOOK_KINDS: dict[str, str] = {kind: fn.__name__ for kind, fn in hook_specs().items()}
