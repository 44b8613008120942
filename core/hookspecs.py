"""Hook specifications: the reference manual for plugin authors.

Every hook receives one ``register`` callable and calls it once per implementation::

    register(name, factory, description="...")

``name`` is what users type (``--set generator=NAME``); ``factory`` is called with the implementation's
options (the config table ``[plugins.NAME]``) as keyword arguments and returns an object satisfying the
protocol in :mod:`synthagent.core.protocols`. A plugin is any module (or object) with functions decorated by
:data:`hookimpl` and named like the specs below. Register it through the entry-point group ``synthagent``::

    [project.entry-points.synthagent]
    my_plugin = "my_package.my_module"

or load it for one run with ``synth run --plugin my_package.my_module`` or ``SYNTHAGENT_PLUGINS``.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "synthagent"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = [
    "PROJECT",
    "hookspec",
    "hookimpl",
    "HOOK_KINDS",
    "synth_register_task_generators",
    "synth_register_user_simulators",
    "synth_register_tool_simulators",
    "synth_register_mapping_stores",
    "synth_register_rubric_builders",
    "synth_register_reward_scorers",
    "synth_register_rl_algorithms",
    "synth_register_llm_backends",
    "synth_register_executors",
]


@hookspec
def synth_register_task_generators(register: Any) -> None:
    """Register task generators (protocol :class:`~synthagent.core.protocols.TaskGenerator`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_task_generators(register):
            register("my-gen", MyGenerator, description="tasks from my API catalogue")

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_user_simulators(register: Any) -> None:
    """Register user simulators (protocol :class:`~synthagent.core.protocols.UserSimulator`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_user_simulators(register):
            register("polite", PoliteUser)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_tool_simulators(register: Any) -> None:
    """Register tool simulators (protocol :class:`~synthagent.core.protocols.ToolSimulator`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_tool_simulators(register):
            register("my-api-sandbox", SandboxTools)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_mapping_stores(register: Any) -> None:
    """Register mapping stores (protocol :class:`~synthagent.core.protocols.MappingStore`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_mapping_stores(register):
            register("dynamo", DynamoMappingStore)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_rubric_builders(register: Any) -> None:
    """Register rubric builders (protocol :class:`~synthagent.core.protocols.RubricBuilder`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_rubric_builders(register):
            register("strict", StrictRubric)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_reward_scorers(register: Any) -> None:
    """Register reward scorers (protocol :class:`~synthagent.core.protocols.RewardScorer`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_reward_scorers(register):
            register("binary", BinaryScorer)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_rl_algorithms(register: Any) -> None:
    """Register RL / fine-tuning algorithms (protocol :class:`~synthagent.core.protocols.RLAlgorithm`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_rl_algorithms(register):
            register("dpo", MyDPO)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_llm_backends(register: Any) -> None:
    """Register LLM backends (protocol :class:`~synthagent.core.protocols.LLMBackend`).

    :param register: ``register(name, factory, description="")``. The factory receives the ``[llm]``
        config table's keys (``model``, ``base_url``, ...) merged with ``[plugins.NAME]``.

    Example::

        @hookimpl
        def synth_register_llm_backends(register):
            register("my-provider", MyProviderChat)

    .. versionadded:: 0.1
    """


@hookspec
def synth_register_executors(register: Any) -> None:
    """Register executors (protocol :class:`~synthagent.core.protocols.Executor`).

    :param register: ``register(name, factory, description="")``.

    Example::

        @hookimpl
        def synth_register_executors(register):
            register("dask", DaskExecutor)

    .. versionadded:: 0.1
    """


#: Hook kind (as used in config keys and ``synth plugins``) -> hook name.
HOOK_KINDS: dict[str, str] = {
    "generator": "synth_register_task_generators",
    "user": "synth_register_user_simulators",
    "tools": "synth_register_tool_simulators",
    "mapping": "synth_register_mapping_stores",
    "rubric": "synth_register_rubric_builders",
    "scorer": "synth_register_reward_scorers",
    "algorithm": "synth_register_rl_algorithms",
    "llm": "synth_register_llm_backends",
    "executor": "synth_register_executors",
}
