"""``synth train --algorithm user-sft`` on a tiny from-config model on CPU (real SFTTrainer, no mocks), and the
trained model serving as the ``llm`` user through the in-process ``transformers`` backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

RUN = ["--tasks", "8", "--set", 'plugins.offline-domains.domains=["banking", "library"]',
       "--set", "plugins.offline-domains.max_tools=2", "--set", "plugins.offline-domains.max_hidden=1"]


def _synth(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    return subprocess.run([sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from synthagent.plugins.backends.hf_testing import build_tiny_model
    from synthagent.plugins.training.trl.user_sft import user_rows, verified_dialogues

    work = tmp_path_factory.mktemp("user-sft")
    result = _synth("run", "-q", "--out", str(work / "runs"), "--name", "small", *RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    run = work / "runs" / "small"
    corpus = [m["content"] for r in user_rows(verified_dialogues(run)) for m in r["messages"]]
    model = build_tiny_model(str(work / "tiny"), corpus, vocab_size=1200)
    result = _synth("train", "--algorithm", "user-sft", "--model", model, "--run", str(run), "--out",
                    str(work / "user-sft"), "--set", "max_steps=30", "--set", "learning_rate=5e-3", "--set",
                    "per_device_train_batch_size=2", "--set", "seed=0", "--set", "lr_scheduler_type=constant",
                    "--set", "plot=false")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"work": work, "run": run, "out": work / "user-sft"}


def test_rows_are_the_llm_users_view_with_the_stop_marker(trained: dict[str, Any]) -> None:
    from synthagent.plugins.simulators.users.llm import STOP

    rows = [json.loads(line) for line in (trained["out"] / "user_sft.jsonl").read_text().splitlines()]
    tasks = [json.loads(line) for line in (trained["run"] / "tasks.jsonl").read_text().splitlines()]
    assert len(rows) == 8  # every oracle dialogue of the offline run is verified (success)
    for row in rows:
        msgs = row["messages"]
        assert msgs[0]["role"] == "system" and "Details only you know" in msgs[0]["content"]
        assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"].endswith(STOP)  # the user ended it
        assert all(STOP not in m["content"] for m in msgs[1:-1])  # the system prompt names it
        assert {m["role"] for m in msgs[1:]} <= {"user", "assistant"}  # no tool turns: the user never sees them
    hidden = [f["value"] for t in tasks for f in t["user_context"]]
    assert any(v in rows[i]["messages"][0]["content"] for i in range(len(rows)) for v in hidden)


def test_user_sft_loss_falls_and_the_model_loads(trained: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    summary = json.loads((trained["out"] / "train_summary.json").read_text())
    assert summary["algorithm"] == "user-sft" and summary["dialogues"] == 8
    losses = [r["loss"] for r in map(json.loads, (trained["out"] / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    model = AutoModelForCausalLM.from_pretrained(str(trained["out"] / "model"))
    assert model.num_parameters() > 0


def test_trained_user_model_serves_as_the_llm_user(trained: dict[str, Any]) -> None:
    model = str(trained["out"] / "model")
    result = _synth("run", "-q", "--out", str(trained["work"] / "runs"), "--name", "served", *RUN[:2], *RUN[2:],
                    "--set", "user=llm", "--set", "plugins.llm.user.backend=transformers",
                    "--set", f'plugins.llm.user.backend_options={{model = "{model}", max_tokens = 24}}',
                    "--set", "simulate.max_turns=6")
    assert result.returncode == 0, result.stderr[-3000:]
    run = trained["work"] / "runs" / "served"
    manifest = json.loads((run / "manifest.json").read_text())
    assert "llm_user/user_sim.md" in manifest["prompt_hashes"]
    trajs = [json.loads(line) for line in (run / "trajectories.jsonl").read_text().splitlines()]
    # the model wrote the user's turns after the first (the instruction): at least one per dialogue
    assert all(sum(m["role"] == "user" for m in t["messages"]) >= 2 for t in trajs)


def test_unknown_user_backend_is_a_clear_error(tmp_path: Path) -> None:
    result = _synth("run", "-q", "--out", str(tmp_path), "--name", "bad", "--tasks", "1", "--set", "user=llm",
                    "--set", "plugins.llm.user.backend=no-such-backend")
    assert result.returncode == 2, result.stderr
    assert "no-such-backend" in result.stderr and "Traceback" not in result.stderr
