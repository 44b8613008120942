"""The data model: every record the pipeline reads or writes.

All records are frozen :mod:`attrs` classes that round-trip through JSON (:func:`to_json_dict` /
:func:`from_json_dict`) and carry a stable ``id`` derived from their inputs (:func:`stable_id`), so writes
are idempotent and a resumed run is exact. Messages and tool calls follow the OpenAI chat format, so exports
load straight into TRL and Hugging Face datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs
import cattrs
import cattrs.gen

__all__ = [
    "Persona",
    "Effect",
    "ToolSpec",
    "Column",
    "Table",
    "DatabaseState",
    "StateChange",
    "Fact",
    "WorkflowStep",
    "Provenance",
    "Task",
    "ToolCall",
    "Message",
    "Usage",
    "Trajectory",
    "Criterion",
    "Rubric",
    "CriterionResult",
    "Score",
    "stable_id",
    "trajectory_id",
    "canonical_json",
    "to_json_dict",
    "from_json_dict",
    "RecordError",
    "RECORD_TYPES",
    "MAX_DEPTH",
    "nesting_problem",
]

EffectKind = Literal["read", "insert", "update", "delete"]
Role = Literal["system", "user", "assistant", "tool"]


def _canon(value: Any) -> Any:
    """Normalize a JSON value for hashing: integral floats become ints, keys are sorted by json.dumps."""
    cls = type(value)
    if cls is str or cls is int or value is None:  # fast paths: the bulk of database rows (same result)
        return value
    if cls is dict:
        return {(k if type(k) is str else str(k)): (v if type(v) is str or type(v) is int or v is None else _canon(v))
                for k, v in value.items()}
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Serialize ``value`` canonically: sorted keys, no whitespace, integral floats as ints."""
    return json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_id(prefix: str, *parts: Any) -> str:
    """A short id that depends only on ``parts`` (canonical JSON), e.g. ``task-3f2a...``.

    >>> stable_id("task", "orders", 3) == stable_id("task", "orders", 3.0)
    True
    """
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:16]}"


def trajectory_id(task_id: str, policy: str, sample: int, seed: int) -> str:
    """The stable id of a trajectory: its task, the policy's name, the sample index and the run seed.

    The one recipe every rollout record uses (exact resume depends on all writers agreeing)."""
    return stable_id("traj", task_id, policy, sample, seed)


def _tuple(value: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value) if value is not None else {}


@attrs.frozen
class Persona:
    """Who the simulated user is. ``description`` is free text for a teacher or user simulator."""

    id: str
    description: str


@attrs.frozen
class Effect:
    """A tool's declarative operation on one database table (see ``docs/domain-packs.md``).

    ``where`` maps parameter -> column (equality filter), ``set``/``values`` map parameter -> column for
    updates/inserts, ``const`` maps column -> fixed value, ``require`` maps column -> allowed current values.
    """

    kind: EffectKind
    table: str
    where: dict[str, str] = attrs.field(factory=dict, converter=_dict)
    set: dict[str, str] = attrs.field(factory=dict, converter=_dict)
    values: dict[str, str] = attrs.field(factory=dict, converter=_dict)
    const: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    require: dict[str, tuple[Any, ...]] = attrs.field(
        factory=dict, converter=lambda d: {k: tuple(v) for k, v in (d or {}).items()}
    )
    columns: tuple[str, ...] = attrs.field(factory=tuple, converter=_tuple)
    many: bool = False
    order_by: str | None = None
    key: str | None = None
    key_prefix: str = ""

    @property
    def writes(self) -> bool:
        """True for insert, update and delete."""
        return self.kind != "read"


@attrs.frozen
class ToolSpec:
    """A tool the agent may call: OpenAI function schema plus an optional database ``effect``."""

    name: str
    description: str
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    returns: dict[str, Any] = attrs.field(factory=dict)
    effect: Effect | None = None

    @property
    def writes(self) -> bool:
        """True when the tool changes state (a write effect)."""
        return self.effect is not None and self.effect.writes

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling format (``{"type": "function", "function": {...}}``)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@attrs.frozen
class Column:
    """A column of a domain table. ``type`` is an SQLite type: TEXT, INTEGER or REAL."""

    name: str
    type: str


@attrs.frozen
class Table:
    """A domain table: name, primary-key column and typed columns (in declaration order)."""

    name: str
    primary_key: str
    columns: tuple[Column, ...] = attrs.field(converter=_tuple)


@attrs.frozen
class DatabaseState:
    """A whole database as data: schema and rows. Its :meth:`digest` is order-independent."""

    tables: tuple[Table, ...] = attrs.field(converter=_tuple)
    rows: dict[str, tuple[dict[str, Any], ...]] = attrs.field(
        converter=lambda d: {k: tuple(v) for k, v in d.items()}
    )

    def table(self, name: str) -> Table:
        """The table called ``name`` (KeyError if absent)."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def digest(self) -> str:
        """A canonical digest of the rows: equal states give equal digests whatever the row order."""
        return state_digest(self.rows, {t.name: t.primary_key for t in self.tables})


def state_digest(rows: Mapping[str, Sequence[Mapping[str, Any]]], keys: Mapping[str, str]) -> str:
    """Canonical sha256 of table rows, each table sorted by its primary key."""
    canon = {
        table: sorted((dict(r) for r in table_rows), key=lambda r: str(r.get(keys.get(table, ""), "")))
        for table, table_rows in sorted(rows.items())
    }
    return hashlib.sha256(canonical_json(canon).encode("utf-8")).hexdigest()


@attrs.frozen
class StateChange:
    """The expected end state of a task: its digest and the rows that differ from the initial state.

    ``changes`` maps table -> primary key -> the final row, or ``None`` for a deleted row.
    """

    digest: str
    changes: dict[str, dict[str, dict[str, Any] | None]] = attrs.field(factory=dict, converter=_dict)


@attrs.frozen
class Fact:
    """A fact the user knows. Hidden facts live only in the user simulator's context.

    ``keywords`` are words that, in an agent's question, ask for this fact; ``statement`` is how the user
    says it.
    """

    name: str
    value: Any
    description: str
    keywords: tuple[str, ...] = attrs.field(factory=tuple, converter=_tuple)
    statement: str = ""


@attrs.frozen
class WorkflowStep:
    """One high-level step of a task's gold workflow.

    ``bindings`` says where each argument comes from: ``fact:NAME``, ``step:N``, ``literal``,
    ``step:N+fact:NAME`` for a value picked from step N's result by a fact, or ``step:N:$.path`` for the value
    at a JSON path in step N's output (parsed and resolved by :mod:`synthagent.core.bindings`).
    ``response`` is the expected output of the step's call in a simulated world (a teacher-written task's
    seed of the call -> response mapping); None for database environments (left out of the JSON record).
    """

    index: int
    description: str
    tool: str | None = None
    arguments: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    bindings: dict[str, str] = attrs.field(factory=dict, converter=_dict)
    writes: bool = False
    response: Any = None


@attrs.frozen
class Provenance:
    """Where a record came from: generator, teacher, seed, and the generator's slot (for resume)."""

    generator: str
    seed: int
    slot: str = ""
    teacher: str = ""
    template: str = ""
    prompt_hashes: dict[str, str] = attrs.field(factory=dict, converter=_dict)


@attrs.frozen
class Task:
    """A synthesized task.

    ``instruction`` is the underspecified request the agent sees; ``full_instruction`` states everything;
    ``user_context`` holds the hidden facts only the user simulator sees; ``workflow`` the ordered gold
    steps; ``answer`` values that must appear in the agent's final message. For database environments,
    ``initial_state`` is the starting database and ``gold_state`` the expected end state.
    """

    id: str
    domain: str
    persona: Persona
    system_prompt: str
    tools: tuple[ToolSpec, ...] = attrs.field(converter=_tuple)
    instruction: str
    full_instruction: str
    user_context: tuple[Fact, ...] = attrs.field(converter=_tuple)
    visible_facts: tuple[Fact, ...] = attrs.field(converter=_tuple)
    workflow: tuple[WorkflowStep, ...] = attrs.field(converter=_tuple)
    answer: tuple[Any, ...] = attrs.field(factory=tuple, converter=_tuple)
    initial_state: DatabaseState | None = None
    gold_state: StateChange | None = None
    provenance: Provenance = attrs.field(factory=lambda: Provenance(generator="unknown", seed=0))

    def tool(self, name: str) -> ToolSpec | None:
        """The task's tool called ``name``, or None."""
        for spec in self.tools:
            if spec.name == name:
                return spec
        return None


@attrs.frozen
class ToolCall:
    """A tool call in OpenAI format. ``arguments`` is a dict (decoded); ``error`` is set for a call the
    policy emitted malformed (unparseable arguments, unknown tool), which the environment answers with an
    error observation instead of executing."""

    id: str
    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    error: str | None = None

    def openai(self) -> dict[str, Any]:
        """OpenAI/TRL chat format with ``arguments`` as a dict (what chat templates expect)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@attrs.frozen
class Message:
    """A chat message in OpenAI format (``role``, ``content``, ``tool_calls``, ``tool_call_id``)."""

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = attrs.field(factory=tuple, converter=_tuple)
    tool_call_id: str | None = None
    name: str | None = None

    def openai(self) -> dict[str, Any]:
        """The message as an OpenAI/TRL chat dict (only the keys that are set)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@attrs.frozen
class Usage:
    """Token usage summed over a trajectory's model calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0


@attrs.frozen
class Trajectory:
    """One simulated episode of a policy on a task.

    ``termination`` is why it ended (``user_stop``, ``final_answer``, ``max_turns``, ``infra_error``,
    ``agent_error``). ``error`` is set only for an infrastructure failure, which is never scored as 0.
    ``timings`` holds wall-clock figures and is the only field that differs between identical runs.
    """

    id: str
    task_id: str
    policy: str
    sample: int
    seed: int
    messages: tuple[Message, ...] = attrs.field(converter=_tuple)
    termination: str
    turns: int
    final_state_digest: str | None = None
    final_state_changes: dict[str, dict[str, dict[str, Any] | None]] = attrs.field(
        factory=dict, converter=_dict
    )
    tool_errors: int = 0
    malformed_tool_calls: int = 0
    usage: Usage = attrs.field(factory=Usage)
    error: str | None = None
    timings: dict[str, float] = attrs.field(factory=dict, converter=_dict, eq=False)


@attrs.frozen
class Criterion:
    """One rubric criterion.

    ``kind`` is ``subgoal`` | ``interaction`` | ``penalty`` | ``forbidden`` | ``check`` (a ``penalty`` only
    takes reward away: failing it zeroes the interaction term and success); ``check`` names the programmatic
    test (``tool_call``, ``answer_contains``, ``asked_for_fact``, ``unexpected_write``, ``tool_outside_task``,
    ``final_state``) and ``spec`` its parameters.
    """

    id: str
    kind: Literal["subgoal", "interaction", "penalty", "forbidden", "check"]
    description: str
    check: str
    spec: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    weight: float = 1.0


@attrs.frozen
class Rubric:
    """A task's rubric: criteria plus how they combine (``weights`` by kind, forbidden criteria gate).

    ``dropped`` is set (with the reason) when the task cannot be rubric-scored, e.g. because the teacher's
    demonstrations do not cover its workflow; such a task's trajectories are not scored or exported.
    ``provenance`` records how the rubric was made (demonstrations used, support per criterion, checker
    validation counts).
    """

    id: str
    task_id: str
    builder: str
    criteria: tuple[Criterion, ...] = attrs.field(converter=_tuple)
    weights: dict[str, float] = attrs.field(factory=dict, converter=_dict)
    dropped: str | None = None
    provenance: dict[str, Any] = attrs.field(factory=dict, converter=_dict)


@attrs.frozen
class CriterionResult:
    """A criterion's verdict with the evidence that decided it."""

    criterion_id: str
    kind: str
    passed: bool
    score: float
    evidence: str
    checker: str


@attrs.frozen
class Score:
    """A trajectory's score. ``total`` is None when ``status`` is not ``ok`` (``infra_error``, ``judge_error``,
    or ``dropped`` when the task's rubric was dropped)."""

    id: str
    trajectory_id: str
    task_id: str
    rubric_id: str
    scorer: str
    status: Literal["ok", "infra_error", "judge_error", "dropped"]
    total: float | None
    success: bool
    breakdown: tuple[CriterionResult, ...] = attrs.field(converter=_tuple)
    components: dict[str, float] = attrs.field(factory=dict, converter=_dict)


#: Run-store record file stem -> the record class of its lines (``tasks`` -> :class:`Task`, ...).
RECORD_TYPES: dict[str, type] = {
    "tasks": Task,
    "trajectories": Trajectory,
    "demonstrations": Trajectory,
    "rubrics": Rubric,
    "scores": Score,
}

_converter = cattrs.Converter()
_converter.register_unstructure_hook(tuple, lambda t: [_converter.unstructure(v) for v in t])
_step_hook = cattrs.gen.make_dict_unstructure_fn(WorkflowStep, _converter)
# a step without a seeded response writes the same record as before the field existed
_converter.register_unstructure_hook(
    WorkflowStep, lambda s: {k: v for k, v in _step_hook(s).items() if k != "response" or v is not None})

T = TypeVar("T")

#: The deepest JSON nesting a record may hold (objects and arrays; the record itself is level 1). Model output
#: (tool-call arguments, a generated task's values) deeper than this cannot be stored: the stage that made it
#: drops it with a named reason (``unstorable_trajectory``, ``invalid_task``) instead of the run failing on a
#: ``RecursionError`` while the record is converted. Real records nest less than 15 levels.
MAX_DEPTH = 64

_LEAVES = (str, int, float, bool, type(None))


def _path_text(node: Any, limit: int = 12) -> str:
    parts: list[str] = []
    while node is not None:
        node, key = node
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    parts.reverse()
    if len(parts) > limit:
        parts = [*parts[: limit - 2], f"...({len(parts) - limit + 2} more levels)", *parts[-2:]]
    return "$" + "".join(parts)


def nesting_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (an attrs record or plain JSON data) cannot be stored for its nesting, or None.

    Iterative (never a ``RecursionError``, however deep ``value`` is): ``"nested deeper than 64 levels at
    $.messages[1].tool_calls[0].arguments.a.a..."``."""
    stack: list[tuple[Any, int, Any]] = [(value, 1, None)]
    while stack:
        obj, depth, where = stack.pop()
        fields = getattr(type(obj), "__attrs_attrs__", None)
        items: Any
        if fields is not None:
            items = ((f.name, getattr(obj, f.name)) for f in fields)
        elif isinstance(obj, Mapping):
            items = obj.items()
        elif isinstance(obj, (list, tuple)):
            items = enumerate(obj)
        else:
            continue
        if depth > limit:
            return f"nested deeper than {limit} levels at {_path_text(where)}"
        for key, child in items:
            if not isinstance(child, _LEAVES):
                stack.append((child, depth + 1, (where, key)))
    return None


def to_json_dict(record: Any) -> dict[str, Any]:
    """Unstructure an attrs record into plain JSON-compatible data.

    :raises RecordError: the record nests deeper than :data:`MAX_DEPTH` (checked first, so a hostile value
        never reaches the recursive converter).
    """
    problem = nesting_problem(record)
    if problem is not None:
        raise RecordError(f"{type(record).__name__} record {getattr(record, 'id', '')!r} is {problem}")
    data: dict[str, Any] = _converter.unstructure(record)
    return data


class RecordError(ValueError):
    """A JSON record does not fit its type; the message names the fields (``$.messages[0].role``), one line."""


class _FieldError(TypeError):
    """A JSON value of the wrong type (raised by the strict structure hooks; the message is the problem)."""


def _strict_str(value: Any, _tp: Any) -> str:
    if type(value) is not str:
        raise _FieldError(f"must be a string, got {_shown(value)}")
    return value


def _strict_int(value: Any, _tp: Any) -> int:
    if type(value) is not int:
        raise _FieldError(f"must be an integer, got {_shown(value)}")
    return value


def _strict_float(value: Any, _tp: Any) -> float:
    if type(value) not in (int, float):
        raise _FieldError(f"must be a number, got {_shown(value)}")
    if not math.isfinite(value):
        raise _FieldError(f"must be a finite number, got {_shown(value)}")
    return float(value)


def _strict_bool(value: Any, _tp: Any) -> bool:
    if type(value) is not bool:
        raise _FieldError(f"must be true or false, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, _LEAVES) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


#: Reads records strictly: a JSON value of the wrong type (``"false"`` for a bool, ``"1.0"`` for a number,
#: ``5`` for a string), NaN or infinity, and keys the record type does not have are refused with the field's
#: path, never coerced (``cattrs``' default converter would make ``"false"`` true).
_reader = cattrs.Converter(forbid_extra_keys=True)
_reader.register_structure_hook(str, _strict_str)
_reader.register_structure_hook(int, _strict_int)
_reader.register_structure_hook(float, _strict_float)
_reader.register_structure_hook(bool, _strict_bool)


def _non_finite(data: Any) -> str | None:
    """The path of the first NaN or infinity in plain JSON data (in fields of any type), or None."""
    stack: list[tuple[Any, Any]] = [(data, None)]
    while stack:
        obj, where = stack.pop()
        if isinstance(obj, Mapping):
            items: Any = obj.items()
        elif isinstance(obj, (list, tuple)):
            items = enumerate(obj)
        else:
            continue
        for key, child in items:
            if type(child) is float and not math.isfinite(child):
                return f"must be a finite number, got {child!r} @ {_path_text((where, key))}"
            if not isinstance(child, _LEAVES):
                stack.append((child, (where, key)))
    return None


def _format(exc: BaseException, tp: Any) -> str:
    if isinstance(exc, _FieldError):
        return str(exc)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(map(repr, exc.extra_fields)))}"
    if typing.get_origin(tp) is Literal:
        got = str(exc).split(" not in literal", 1)[0]
        return f"must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {got[:40]}"
    return cattrs.v.format_exception(exc, tp)


def from_json_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Structure plain JSON data into ``cls``, strictly: every field must have its declared type (no coercion),
    numbers must be finite (anywhere in the record), and keys the type does not have are refused.

    :raises RecordError: one line naming the record type and the first problems with their JSON paths
        (``not a valid Score record: must be true or false, got "false" @ $.success``).
    """
    if not isinstance(data, Mapping):
        raise RecordError(f"a {cls.__name__} record must be a JSON object, got {type(data).__name__}")
    bad = _non_finite(data)
    if bad is not None:
        raise RecordError(f"not a valid {cls.__name__} record: {bad}")
    try:
        return _reader.structure(dict(data), cls)
    except RecursionError:
        raise RecordError(f"not a valid {cls.__name__} record: nested too deep to read") from None
    except Exception as exc:  # cattrs raises exception groups of type errors, key errors, ...
        try:
            problems = cattrs.transform_error(exc, format_exception=_format)
        except Exception:  # pragma: no cover - transform_error handles every cattrs error
            problems = [f"{type(exc).__name__}: {exc}"]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RecordError(f"not a valid {cls.__name__} record: {'; '.join(problems[:3])}{more}") from None
