"""The standard exports: OpenAI fine-tuning rows (checked field by field against OpenAI's documented chat
fine-tuning format), contiguous call ids, DPO preference pairs and the dataset card."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.config import load_config
from synthagent.core.pipeline import Pipeline
from synthagent.core.registry import load_plugins
from synthagent.core.stages.export import EXPORT_FILES, renumber_calls

NO_AUTOLOAD = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}
#: Three samples a task, half of the oracle's rollouts with a mistake: tasks get different scores.
VARIED = ["tasks=12", "simulate.samples=3", "plugins.oracle.mistakes=0.5", "plugins.oracle.vary=true"]


def _run(root: Path, overrides: list[str]) -> dict[str, Any]:
    pipeline = Pipeline(load_config(None, overrides), load_plugins(environ=NO_AUTOLOAD))
    pipeline.open_store(root, resume=False)
    return asyncio.run(pipeline.run())


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("exports") / "varied"
    return root, _run(root, VARIED)


@pytest.fixture(scope="module")
def default_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The default configuration (simulate.samples=1), fewer tasks."""
    root = tmp_path_factory.mktemp("exports") / "default"
    return root, _run(root, ["tasks=8"])


def check_openai_row(row: Any, where: str) -> None:
    """OpenAI's chat fine-tuning format with tools: every field's type, written out."""
    assert isinstance(row, dict) and set(row) == {"messages", "tools"}, where
    assert isinstance(row["tools"], list) and row["tools"], where
    for tool in row["tools"]:
        assert isinstance(tool, dict) and set(tool) == {"type", "function"} and tool["type"] == "function", where
        fn = tool["function"]
        assert isinstance(fn, dict) and set(fn) == {"name", "description", "parameters"}, where
        assert isinstance(fn["name"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", fn["name"]), where
        assert isinstance(fn["description"], str), where
        assert isinstance(fn["parameters"], dict) and fn["parameters"].get("type") == "object", where
    names = {t["function"]["name"] for t in row["tools"]}
    messages = row["messages"]
    assert isinstance(messages, list) and messages, where
    called: list[str] = []
    answered: set[str] = set()
    for i, m in enumerate(messages):
        at = f"{where} message {i}"
        assert isinstance(m, dict) and isinstance(m.get("role"), str), at
        role = m["role"]
        assert role in ("system", "user", "assistant", "tool"), at
        if role in ("system", "user"):
            assert set(m) == {"role", "content"} and isinstance(m["content"], str), at
        elif role == "assistant":
            assert set(m) <= {"role", "content", "tool_calls"}, at
            if "tool_calls" in m:
                assert "content" not in m or isinstance(m["content"], str), at
                assert isinstance(m["tool_calls"], list) and m["tool_calls"], at
                for call in m["tool_calls"]:
                    assert isinstance(call, dict) and set(call) == {"id", "type", "function"}, at
                    assert isinstance(call["id"], str) and call["id"] and call["type"] == "function", at
                    fn = call["function"]
                    assert isinstance(fn, dict) and set(fn) == {"name", "arguments"}, at
                    assert isinstance(fn["name"], str) and fn["name"] in names, at
                    assert isinstance(fn["arguments"], str), at
                    assert isinstance(json.loads(fn["arguments"]), dict), at
                    called.append(call["id"])
            else:
                assert isinstance(m.get("content"), str), at
        else:  # tool
            assert set(m) == {"role", "tool_call_id", "content"}, at
            assert isinstance(m["content"], str) and isinstance(m["tool_call_id"], str), at
            assert m["tool_call_id"] in called, f"{at}: tool_call_id names no preceding call"
            assert m["tool_call_id"] not in answered, f"{at}: a call answered twice"
            answered.add(m["tool_call_id"])
    assert messages[0]["role"] == "system" and any(m["role"] == "assistant" for m in messages), where


def call_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for m in messages for c in m.get("tool_calls") or []]


def contiguous(ids: list[str]) -> bool:
    return ids == [f"call_{n}" for n in range(1, len(ids) + 1)]


def test_openai_export_follows_the_documented_fine_tuning_format(varied) -> None:
    root, summary = varied
    rows = _rows(root / "exports/openai.jsonl")
    sft = _rows(root / "exports/sft.jsonl")
    assert rows and len(rows) == len(sft) == summary["exports"]["openai"]
    for n, (row, plain) in enumerate(zip(rows, sft)):
        check_openai_row(row, f"openai.jsonl row {n}")
        # the same conversation as the SFT row, arguments encoded as JSON strings
        assert [m["role"] for m in row["messages"]] == [m["role"] for m in plain["messages"]]
        assert [json.loads(c["function"]["arguments"]) for m in row["messages"] for c in m.get("tool_calls", [])] \
            == [c["function"]["arguments"] for m in plain["messages"] for c in m.get("tool_calls") or []]
    # sft.jsonl stays in the chat-template form: arguments are objects, content null beside tool calls
    calls = [m for r in sft for m in r["messages"] if m.get("tool_calls")]
    assert calls and all(isinstance(c["function"]["arguments"], dict) for m in calls for c in m["tool_calls"])
    assert all(m["content"] is None for m in calls)


def test_call_ids_are_contiguous_in_the_exports_though_not_in_the_records(varied) -> None:
    root, _ = varied
    stored = _rows(root / "trajectories.jsonl")
    # why ids skipped: the oracle names a call after its assistant turn, and turns that ask the user count
    assert any(not contiguous(call_ids(t["messages"])) for t in stored)
    for name, key in (("sft.jsonl", "messages"), ("openai.jsonl", "messages")):
        for row in _rows(root / "exports" / name):
            assert contiguous(call_ids(row[key])), (name, call_ids(row[key]))
            tool_ids = [m["tool_call_id"] for m in row[key] if m["role"] == "tool"]
            assert tool_ids == call_ids(row[key])  # each call answered once, in order
    for row in _rows(root / "exports/dpo.jsonl"):
        for side in ("chosen", "rejected"):
            assert contiguous(call_ids(row["prompt"] + row[side]))
    assert stored == _rows(root / "trajectories.jsonl")  # the records keep the policy's own ids


def test_renumbering_keeps_every_answer_with_its_call() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "a", "arguments": {}}},
            {"id": "call_3", "type": "function", "function": {"name": "b", "arguments": {"x": 1}}}]},
        {"role": "tool", "tool_call_id": "call_3", "content": "A"},
        {"role": "tool", "tool_call_id": "call_3", "content": "B"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "xyz", "type": "function", "function": {"name": "c", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "xyz", "content": "C"},
    ]
    out = renumber_calls(messages)
    assert call_ids(out) == ["call_1", "call_2", "call_3"]
    assert [m["tool_call_id"] for m in out if m["role"] == "tool"] == ["call_1", "call_2", "call_3"]
    assert messages[1]["tool_calls"][0]["id"] == "call_3"  # the input is left alone


def test_dpo_pairs_prefer_the_higher_score_after_a_shared_prompt(varied) -> None:
    root, summary = varied
    rows = _rows(root / "exports/dpo.jsonl")
    assert rows and summary["exports"]["dpo"] == len(rows)
    trajectories = {t["id"]: t for t in _rows(root / "trajectories.jsonl")}
    scores = {s["trajectory_id"]: s for s in _rows(root / "scores.jsonl")}
    for row in rows:
        assert {"prompt", "chosen", "rejected", "tools", "task_id", "chosen_score", "rejected_score"} <= set(row)
        assert row["chosen_score"] > row["rejected_score"]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"
        for side in ("chosen", "rejected"):
            t = trajectories[row[f"{side}_trajectory_id"]]
            s = scores[t["id"]]
            assert t["task_id"] == row["task_id"] and s["status"] == "ok" and s["total"] == row[f"{side}_score"]
            # the prompt is the shared prefix of both conversations; prompt + side is the whole conversation
            assert len(row["prompt"]) + len(row[side]) == len(t["messages"])
            assert [m["content"] for m in row["prompt"] + row[side]] == [m["content"] for m in t["messages"]]
        best = max(scores[t]["total"] for t in trajectories if trajectories[t]["task_id"] == row["task_id"]
                   and scores[t]["status"] == "ok")
        assert row["chosen_score"] == best
    paired = {r["task_id"] for r in rows}
    unpaired = summary["dpo_unpaired"]
    assert len(paired) + sum(unpaired.values()) == summary["tasks"]
    assert set(unpaired) <= {"task_dropped", "fewer_than_two_scored", "scores_tied"}


def test_dpo_rows_go_through_trls_preprocessing_checks(varied) -> None:
    trl_utils = pytest.importorskip("trl.data_utils")
    for row in _rows(varied[0] / "exports/dpo.jsonl"):
        assert trl_utils.is_conversational(row)


def test_the_default_one_sample_run_says_why_dpo_is_empty(default_like) -> None:
    root, summary = default_like
    assert (root / "exports/dpo.jsonl").read_text() == ""
    assert summary["exports"]["dpo"] == 0 and summary["dpo_unpaired"] == {"fewer_than_two_scored": 8}
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stages"]["export"]["dpo_unpaired"] == {"fewer_than_two_scored": 8}
    card = (root / "exports/README.md").read_text()
    assert "`fewer_than_two_scored`: 8" in card
    assert "config_name: dpo" not in card  # an empty file is not offered as a config


def test_the_dataset_card_describes_the_files_and_loads_with_datasets(varied, tmp_path: Path) -> None:
    root, summary = varied
    card = (root / "exports/README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "license: apache-2.0" in front and "configs:" in front
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["fingerprint"] in body and "seed: 0" in body
    assert "synth run --set tasks=12 --set simulate.samples=3" in body
    for domain in summary["domains"]:
        assert f"| {domain} |" in body
    for name in ("sft.jsonl", "openai.jsonl", "dpo.jsonl", "rl.jsonl"):
        n = len(_rows(root / "exports" / name))
        assert f"`{name}` | {n} |" in body and f"path: {name}" in front
    assert {"openai.jsonl", "dpo.jsonl", "README.md"} <= set(EXPORT_FILES)
    datasets = pytest.importorskip("datasets")
    for config, name in (("sft", "sft.jsonl"), ("openai", "openai.jsonl"), ("dpo", "dpo.jsonl")):
        loaded = datasets.load_dataset(str(root / "exports"), config, split="train", cache_dir=str(tmp_path))
        assert len(loaded) == len(_rows(root / "exports" / name))
