"""User fidelity (``synth eval-user``): the rule user is the near-perfect baseline; a deliberately leaky model user
behind a real loopback OpenAI-compatible server is caught on every failure it commits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.simulators.users.fidelity import wilson


def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    return subprocess.run([sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _leaky(body: dict[str, Any]) -> str:
    """A bad user: blurts out every hidden value at once, invents a pet, speaks as the agent, never stops."""
    system = body["messages"][0]["content"]
    facts = re.findall(r"^- [^:\n]+: (.+)$", system.split("Details only you know", 1)[1], re.M)
    last = body["messages"][-1]["content"]
    if "pet" in last:
        return "My first pet was a dog called Biscuit."
    if "All done" in last:
        return "How can I help you today?"
    return "Here is everything: " + ", ".join(facts) + "."


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = wilson(5, 20)
    assert lo < 0.25 < hi and round(lo, 3) == 0.112 and round(hi, 3) == 0.469
    assert wilson(0, 20)[0] == 0.0 and wilson(0, 0) == (0.0, 1.0)


def test_rule_user_is_near_perfect_and_leaky_llm_user_is_caught(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(_leaky) as server:
        result = _synth("eval-user", "--user", "rule", "--user", "llm", "--tasks", "12", "--backend", "openai",
                        "--backend-set", f"base_url={server.base_url}", "--backend-set", "model=scripted",
                        "--backend-set", "api_key_env=NO_SUCH_KEY", "--out", str(tmp_path / "fidelity.json"),
                        "--json", "--user-set", "leak_guard=false")  # the raw model: the guard would repair leaks
    assert result.returncode == 0, result.stderr[-2000:]
    rates = json.loads(result.stdout)
    report = json.loads((tmp_path / "fidelity.json").read_text())
    rule, llm = rates["rule"], rates["llm"]
    for metric, r in rule.items():
        assert r["k"] == 0 and r["n"] > 0, (metric, r)  # the baseline commits none of the failures
    assert llm["unasked_reveal"]["rate"] > 0.3  # every other hidden value leaked with the first answer
    assert llm["unasked_reveal"]["ci95"][0] > 0.0  # the interval excludes the rule user's zero
    assert llm["invented_answer"]["rate"] == 1.0 and llm["invented_answer"]["ci95"][0] > 0.7
    assert llm["missing_stop"]["rate"] == 1.0
    assert llm["out_of_role"]["k"] == 12  # "How can I help you today?" once per dialogue
    assert llm["wrong_value"]["rate"] == 0.0  # the asked value is in the leak too
    assert report["users"]["llm"]["tasks"] == 12


def test_llm_user_without_a_backend_is_a_one_line_error() -> None:
    result = _synth("eval-user", "--user", "llm", "--tasks", "2")
    assert result.returncode == 2 and "--backend" in result.stderr and "Traceback" not in result.stderr
