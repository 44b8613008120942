"""Self-evolving generation (``synth evolve``) with a scripted teacher behind a real loopback OpenAI-compatible
server, whose failure rate depends on what the prompt instructs: it writes CamelCase tool names (rejected by the
toolset check) most of the time unless the toolset prompt carries the learned rule about them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.generators.persona_fuzzy.evolve import evolve, one_sided_p
from synthagent.plugins.generators.persona_fuzzy.promptstore import (
    PromptStore,
    base_prompts,
    load_version,
    version_hash,
)

_TOOL = {"type": "object", "properties": {"order_id": {"type": "string", "description": "the order"}},
         "required": ["order_id"]}


def _teacher(body: dict[str, Any]) -> str:
    first = body["messages"][0]["content"]
    if "tool ecosystem" in first:  # toolset
        draw = int(hashlib.sha256((first + str(len(body["messages"])) + str(body.get("seed"))).encode())
                   .hexdigest()[:8], 16) / 2**32
        bad = "must be snake_case" not in first and draw < 0.8
        names = ["FindOrder", "CancelOrder", "RefundOrder"] if bad else ["find_order", "cancel_order", "refund_order"]
        return json.dumps({"domain": "shop orders", "tools": [
            {"name": n, "description": f"{n} a shop order.", "parameters": _TOOL,
             "returns": {"type": "object", "description": "the order"}} for n in names]})
    if "hidden fact" in first:  # fuzzy
        return json.dumps({"instruction": "Please cancel my order, it came late.", "hidden_facts": [
            {"name": "order_id", "value": "A-17", "description": "the order number", "keywords": ["order number"]}]})
    return json.dumps({"full_instruction": "Cancel my order A-17, it arrived late.", "workflow": [
        {"description": "find it", "tool": "find_order", "arguments": {"order_id": "A-17"},
         "response": {"status": "delivered", "days_late": 3}},
        {"description": "cancel it", "tool": "cancel_order", "arguments": {"order_id": "A-17"},
         "response": {"cancelled": True}}],
        "answer": ["A-17"]})


def _backend(url: str) -> Any:
    from synthagent.core.registry import load_plugins

    return load_plugins().registry("llm").get("openai").create({"base_url": url, "model": "scripted",
                                                                "api_key_env": "NO_SUCH_KEY"})


def _useless(prompts: Mapping[str, str], problems: Counter[tuple[str, str]]) -> dict[str, Any]:
    out = dict(prompts)
    out["task"] = out["task"] + "\nBe polite.\n"
    return {"prompts": out, "changes": [{"prompt": "task", "added": "Be polite."}]}


def test_useful_revision_accepted_useless_rejected_and_versions_stored(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(_teacher) as server:
        llm = _backend(server.base_url)
        store = PromptStore(tmp_path / "useless" / "prompts")
        useless = asyncio.run(evolve(llm, store, rounds=1, batch=12, validation=30, seed=3, proposer=_useless))
        good_store = PromptStore(tmp_path / "good" / "prompts")
        good = asyncio.run(evolve(llm, good_store, rounds=2, batch=12, validation=30, seed=3))
    (u,) = useless["rounds"]
    assert u["decision"] == "rejected" and not u["accepted"]
    assert u["validation"]["p_yield_better"] > 0.05
    assert useless["head"] == version_hash(base_prompts())  # nothing changed
    r1 = good["rounds"][0]
    assert r1["failures"][0]["prompt"] == "toolset" and "snake_case" in r1["failures"][0]["problem"]
    assert r1["decision"] == "accepted", r1
    v = r1["validation"]
    assert v["candidate"]["yield"] == 1.0 and v["parent"]["yield"] < 0.7 and v["p_yield_better"] < 0.05
    assert any(c["prompt"] == "toolset" and "snake_case" in c["added"] for c in r1["changes"])
    # round 2: nothing left to fix -> no revision
    assert good["rounds"][1]["decision"] == "no revision proposed"
    head = good_store.get(good["head"])
    assert head["parent"] == version_hash(base_prompts()) and head["measurements"]["p_yield_better"] < 0.05
    assert version_hash(head["prompts"]) == head["hash"]
    assert good_store.head() == good["head"]
    diff = good_store.diff(head["parent"], head["hash"])
    assert diff.count("\n+") >= 2 and "toolset.md" in diff and "snake_case" in diff
    assert load_version(str(good_store.root))["hash"] == good["head"]  # the store dir pins its HEAD
    # a rejected candidate is stored too, with the measurements that rejected it
    rejected = [v for v in store.versions() if v.get("accepted") is False]
    assert len(rejected) == 1 and rejected[0]["measurements"]["candidate"]["slots"] == 30


def test_two_proportion_test() -> None:
    assert one_sided_p(10, 30, 30, 30) < 1e-6
    assert one_sided_p(20, 30, 20, 30) == pytest.approx(0.5)
    assert one_sided_p(30, 30, 10, 30) > 0.99


def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    return subprocess.run([sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_evolves_and_a_run_pins_the_version_in_its_manifest(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(_teacher) as server:
        backend = ["--backend-set", f"base_url={server.base_url}", "--backend-set", "model=scripted",
                   "--backend-set", "api_key_env=NO_SUCH_KEY"]
        result = _synth("evolve", "run", "--out", str(tmp_path / "evo"), "--rounds", "1", "--batch", "10",
                        "--validation", "24", "--holdout", "20", *backend)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "round 1: accepted" in result.stdout
        report = json.loads((tmp_path / "evo" / "evolve.json").read_text())
        assert report["holdout"]["final"]["yield"] > report["holdout"]["start"]["yield"]
        run = _synth("run", "-q", "--out", str(tmp_path / "runs"), "--name", "pinned", "--tasks", "2",
                     "--set", "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
                     "--set", "llm.backend=openai", "--set", "llm.model=scripted",
                     "--set", f"llm.base_url={server.base_url}", "--set", "llm.api_key_env=NO_SUCH_KEY",
                     "--set", f"plugins.persona-fuzzy.prompt_version={tmp_path / 'evo' / 'prompts'}")
    manifest = json.loads((tmp_path / "runs" / "pinned" / "manifest.json").read_text())
    assert manifest["prompt_hashes"]["persona_fuzzy/version"] == report["head"]
    log = _synth("evolve", "log", str(tmp_path / "evo" / "prompts"))
    assert log.returncode == 0 and f"* {report['head']}" in log.stdout
    bad = _synth("run", "-q", "--out", str(tmp_path / "runs"), "--name", "bad", "--tasks", "1", "--set",
                 "generator=persona-fuzzy", "--set", "tools=llm", "--set", "user=llm",
                 "--set", "plugins.persona-fuzzy.prompt_version=deadbeef")
    assert bad.returncode == 2 and "deadbeef" in bad.stderr and "Traceback" not in bad.stderr
    assert run.returncode in (0, 3), run.stderr[-2000:]  # 3: the 2 tasks kept nothing (issue 24: said, not exit 0)
