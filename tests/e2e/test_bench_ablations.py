"""benchmarks/bench_ablations.py with a second server in the simulation roles (``--sim-url``): the tasks come
from the scripted teacher, the roles' requests reach the other server, over loopback HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from synthagent.core.testing import ScriptedOpenAIServer
from synthagent.plugins.backends.scripted_teacher import ScriptedTeacher

REPO = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"\[synthagent:prompt=([a-z_]+)\]")


def test_sim_url_plays_the_chosen_roles(tmp_path: Path) -> None:
    teacher = ScriptedTeacher()
    kinds: Counter[str] = Counter()

    def reply(body: dict[str, Any]) -> Any:
        first = str(body["messages"][0].get("content") or "")
        m = _MARKER.search(first)
        kinds[m.group(1) if m else ("agent" if body.get("tools") else "unknown")] += 1
        return teacher(body)

    with ScriptedOpenAIServer(reply) as sim:
        result = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "bench_ablations.py"), "--tasks", "1", "--samples", "2",
             "--teacher", "synthagent.plugins.backends.scripted_teacher:ScriptedTeacher", "--sim-url", sim.base_url,
             "--sim-model", "small", "--sim-option", "structured_outputs=none", "--out", str(tmp_path / "runs"),
             "--json", str(tmp_path / "report.json")],
            capture_output=True, text=True, timeout=600, env={"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1",
                                                              "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"store", "no_store", "store_unseeded", "fuzzy", "no_fuzzy"}
    assert arms["store"]["roles"] == ["tools"] and arms["fuzzy"]["roles"] == ["agent", "user", "tools"]
    assert all(a["rollouts"] == 2 for a in arms.values())
    # the forgetful store sends every tool call to the tool simulator's own server; the fuzzy arms send the
    # agent (rollouts and demonstrations) and the user there; no synthesis prompt ever reaches it
    assert kinds["tool_sim"] >= 2 and kinds["agent"] >= 4 and kinds["user_sim"] >= 1, kinds
    assert not {"toolset", "task", "fuzzy"} & set(kinds), kinds
    assert all(b["model"] == "small" and "response_format" not in b for b in sim.requests)
    # forwarded agent turns that only called tools carry "" (llama-cpp-python's server refuses null content)
    turns = [m for b in sim.requests if b.get("tools") for m in b["messages"] if m["role"] == "assistant"]
    assert turns and all(m["content"] is not None for m in turns)
