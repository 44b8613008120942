"""A team's own tools as OpenAI function schemas: ``synth run --tools-from FILE`` (``docs/own-tools.md``).

:func:`load_tools` reads

- **OpenAI function schemas**: a JSON array, a JSON object with a ``tools`` (or ``functions``) list, or JSONL,
  each entry ``{"type": "function", "function": {...}}`` or the bare function object;
- **an OpenAPI 3 document** (JSON, or YAML when PyYAML is installed): one tool per operation, named by its
  ``operationId`` (else method and path), its parameters and JSON request body merged into one object schema,
  local ``$ref`` resolved;
- **the tool list of an MCP server** started over stdio: ``mcp:COMMAND ARGS...`` (through the official ``mcp``
  client, ``pip install 'synthagent[mcp]'``); each tool's ``inputSchema`` is its parameters.

and returns the tools as OpenAI tool dicts with snake_case names, each checked by
:func:`synthagent.core.toolschema.schema_problems`. Every problem is a :class:`ConfigError` that names the
file and the entry. Nothing in the document is executed: it is data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError
from synthagent.core.toolschema import schema_problems

__all__ = ["load_tools", "openapi_tools", "mcp_tools", "toolset_name", "snake_case", "effect_kind", "EFFECT_VERBS"]

#: The leading verb of a tool's snake_case name -> what the tool does to the state it works on.
EFFECT_VERBS: dict[str, tuple[str, ...]] = {
    "read": ("get", "list", "search", "find", "lookup", "show", "fetch", "check", "view", "query", "count"),
    "insert": ("create", "add", "book", "open", "register", "submit", "schedule", "issue", "enroll", "file", "log",
               "place", "new", "post", "record", "request", "start"),
    "update": ("update", "set", "change", "cancel", "assign", "edit", "modify", "mark", "approve", "reject",
               "close", "suspend", "resume", "renew", "pause", "activate", "deactivate", "reschedule", "transfer"),
    "delete": ("delete", "remove", "drop", "purge", "unregister", "withdraw"),
}

_METHODS = ("get", "post", "put", "patch", "delete")
_MAX_REF_DEPTH = 32


def snake_case(name: str, prefix: str = "tool_") -> str:
    """``placeOrder`` / ``place-order`` / ``GET /orders/{id}`` -> ``place_order`` / ``get_orders_id``; a name
    that would not start with a letter gets ``prefix``."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    if not name or not name[0].isalpha():
        name = prefix + name
    return name


def effect_kind(name: str) -> str:
    """``read``, ``insert``, ``update`` or ``delete`` from a tool name's leading verb (``read`` when unknown)."""
    verb = snake_case(name).split("_")[0]
    return next((kind for kind, verbs in EFFECT_VERBS.items() if verb in verbs), "read")


def _read(path: Path) -> tuple[Any, str]:
    """The document at ``path`` and its format (``json``, ``jsonl`` or ``yaml``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"tools_from: cannot read {str(path)!r}: {exc}") from exc
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - PyYAML ships with the default install's dependencies
            raise ConfigError(f"tools_from: {path.name} is YAML; install PyYAML (pip install pyyaml)") from exc
        try:
            return yaml.safe_load(text), "yaml"
        except yaml.YAMLError as exc:
            raise ConfigError(f"tools_from: {path.name} is not valid YAML: {exc}") from exc
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"tools_from: {path.name}:{i} is not valid JSON: {exc.msg}") from exc
        return rows, "jsonl"
    try:
        return json.loads(text), "json"
    except json.JSONDecodeError as exc:
        raise ConfigError(f"tools_from: {path.name}:{exc.lineno} is not valid JSON: {exc.msg}") from exc


def _resolve(doc: Mapping[str, Any], node: Any, where: str, depth: int = 0) -> Any:
    """``node`` with every local ``$ref`` (``#/components/...``) replaced by its target."""
    if depth > _MAX_REF_DEPTH:
        raise ConfigError(f"tools_from: {where}: $ref nesting deeper than {_MAX_REF_DEPTH} (a cycle?)")
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#/"):
                raise ConfigError(f"tools_from: {where}: only local $ref ('#/...') is supported, got {ref!r}")
            target: Any = doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise ConfigError(f"tools_from: {where}: $ref {ref!r} points nowhere")
                target = target[part]
            return _resolve(doc, target, where, depth + 1)
        return {k: _resolve(doc, v, where, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(doc, v, where, depth + 1) for v in node]
    return node


def _clean_schema(schema: Any) -> dict[str, Any]:
    """An OpenAPI schema object as a JSON Schema for a tool parameter (OpenAPI-only keys dropped)."""
    if not isinstance(schema, Mapping):
        return {"type": "string"}
    drop = {"example", "examples", "xml", "externalDocs", "readOnly", "writeOnly", "deprecated", "nullable",
            "discriminator"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in drop or key.startswith("x-"):
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {k: _clean_schema(v) for k, v in value.items()}
        elif key == "items":
            out[key] = _clean_schema(value)
        else:
            out[key] = value
    if "type" not in out and not any(k in out for k in ("anyOf", "oneOf", "allOf", "enum")):
        out["type"] = "object" if "properties" in out else "string"
    return out


def openapi_tools(doc: Mapping[str, Any], source: str = "openapi") -> list[dict[str, Any]]:
    """One OpenAI tool per operation of an OpenAPI 3 document (see the module docstring)."""
    paths = doc.get("paths")
    if not isinstance(paths, Mapping) or not paths:
        raise ConfigError(f"tools_from: {source}: an OpenAPI document needs a non-empty 'paths' object")
    tools: list[dict[str, Any]] = []
    for path, item in paths.items():
        if not isinstance(item, Mapping):
            raise ConfigError(f"tools_from: {source}: paths[{path!r}] is not an object")
        shared = list(item.get("parameters") or [])
        for method in _METHODS:
            op = item.get(method)
            if not isinstance(op, Mapping):
                continue
            where = f"{source}: {method.upper()} {path}"
            op = _resolve(doc, op, where)
            props: dict[str, Any] = {}
            required: list[str] = []
            for param in [*_resolve(doc, shared, where), *(op.get("parameters") or [])]:
                if not isinstance(param, Mapping) or not isinstance(param.get("name"), str):
                    raise ConfigError(f"tools_from: {where}: a parameter without a name")
                if param.get("in") in ("header", "cookie"):
                    continue  # transport details (auth, tracing), not what an agent decides
                schema = _clean_schema(param.get("schema"))
                if param.get("description") and "description" not in schema:
                    schema["description"] = str(param["description"])
                props[param["name"]] = schema
                if param.get("required") or param.get("in") == "path":
                    required.append(param["name"])
            body = ((op.get("requestBody") or {}).get("content") or {}).get("application/json", {}).get("schema")
            if isinstance(body, Mapping):
                body = _clean_schema(body)
                if body.get("type") == "object" and isinstance(body.get("properties"), Mapping):
                    props.update(body["properties"])
                    required += [r for r in body.get("required", []) if r in body["properties"]]
                else:
                    props["body"] = body
                    if (op.get("requestBody") or {}).get("required"):
                        required.append("body")
            name = snake_case(str(op.get("operationId") or f"{method}_{path}"))
            description = str(op.get("summary") or op.get("description") or f"{method.upper()} {path}").strip()
            parameters: dict[str, Any] = {"type": "object", "properties": props}
            if required:
                parameters["required"] = sorted(set(required), key=required.index)
            tools.append({"type": "function", "function": {"name": name, "description": description,
                                                           "parameters": parameters}})
    if not tools:
        raise ConfigError(f"tools_from: {source}: the OpenAPI document has no operations ({', '.join(_METHODS)})")
    return tools


def _openai_entries(doc: Any, source: str) -> list[Any]:
    if isinstance(doc, Mapping):
        for key in ("tools", "functions"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
        if "name" in doc or "function" in doc:
            return [doc]
        raise ConfigError(f"tools_from: {source}: a JSON object must be an OpenAPI document (openapi: 3.x), hold "
                          "a 'tools' list, or be one tool")
    if isinstance(doc, list):
        return doc
    raise ConfigError(f"tools_from: {source}: expected a list of OpenAI tools, got {type(doc).__name__}")


def _drop_titles(schema: Any) -> Any:
    """A JSON schema without ``title`` keys (pydantic adds one to every property of an MCP tool)."""
    if isinstance(schema, Mapping):
        return {k: _drop_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_drop_titles(v) for v in schema]
    return schema


def mcp_tools(command: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The tools an MCP server lists, started as ``command`` over stdio, as OpenAI function dicts.

    :raises ConfigError: the ``mcp`` package is missing, the command is empty, or the server cannot be started
        or does not answer within ``timeout`` seconds (its error named).
    """
    import asyncio
    import shlex

    try:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client
    except ImportError as exc:
        raise ConfigError("tools_from: an MCP source needs the mcp client: pip install 'synthagent[mcp]'") from exc
    argv = shlex.split(command)
    if not argv:
        raise ConfigError("tools_from: 'mcp:' needs the command that starts the server, e.g. mcp:python server.py")

    async def listed() -> list[dict[str, Any]]:
        params = StdioServerParameters(command=argv[0], args=argv[1:])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.list_tools()
            return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]

    async def bounded() -> list[dict[str, Any]]:
        return await asyncio.wait_for(listed(), timeout)

    try:  # in a thread of its own: the caller may be inside a running event loop (synth eval builds there)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="mcp-tools") as pool:
            tools = pool.submit(lambda: asyncio.run(bounded())).result()
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - any failure of the server is named
        causes = getattr(exc, "exceptions", None)  # anyio task groups wrap the real error
        first = causes[0] if causes else exc
        raise ConfigError(f"tools_from: the MCP server {command!r} gave no tool list: "
                          f"{type(first).__name__}: {first}") from exc
    return [{"name": t["name"], "description": t.get("description") or t["name"].replace("_", " "),
             "parameters": _drop_titles(t.get("inputSchema") or {"type": "object", "properties": {}})}
            for t in tools]


def toolset_name(source: str | Path) -> str:
    """A name for the toolset of ``source``: the file's stem (``pizza.json`` -> ``pizza``), or for
    ``mcp:python servers/pizza.py`` the stem of the command's last argument."""
    text = str(source)
    if text.startswith("mcp:"):
        import shlex

        parts = shlex.split(text[4:]) or ["mcp"]
        text = parts[-1]
    return snake_case(Path(text).stem) or "tools"


def load_tools(source: str | Path) -> list[dict[str, Any]]:
    """The tools of ``source`` (a file: OpenAI schemas or an OpenAPI 3 document; or ``mcp:COMMAND``, an MCP
    server's tool list) as OpenAI tool dicts.

    :raises ConfigError: the file is missing or unreadable, or an entry is not a valid tool (its position
        and problem named); two tools with one name; an MCP server that does not answer.
    """
    if isinstance(source, str) and source.startswith("mcp:"):
        return _checked(mcp_tools(source[4:]), "mcp", "tool")
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"tools_from: {str(source)!r} is not a file (OpenAI tool schemas as JSON/JSONL, or an "
                          "OpenAPI 3 document as JSON/YAML)")
    doc, fmt = _read(path)
    if isinstance(doc, Mapping) and str(doc.get("openapi", "")).startswith("3"):
        entries: list[Any] = openapi_tools(doc, path.name)
    elif isinstance(doc, Mapping) and "swagger" in doc:
        raise ConfigError(f"tools_from: {path.name} is Swagger 2; convert it to OpenAPI 3 first")
    else:
        entries = _openai_entries(doc, path.name)
    return _checked(entries, path.name, "line" if fmt == "jsonl" else "tool")


def _checked(entries: list[Any], source: str, unit: str) -> list[dict[str, Any]]:
    """``entries`` (OpenAI tools or bare functions) validated and normalized; errors name ``source`` and the
    entry's position."""
    tools: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries, 1):
        where = f"{source}: {unit} {i}"
        fn = entry.get("function", entry) if isinstance(entry, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise ConfigError(f"tools_from: {where}: not an OpenAI function (needs a 'name')")
        name = snake_case(fn["name"])
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        problems = schema_problems(params)
        if problems:
            raise ConfigError(f"tools_from: {where} ({name}): {problems[0]}")
        if name in seen:
            raise ConfigError(f"tools_from: {where}: tool name {name!r} again (first at {seen[name]})")
        seen[name] = where
        tool: dict[str, Any] = {"type": "function", "function": {
            "name": name, "description": str(fn.get("description") or name.replace("_", " ")).strip(),
            "parameters": dict(params)}}
        if isinstance(entry, Mapping):
            tool.update({k: v for k, v in entry.items() if k in ("area", "x-effect")})
        tools.append(tool)
    if not tools:
        raise ConfigError(f"tools_from: {source} holds no tools")
    return tools
