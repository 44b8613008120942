"""A real API corpus as a pool: the function schemas of BFCL (and your own files), normalized into pool records.

The ``bfcl-eval`` wheel (``pip install --no-deps bfcl-eval``) ships ~3,258 distinct function schemas (1,853 distinct
names) in its single-turn and live categories (:data:`BFCL_CATEGORIES`), one JSON entry per line with a
``function`` list. BFCL writes its schemas in a dialect of JSON Schema (``dict``, ``float``, ``tuple``, Java's
``HashMap``, ``any``, dotted names such as ``sports.ranking.get_champion``); :func:`normalize_function` turns one
into an OpenAI function a pool accepts, and :func:`corpus_records` does it for a whole corpus:

- types become JSON Schema (:func:`json_type`: ``dict`` -> ``object``, ``float``/``double`` -> ``number``,
  ``tuple``/``ArrayList`` -> ``array``, ``HashMap`` -> ``object``, ``any``/``char`` -> ``string``, ``long`` ->
  ``integer``, capitalized types lowered), recursively through ``items`` and nested ``properties``;
- tool and parameter names become snake_case identifiers (``color_converter.RGB_to_Pantone`` ->
  ``color_converter_rgb_to_pantone``);
- exact duplicates (same name and same normalized parameters) are removed; the same name with different
  parameters is kept under a suffix (``get_weather``, ``get_weather_2``);
- a schema that cannot be made valid is dropped and counted by reason (``dropped_<reason>`` in the counts);
- the effect rules read the method of a dotted name (:func:`rules_name`: ``post_api_token`` of
  ``ApiTokenApi.post_api_token`` is an insert), given to the pool as the record's ``x-rules-name``;
- every record gets an ``area``: the name's prefix (``sports`` for ``sports.ranking.get_champion``, ``media`` for
  ``Media_3_PlayMovie``), else its first noun (``resistance`` for ``calculate_resistance``), else the category.

Other sources: a BFCL-style JSONL file of your own, or any file :func:`synthagent.core.toolsource.load_tools` reads
(OpenAI schemas, OpenAPI 3). Nothing in a corpus is executed: it is data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.toolschema import schema_problems
from synthagent.core.toolsource import EFFECT_VERBS, load_tools, snake_case
from synthagent.plugins.generators.graph_domains.pool import check_effect, infer_effect

__all__ = ["BFCL_CATEGORIES", "bfcl_data_dir", "json_type", "normalize_function", "rules_name", "corpus_records",
           "read_corpus", "NormalizeError"]

#: The BFCL v4 categories whose entries carry function schemas (single-turn and live).
BFCL_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "live_multiple",
                   "live_parallel", "live_parallel_multiple", "live_relevance", "live_irrelevance", "irrelevance",
                   "simple_java", "simple_javascript")

_TYPE_MAP = {"dict": "object", "object": "object", "hashmap": "object", "map": "object",
             "float": "number", "double": "number", "number": "number",
             "integer": "integer", "int": "integer", "long": "integer", "short": "integer", "byte": "integer",
             "tuple": "array", "arraylist": "array", "array": "array", "list": "array", "set": "array",
             "string": "string", "str": "string", "char": "string", "any": "string",
             "boolean": "boolean", "bool": "boolean"}
#: Words that start a name without saying what it is about (verbs): skipped when an area is derived.
_VERB_WORDS = frozenset(v for verbs in EFFECT_VERBS.values() for v in verbs) | {
    "calculate", "calc", "compute", "convert", "estimate", "generate", "predict", "analyze", "analyse", "determine",
    "identify", "retrieve", "send", "make", "run", "play", "solve", "sort", "translate", "validate", "plot", "draw",
    "perform", "evaluate", "handle", "process", "is", "do", "to", "api", "the", "my", "current", "all", "info",
    "details", "data"}


#: Verbs of the corpus that the effect rules know under another name (``ReserveRestaurant`` books one).
_VERB_SYNONYMS = {"reserve": "book", "rent": "book", "buy": "place", "purchase": "place", "order": "place",
                  "send": "post", "make": "create", "insert": "add", "put": "update", "patch": "update",
                  "rename": "update", "toggle": "update", "enable": "activate", "disable": "deactivate",
                  "retrieve": "get", "read": "get", "lookup": "get", "erase": "delete", "clear": "delete"}
#: Keys of the sqlite simulator's results (a list result is ``{"items": [...]}``, a failure ``{"error": ...}``):
#: a parameter so named would become a column that reads as one of them, so it is renamed.
_ENVELOPE = frozenset({"items", "error", "deleted"})


#: Parameter names that are English function words (BFCL has ``from``, ``to``, ``in``): renamed ``to_value``, since
#: the user simulator finds a fact's name inside any sentence that uses the word.
_FUNCTION_WORDS = frozenset({"a", "an", "the", "to", "from", "in", "at", "by", "for", "on", "of", "is", "as", "and", "or",
                             "if", "it", "with", "me", "my", "you", "your", "do", "be", "can", "this", "that"})


class NormalizeError(Exception):
    """A schema that cannot be normalized; ``reason`` is the counted drop reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def bfcl_data_dir() -> Path:
    """The ``data/`` folder of the installed ``bfcl-eval`` wheel.

    :raises ConfigError: the wheel is not installed (``pip install --no-deps bfcl-eval``)."""
    try:
        import bfcl_eval
    except ImportError:
        raise ConfigError("pool = 'bfcl' needs the BFCL data: pip install --no-deps bfcl-eval") from None
    path = Path(str(bfcl_eval.__file__)).parent / "data"
    if not path.is_dir():
        raise ConfigError(f"bfcl-eval is installed but has no data folder at {path}")
    return path


def json_type(bfcl_type: Any) -> str:
    """The JSON Schema type of a BFCL type name (``dict`` -> ``object``, ``float`` -> ``number``, ...).

    :raises NormalizeError: ``unknown_type`` for a type with no JSON Schema counterpart (or none)."""
    mapped = _TYPE_MAP.get(str(bfcl_type).strip().lower()) if isinstance(bfcl_type, str) else None
    if mapped is None:
        raise NormalizeError("unknown_type", repr(bfcl_type))
    return mapped


def _param_name(name: Any) -> str:
    if not isinstance(name, str):
        raise NormalizeError("bad_parameter_name", repr(name))
    fixed = snake_case(name, prefix="p_")
    if fixed == "p_":
        raise NormalizeError("bad_parameter_name", repr(name))
    if fixed in _ENVELOPE:
        return f"{fixed}_value"  # the sqlite simulator's list results are {"items": [...]}: a column so named reads as one
    if fixed in _FUNCTION_WORDS:
        return f"{fixed}_value"  # a fact called "to" is asked for by every "glad to help": the user hears two questions
    return fixed


def _schema(node: Any, depth: int = 0) -> dict[str, Any]:
    """One property schema in JSON Schema: types mapped, nested ``items``/``properties`` too."""
    if not isinstance(node, Mapping):
        raise NormalizeError("invalid_schema", "a property schema must be an object")
    if depth > 16:
        raise NormalizeError("invalid_schema", "nested too deep")
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in ("type", "items", "properties", "required")}
    out["type"] = json_type(node.get("type", "string" if "enum" in node else None))
    if out["type"] == "array":
        items = node.get("items")
        out["items"] = _schema(items, depth + 1) if isinstance(items, Mapping) and "type" in items else {"type": "string"}
    if out["type"] == "object" and isinstance(node.get("properties"), Mapping):
        out["properties"] = {str(k): _schema(v, depth + 1) for k, v in node["properties"].items()}
        required = node.get("required")
        if isinstance(required, list):
            out["required"] = [r for r in required if r in out["properties"]]
    return out


def normalize_function(fn: Any) -> dict[str, Any]:
    """A BFCL (or OpenAI) function schema as an OpenAI function with a snake_case name and JSON Schema types.

    :raises NormalizeError: with the drop reason: ``not_a_function``, ``bad_name``, ``name_too_long`` (over 64
        characters, OpenAI's limit), ``parameters_not_object``,
        ``unknown_type``, ``bad_parameter_name``, ``parameter_name_collision``, ``required_undeclared``,
        ``invalid_schema`` or ``invalid_effect`` (the effect the offline rules infer would be refused)."""
    if isinstance(fn, Mapping) and isinstance(fn.get("function"), Mapping):
        fn = fn["function"]
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise NormalizeError("not_a_function")
    name = snake_case(fn["name"])
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise NormalizeError("bad_name", repr(fn["name"]))
    if len(name) > 64:  # OpenAI's limit on a function name
        raise NormalizeError("name_too_long", repr(fn["name"]))
    raw = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(raw, Mapping) or json_type(raw.get("type", "object")) != "object" \
            or not isinstance(raw.get("properties", {}), Mapping):
        raise NormalizeError("parameters_not_object")
    props: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for pname, pschema in (raw.get("properties") or {}).items():
        fixed = _param_name(pname)
        if fixed in props:
            raise NormalizeError("parameter_name_collision", f"{pname!r} and another parameter are both {fixed!r}")
        props[fixed] = _schema(pschema)
        renamed[str(pname)] = fixed
    required = raw.get("required", [])
    if not isinstance(required, list) or any(r not in renamed for r in required):
        raise NormalizeError("required_undeclared")
    params = {"type": "object", "properties": props, "required": [renamed[r] for r in required]}
    problems = schema_problems(params)
    if problems:
        raise NormalizeError("invalid_schema", problems[0])
    method = rules_name(fn["name"])
    effect = infer_effect(method, params)
    if check_effect(effect, props, name):
        raise NormalizeError("invalid_effect", f"the rules' effect for {name!r} is not valid")
    return {"name": name, "description": str(fn.get("description", "") or "")[:1000], "parameters": params}


def rules_name(raw_name: str) -> str:
    """The part of a raw name that says what the tool does, for the effect rules: the method of a dotted name
    (``sports.ranking.get_champion`` -> ``get_champion``, ``ApiTokenApi.post_api_token`` -> ``post_api_token``),
    the action of a ``Word_N_Action`` name (``Media_3_PlayMovie`` -> ``play_movie``), else the whole name; a
    verb the rules know under another name is renamed (``reserve_restaurant`` -> ``book_restaurant``)."""
    method = raw_name.rsplit(".", 1)[-1]
    m = re.match(r"^[A-Za-z]+_\d+_(.+)$", method)
    fixed = snake_case(m.group(1) if m else method)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", fixed):
        return snake_case(raw_name)
    verb, _, rest = fixed.partition("_")
    return f"{_VERB_SYNONYMS[verb]}_{rest}" if verb in _VERB_SYNONYMS and rest else fixed


def _area(raw_name: str, name: str, fallback: str) -> str:
    """The area of a tool from its raw name: a dotted or ``Word_N_`` prefix, else its first noun."""
    dotted = [snake_case(p) for p in raw_name.split(".")[:-1]]
    prefix = next((p for p in dotted if p not in _VERB_WORDS), None)  # sports.ranking.get_champion -> sports
    if prefix:
        return prefix
    m = re.match(r"^([A-Za-z]+)_\d+_", raw_name)
    if m:
        return m.group(1).lower()
    words = [w for w in name.split("_") if w.isalpha() and len(w) > 2 and w not in _VERB_WORDS]
    return words[0] if words else snake_case(fallback)


def read_corpus(source: str | Path) -> Iterator[tuple[str, str, Any]]:
    """``(category, where, function)`` for every function of one source: ``bfcl`` (every category of the
    installed wheel), a BFCL-style JSONL file (entries with a ``function`` list), or a file of OpenAI schemas /
    an OpenAPI 3 document (:func:`synthagent.core.toolsource.load_tools`)."""
    if str(source) == "bfcl":
        root = bfcl_data_dir()
        for category in BFCL_CATEGORIES:
            path = root / f"BFCL_v4_{category}.json"
            if path.is_file():
                yield from _bfcl_file(path, category)
        return
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"API corpus {str(source)!r} is not a file (or 'bfcl')")
    first = path.read_text(encoding="utf-8", errors="replace").lstrip()[:1]
    if first == "{":
        try:
            head = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        except (ValueError, IndexError):
            head = None
        if isinstance(head, Mapping) and isinstance(head.get("function"), list):
            yield from _bfcl_file(path, snake_case(path.stem))
            return
    category = snake_case(path.stem)
    for i, tool in enumerate(load_tools(path), 1):
        yield category, f"{path.name}: tool {i}", tool


def _bfcl_file(path: Path, category: str) -> Iterator[tuple[str, str, Any]]:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"API corpus {path}:{n} is not valid JSON: {exc}") from exc
        for fn in (entry.get("function") or []) if isinstance(entry, Mapping) else []:
            yield category, f"{path.name}:{n}", fn


def corpus_records(sources: Sequence[str | Path] | Iterable[tuple[str, str, Any]]
                   ) -> tuple[list[tuple[str, str, dict[str, Any]]], Counter[str]]:
    """Normalized pool records (``(area, where, {"type": "function", "function": ..., "area": ...})``, the input
    of :func:`~synthagent.plugins.generators.graph_domains.pool.pool_from_records`) and counts.

    :param sources: sources for :func:`read_corpus` (``"bfcl"``, file paths), or ``(category, where, function)``
        triples already read.
    :returns: the records, in source order, and counts: ``functions`` (entries read), ``duplicates`` (exact
        duplicates removed), ``renamed`` (same name, other schema: kept with a suffix), ``kept`` and
        ``dropped_<reason>`` for each drop reason.
    """
    given = list(sources)
    items: Iterable[tuple[str, str, Any]]
    if all(isinstance(s, (str, Path)) for s in given):
        items = (t for s in given for t in read_corpus(s))  # type: ignore[arg-type]
    else:
        items = given  # type: ignore[assignment]
    counts: Counter[str] = Counter()
    variants: dict[str, list[str]] = {}  # name -> canonical parameters of each kept variant
    records: list[tuple[str, str, dict[str, Any]]] = []
    for category, where, fn in items:
        counts["functions"] += 1
        try:
            norm = normalize_function(fn)
        except NormalizeError as exc:
            counts[f"dropped_{exc.reason}"] += 1
            continue
        canon = json.dumps(norm["parameters"], sort_keys=True)
        kept = variants.setdefault(norm["name"], [])
        if canon in kept:
            counts["duplicates"] += 1
            continue
        raw_name = str((fn.get("function", fn) if isinstance(fn, Mapping) else {}).get("name", norm["name"]))
        area = _area(raw_name, norm["name"], category)
        kept.append(canon)
        if len(kept) > 1:
            counts["renamed"] += 1
            suffixed = f"{norm['name']}_{len(kept)}"
            while suffixed in variants:
                suffixed += "_"
            variants[suffixed] = [canon]
            norm = {**norm, "name": suffixed}
        counts["kept"] += 1
        record: dict[str, Any] = {"type": "function", "function": norm, "area": area}
        method = rules_name(raw_name)
        if method != norm["name"]:
            record["x-rules-name"] = method
        records.append((area, where, record))
    return records, counts
