"""Access to the ``bfcl-eval`` package: its multi-turn entries, ground truth, function docs and API classes.

``bfcl-eval`` is imported only here, and only when a BFCL component is built, so loading plugins never needs
it. Its declared dependencies conflict with synthagent's; it is installed with ``pip install --no-deps
bfcl-eval``, and the multi-turn parts need nothing beyond the standard library and ``mpmath``.

Nothing here evaluates text as code: ground-truth calls are parsed with :mod:`ast` and only literal arguments
are accepted (:func:`parse_call`); calls are rendered back from a validated name and ``repr`` of JSON values
(:func:`render_call`), which is what BFCL's checker receives.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError

__all__ = ["INSTALL_HINT", "CATEGORIES", "require_bfcl", "load_entries", "entry", "category_of", "func_docs",
           "tool_parameters", "parse_call", "render_call", "instantiate", "public_state", "ground_truth_calls",
           "ADDITIONAL_FUNCTION_PROMPT", "turn_texts"]

#: What to run when the package is missing (the adapter's error says exactly this).
INSTALL_HINT = "pip install --no-deps bfcl-eval"

#: The multi-turn categories the generator loads (``multi_turn_<category>``).
CATEGORIES = ("base", "miss_param", "miss_func", "long_context")

#: What the user says on a ``miss_func`` turn that brings the held-out function (BFCL's own wording).
ADDITIONAL_FUNCTION_PROMPT = "I have updated some more functions you can choose from. What about now?"


def require_bfcl() -> Any:
    """Import and return ``bfcl_eval``; raise :class:`ConfigError` (exit 2) with the install command if absent."""
    try:
        import bfcl_eval
        from bfcl_eval.constants import eval_config  # noqa: F401 - the paths of the data files
        from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_checker  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the BFCL environment needs the bfcl-eval package ({exc}); install it with: "
                          f"{INSTALL_HINT}") from None
    return bfcl_eval


def _data_dir() -> Path:
    require_bfcl()
    from bfcl_eval.constants.eval_config import PROMPT_PATH

    return Path(PROMPT_PATH)


def _version() -> str:
    from bfcl_eval.constants.category_mapping import VERSION_PREFIX

    return str(VERSION_PREFIX)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@functools.cache
def load_entries(category: str) -> tuple[dict[str, Any], ...]:
    """The entries of ``multi_turn_<category>``, each with its ``ground_truth`` merged in (file order)."""
    if category not in CATEGORIES:
        raise ConfigError(f"bfcl: unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    data = _data_dir()
    name = f"{_version()}_multi_turn_{category}.json"
    prompts = _read_jsonl(data / name)
    answers = {row["id"]: row["ground_truth"] for row in _read_jsonl(data / "possible_answer" / name)}
    out = []
    for row in prompts:
        if row["id"] not in answers:
            raise ConfigError(f"bfcl: entry {row['id']} has no ground truth in {name}")
        out.append({**row, "ground_truth": answers[row["id"]]})
    return tuple(out)


def category_of(entry_id: str) -> str:
    """``multi_turn_miss_param_3`` -> ``miss_param``."""
    stem = entry_id.rsplit("_", 1)[0]
    if not stem.startswith("multi_turn_") or stem[len("multi_turn_"):] not in CATEGORIES:
        raise ConfigError(f"bfcl: {entry_id!r} is not a multi-turn entry id ({', '.join(CATEGORIES)})")
    return stem[len("multi_turn_"):]


@functools.cache
def _index(category: str) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in load_entries(category)}


def entry(entry_id: str) -> dict[str, Any]:
    """The entry with id ``entry_id`` (a deep copy: callers may not change the cached data)."""
    found = _index(category_of(entry_id)).get(entry_id)
    if found is None:
        raise ConfigError(f"bfcl: no entry {entry_id!r} in the installed bfcl-eval data")
    return copy.deepcopy(found)


@functools.cache
def _class_docs(class_name: str) -> tuple[dict[str, Any], ...]:
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    return tuple(_read_jsonl(_data_dir() / "multi_turn_func_doc" / MULTI_TURN_FUNC_DOC_FILE_MAPPING[class_name]))


def func_docs(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The function docs an entry offers: its involved classes' functions less ``excluded_function``.

    Functions a ``miss_func`` entry holds out are included (their turn brings them; see docs/bfcl.md)."""
    excluded = set(row.get("excluded_function") or ())
    docs = [d for cls in row["involved_classes"] for d in _class_docs(cls) if d["name"] not in excluded]
    return copy.deepcopy(docs)


_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}


def tool_parameters(schema: Any) -> Any:
    """A BFCL parameter schema as JSON Schema (``dict`` -> ``object``, ``float`` -> ``number``, ...)."""
    if isinstance(schema, Mapping):
        out = {k: tool_parameters(v) for k, v in schema.items() if k != "properties"}
        if isinstance(schema.get("type"), str):
            out["type"] = _TYPES.get(schema["type"], schema["type"])
        if "properties" in schema:
            out["properties"] = {k: tool_parameters(v) for k, v in schema["properties"].items()}
        return out
    if isinstance(schema, list):
        return [tool_parameters(v) for v in schema]
    return schema


def _class_of(class_name: str) -> type:
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING

    if class_name not in CLASS_FILE_PATH_MAPPING:
        raise ConfigError(f"bfcl: unknown API class {class_name!r}")
    cls: type = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name]), class_name)
    return cls


def instantiate(row: Mapping[str, Any]) -> dict[str, Any]:
    """Fresh instances of the entry's API classes, loaded from its ``initial_config`` as BFCL's checker does."""
    from bfcl_eval.constants.executable_backend_config import STATELESS_CLASSES

    long_context = category_of(row["id"]) == "long_context"
    instances: dict[str, Any] = {}
    for class_name in row["involved_classes"]:
        instance = _class_of(class_name)()
        if class_name not in STATELESS_CLASSES:
            config = copy.deepcopy(row.get("initial_config", {}).get(class_name, {}))
            instance._load_scenario(config, long_context=long_context)
        instances[class_name] = instance
    return instances


def _plain(value: Any, ancestors: frozenset[int] = frozenset()) -> Any:
    """Plain JSON data of ``value``; a reference back to an enclosing object (a parent link) becomes a marker."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if id(value) in ancestors or len(ancestors) > 100:
        return "<cycle>"
    inner = ancestors | {id(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, inner) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, inner) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v, inner) for v in value), key=repr)
    if hasattr(value, "__dict__"):
        return {"__class__": type(value).__name__,
                **{k: _plain(v, inner) for k, v in vars(value).items() if not k.startswith("_")}}
    return str(value)


def public_state(instances: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each instance's public attributes as plain JSON data (what BFCL's state checker compares)."""
    return {name: {k: _plain(v) for k, v in vars(obj).items() if not k.startswith("_")}
            for name, obj in instances.items()}


def _literal(node: ast.AST, call: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ValueError(f"bfcl: ground-truth call {call!r} has a non-literal argument ({exc})") from None


def _method_params(row: Mapping[str, Any], name: str) -> list[str]:
    for class_name in row["involved_classes"]:
        method = getattr(_class_of(class_name), name, None)
        if method is not None and not name.startswith("_") and callable(method):
            return [p for p in inspect.signature(method).parameters if p != "self"]
    raise ValueError(f"bfcl: {row['id']}: no API class has a function {name!r}")


def parse_call(row: Mapping[str, Any], call: str) -> tuple[str, dict[str, Any]]:
    """A ground-truth call string (``mv(source='a', destination='b')``) as ``(name, arguments)``.

    Parsed with :mod:`ast`, never evaluated: the callee must be a plain name and every argument a literal.
    Positional arguments are named after the API method's signature."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"bfcl: ground-truth call {call!r} does not parse: {exc.msg}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"bfcl: ground-truth call {call!r} is not a plain function call")
    name = node.func.id
    arguments: dict[str, Any] = {}
    if node.args:
        params = _method_params(row, name)
        for i, arg in enumerate(node.args):
            arguments[params[i]] = _literal(arg, call)
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"bfcl: ground-truth call {call!r} uses **kwargs")
        arguments[kw.arg] = _literal(kw.value, call)
    return name, arguments


def ground_truth_calls(row: Mapping[str, Any]) -> list[list[tuple[str, dict[str, Any]]]]:
    """The entry's ground truth, per turn, as parsed ``(name, arguments)`` calls."""
    return [[parse_call(row, call) for call in turn] for turn in row["ground_truth"]]


def render_call(name: str, arguments: Mapping[str, Any]) -> str | None:
    """The call as a Python call string for BFCL's checker, or None when it cannot be one safely.

    The name and argument names must be identifiers (not keywords) and every value JSON data, rendered with
    ``repr`` (a literal): the checker's ``eval`` then sees nothing but a method call with literal arguments."""
    import keyword

    def ok_name(s: Any) -> bool:
        return isinstance(s, str) and s.isidentifier() and not keyword.iskeyword(s) and not s.startswith("_")

    def ok_value(v: Any, depth: int = 0) -> bool:
        if depth > 20:
            return False
        if v is None or isinstance(v, (bool, int, str)):
            return True
        if isinstance(v, float):
            return v == v and v not in (float("inf"), float("-inf"))
        if isinstance(v, (list, tuple)):
            return all(ok_value(x, depth + 1) for x in v)
        if isinstance(v, Mapping):
            return all(isinstance(k, str) and ok_value(x, depth + 1) for k, x in v.items())
        return False

    if not ok_name(name) or not all(ok_name(k) for k in arguments) or not all(ok_value(v) for v in arguments.values()):
        return None
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def turn_texts(row: Mapping[str, Any]) -> list[str]:
    """The user's message for each turn (a held-out-function turn says BFCL's additional-function prompt)."""
    out = []
    for turn in row["question"]:
        contents = [str(m.get("content", "")) for m in turn if m.get("role") == "user"]
        out.append("\n".join(contents) if contents else ADDITIONAL_FUNCTION_PROMPT)
    return out

