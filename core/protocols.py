"""Typed protocols: what each kind of implementation must provide.

An implementation is a small class with one clear method; plugins register a *factory* (usually the class)
that takes the implementation's options (the ``[plugins.NAME]`` table of the config) as keyword arguments.
These protocols are structural: any object with the right methods works, no subclassing needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs

from synthagent.core.models import Message, Rubric, Score, StateChange, Task, ToolCall, ToolSpec, Trajectory, Usage

__all__ = [
    "RunContext",
    "GenerationContext",
    "TaskGenerator",
    "UserTurn",
    "UserSession",
    "UserSimulator",
    "ToolResult",
    "ToolSession",
    "ToolSimulator",
    "MappingStore",
    "RubricBuilder",
    "RewardScorer",
    "TrainRequest",
    "RLAlgorithm",
    "ChatRequest",
    "ChatResponse",
    "LLMBackend",
    "Executor",
    "Register",
    "RegisterCommand",
    "Benchmark",
]

T = TypeVar("T")
R = TypeVar("R")


@attrs.frozen
class RunContext:
    """What a run offers its implementations.

    Any implementation may define ``setup(ctx: RunContext) -> None``; the pipeline calls it once before any
    stage runs and before the run directory is created (``run_dir`` is where it will be; write there only once
    stages run). Raise :class:`~synthagent.core.errors.ConfigError` for a combination that cannot work: the run
    stops with nothing written. The LLM tool and user simulators take the teacher and mapping store here.

    ``backend(name, options, owner=KIND)`` gives a component an LLM backend of its own (a user model for the
    LLM user, say). The Runtime builds it once per name and options, checks it against :class:`LLMBackend`,
    sets it up, counts its requests under ``stats()["KIND_backend"]`` (so they reach summary.json and
    counts.jsonl) and closes it with the run. A component never builds a backend itself. It is None where
    no Runtime made the context (a hand-built context in a test).
    """

    llm: Any
    mapping: Any
    run_dir: str
    seed: int
    backend: Callable[..., Any] | None = None


@attrs.frozen
class GenerationContext:
    """What a task generator is asked for.

    :param count: how many tasks to produce in all.
    :param seed: the run seed; the same seed must give the same tasks.
    :param done_slots: slots (see :attr:`Provenance.slot`) already written by an earlier, interrupted run;
        a generator may skip their (possibly expensive) work.
    :param llm: the run's LLM backend (the teacher), for generators that need one.
    """

    count: int
    seed: int
    done_slots: frozenset[str] = frozenset()
    llm: LLMBackend | None = None


@runtime_checkable
class TaskGenerator(Protocol):
    """Produces tasks. Hook: :func:`synth_register_task_generators`."""

    def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:
        """Yield up to ``ctx.count`` tasks, deterministically for ``ctx.seed``."""
        ...


@attrs.frozen
class UserTurn:
    """A user simulator's reply; ``stop`` ends the episode (the user's goal is met or abandoned)."""

    message: Message
    stop: bool = False


@runtime_checkable
class UserSession(Protocol):
    """One episode of a simulated user."""

    async def respond(self, messages: Sequence[Message]) -> UserTurn:
        """Answer the agent's last message given the conversation so far."""
        ...


@runtime_checkable
class UserSimulator(Protocol):
    """Plays the user who holds the hidden context. Hook: :func:`synth_register_user_simulators`."""

    async def start(self, task: Task, seed: int) -> UserSession:
        """Begin an episode for ``task``."""
        ...


@attrs.frozen
class ToolResult:
    """A tool call's observation. ``ok`` is False for an error observation; ``wrote`` when state changed."""

    content: Any
    ok: bool = True
    wrote: bool = False


@runtime_checkable
class ToolSession(Protocol):
    """One episode's tools (a private database copy, or an LLM mock with its mapping store)."""

    async def call(self, call: ToolCall) -> ToolResult:
        """Execute or simulate one call; never raise for a bad call, return an error observation."""
        ...

    def final_state(self) -> StateChange | None:
        """The end state (database digest and changes), or None for stateless tools."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class ToolSimulator(Protocol):
    """Answers the agent's tool calls. Hook: :func:`synth_register_tool_simulators`."""

    async def start(self, task: Task, seed: int) -> ToolSession:
        """Open a session for one episode of ``task``."""
        ...


@runtime_checkable
class MappingStore(Protocol):
    """Per-task call -> response memory that keeps a tool simulator consistent.

    Hook: :func:`synth_register_mapping_stores`. ``key`` is a canonical form of the call.
    """

    async def get(self, task_id: str, key: str) -> Any | None:
        """The stored response, or None."""
        ...

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Store ``value`` unless a response exists; return the response that is stored (first writer wins)."""
        ...


@runtime_checkable
class RubricBuilder(Protocol):
    """Builds a task's rubric from its workflow and demonstrations. Hook: :func:`synth_register_rubric_builders`."""

    def build(self, task: Task, demonstrations: Sequence[Trajectory]) -> Rubric | Awaitable[Rubric]:
        """Return the rubric for ``task`` (or an awaitable of it, for a builder that asks a teacher).

        A builder with an integer attribute ``demonstrations = K`` gets K teacher demonstrations per task
        (samples 0..K-1 of the run's model, or of the backend named by its ``demonstrator`` attribute);
        otherwise it gets the simulate stage's trajectories. Set ``Rubric.dropped`` to a reason to drop a
        task: its trajectories are then neither scored nor exported.
        """
        ...


@runtime_checkable
class RewardScorer(Protocol):
    """Judges a trajectory against its rubric. Hook: :func:`synth_register_reward_scorers`."""

    async def score(self, task: Task, rubric: Rubric, trajectory: Trajectory) -> Score:
        """Return the score with a per-criterion breakdown."""
        ...


@attrs.frozen
class Benchmark:
    """A named evaluation environment for ``synth eval --bench NAME``. Hook: :func:`synth_register_benchmarks`.

    :param overrides: run-config overrides that make the environment, as ``--set`` pairs or a nested mapping
        (``{"generator": "bfcl", "tools": "bfcl", "user": "bfcl-turns", "scorer": "bfcl",
        "plugins": {"bfcl": {"category": "multi_turn_base"}}, "tasks": 200}``): the generator makes its
        tasks, the user, tool simulator, rubric builder and scorer run its episodes.
    :param description: one line for ``synth plugins``.
    :param success: ``"state"`` (the final state equals the gold state and the answer values are reported,
        for database environments) or ``"scorer"`` (the scorer's ``success``: the benchmark's own checker).
    """

    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    description: str = ""
    success: str = "state"


@attrs.frozen
class TrainRequest:
    """What an RL algorithm trains on: a run directory's exports and a model path."""

    run_dir: str
    model: str
    output_dir: str
    options: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class RLAlgorithm(Protocol):
    """Trains a policy. Hook: :func:`synth_register_rl_algorithms`."""

    def train(self, request: TrainRequest) -> Mapping[str, Any]:
        """Train and return final metrics."""
        ...


@attrs.frozen
class ChatRequest:
    """A chat completion request in OpenAI shape.

    ``task`` is privileged context for teacher-side backends (the offline ``oracle`` reads the gold
    workflow from it); a backend serving a real model ignores it.
    """

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    params: Mapping[str, Any] = attrs.field(factory=dict)
    task: Task | None = None
    seed: int = 0


@attrs.frozen
class ChatResponse:
    """An assistant message with its token usage."""

    message: Message
    usage: Usage = attrs.field(factory=Usage)


@runtime_checkable
class LLMBackend(Protocol):
    """Chat with a model (OpenAI-compatible server, in-process engine, local weights, offline oracle).

    Hook: :func:`synth_register_llm_backends`. ``name`` identifies the model in trajectory records.
    """

    name: str

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Return the assistant's next message."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Runs many independent async jobs. Hook: :func:`synth_register_executors`."""

    def map(
        self, fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, concurrency: int
    ) -> AsyncIterator[tuple[T, R | BaseException]]:
        """Run ``fn`` on every item, at most ``concurrency`` at once; yield ``(item, result or error)`` as
        each finishes. One item's error never cancels the others."""
        ...


# --- Typing helpers for the hooks' ``register`` callable -------------------------------------------------

from typing import TYPE_CHECKING  # noqa: E402 - typing helpers are kept together at the end

if TYPE_CHECKING:
    import click

T_contra = TypeVar("T_contra", contravariant=True)


class Register(Protocol[T_contra]):
    """The ``register`` callable a ``synth_register_*`` hook receives, typed by what the kind builds.

    ``factory`` is called with the implementation's options and must return a ``T_contra`` (e.g.
    ``Register[TaskGenerator]``: a class satisfying :class:`TaskGenerator`), or it is an import string
    ``"package.module:Attr"`` resolved only when the implementation is built. A type checker then checks a
    plugin's registration::

        @hookimpl
        def synth_register_task_generators(register: Register[TaskGenerator]) -> None:
            register("my-gen", MyGenerator, description="tasks from my API catalogue")
    """

    def __call__(self, name: str, factory: Callable[..., T_contra] | str, description: str = "") -> None:
        """Register ``factory`` under ``name`` (what users type, e.g. ``--set generator=NAME``)."""
        ...


class RegisterCommand(Protocol):
    """The ``register`` callable of ``synth_register_commands``: a ``click.Command`` or an import string
    ``"package.module:attr"`` that resolves to one (imported only when the command runs)."""

    def __call__(self, name: str, command: click.Command | str, description: str = "") -> None:
        """Add ``command`` to the ``synth`` group as ``synth NAME``."""
        ...
