"""The tool-call parser: native and text-embedded calls, malformed input, and 10k fuzzed inputs."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthagent.core.models import Message
from synthagent.core.toolcalls import parse_assistant, parse_native_calls, parse_text_calls


def test_native_calls_with_string_or_object_arguments() -> None:
    msg = parse_assistant(None, [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"y": "z"}}},
        {"type": "function", "function": {"name": "h", "arguments": ""}},
    ])
    assert [(c.id, c.name, c.arguments, c.error) for c in msg.tool_calls] == [
        ("a", "f", {"x": 1}, None), ("b", "g", {"y": "z"}, None), ("call_2", "h", {}, None)]


def test_malformed_native_calls_become_error_calls() -> None:
    calls = parse_native_calls([
        {"id": "a", "function": {"name": "f", "arguments": "{oops"}},
        {"id": "b", "function": {"name": "f", "arguments": "[1, 2]"}},
        {"id": "c", "function": {"arguments": "{}"}},
        "garbage",
    ])
    assert [c.error is not None for c in calls] == [True, True, True, True]
    assert "not valid JSON" in calls[0].error and "must be a JSON object" in calls[1].error
    assert "no 'name'" in calls[2].error


def test_text_embedded_calls() -> None:
    text = 'Let me check.\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O1"}}\n</tool_call>'
    rest, calls = parse_text_calls(text)
    assert rest == "Let me check." and calls[0].name == "get_order" and calls[0].arguments == {"order_id": "O1"}
    rest, calls = parse_text_calls('<tool_call>{"name": "a", "parameters": {"k": 1}}</tool_call><tool_call>{"name": "b"}')
    assert rest is None and [(c.name, c.arguments) for c in calls] == [("a", {"k": 1}), ("b", {})]
    rest, calls = parse_text_calls("<tool_call>{not json}</tool_call>")
    assert calls[0].error and "not valid JSON" in calls[0].error


def test_bare_json_calls_and_plain_text() -> None:
    assert parse_text_calls('{"name": "f", "arguments": {"a": 1}}')[1][0].arguments == {"a": 1}
    assert [c.name for c in parse_text_calls('```json\n[{"name": "f"}, {"name": "g"}]\n```')[1]] == ["f", "g"]
    assert parse_text_calls('{"answer": 42}') == ('{"answer": 42}', ())
    assert parse_text_calls("Your balance is 5.") == ("Your balance is 5.", ())
    assert parse_assistant("hello") == Message("assistant", "hello")


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10)
json_any = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)
fragments = st.sampled_from(["<tool_call>", "</tool_call>", "{", "}", "[", "]", '"name"', '"arguments"', ":", ",",
                             '"f"', "```json", "```", "\n", "null", '"parameters"', "{\"name\": \"x\"}"])
texts = st.one_of(
    st.text(max_size=200),
    st.lists(fragments | st.text(max_size=8), max_size=30).map("".join),
    json_any.map(lambda v: json.dumps(v) if not isinstance(v, float) else str(v)),
    json_any.map(lambda v: "<tool_call>" + json.dumps({"name": "t", "arguments": v}, default=str)),
)
natives = st.one_of(st.none(), st.lists(st.one_of(json_any, st.fixed_dictionaries(
    {"id": json_leaf, "function": st.fixed_dictionaries({"name": json_leaf, "arguments": json_any | st.text(max_size=30)})})),
    max_size=4))


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=st.one_of(st.none(), texts, json_any), native=natives)
def test_parser_never_raises(content, native) -> None:
    msg = parse_assistant(content, native)
    assert msg.role == "assistant"
    for call in msg.tool_calls:
        assert isinstance(call.arguments, dict) and isinstance(call.name, str)
        assert call.error is not None or call.name
