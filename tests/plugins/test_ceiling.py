"""The ceiling of a learning evaluation: the oracle replayed through the identical token harness and limits.

A real offline run (SQLite tools, rule-based user) and a tiny tokenizer trained on its exports; no model
forward is needed, since the replay feeds the oracle's own turns through ``run_batch`` and ``TokenPolicy``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = ["--tasks", "6", "--set", 'plugins.offline-domains.domains=["banking", "library"]',
       "--set", "plugins.offline-domains.max_tools=2", "--set", "plugins.offline-domains.max_hidden=1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ceiling")


@pytest.fixture(scope="module")
def run_dir(work: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(work / "runs"),
                             "--name", "small", *RUN], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return work / "runs" / "small"


@pytest.fixture(scope="module")
def tokenizer(work: Path, run_dir: Path) -> Any:
    from transformers import AutoTokenizer

    from synthagent.plugins.backends.hf_testing import build_tiny_model
    from synthagent.plugins.training.trl.common import resolve_chat_template

    corpus = (run_dir / "exports/sft.jsonl").read_text().splitlines()
    tok = AutoTokenizer.from_pretrained(build_tiny_model(str(work / "tiny"), corpus, vocab_size=1200))
    resolve_chat_template(tok, "auto", need_generation=True)
    return tok


@pytest.fixture(scope="module")
def env(run_dir: Path) -> Any:
    from synthagent.plugins.training.trl.environment import RunEnvironment

    return RunEnvironment(run_dir)


def test_derived_limits_let_the_oracle_solve_every_task_and_tight_ones_cut_it(env: Any, tokenizer: Any) -> None:
    from synthagent.plugins.training.trl.ceiling import EpisodeLimits, derive_limits, oracle_ceiling, replay_oracle

    ids = sorted(env.tasks)
    free = replay_oracle(env, tokenizer, ids, EpisodeLimits(1 << 20, 1000, 1 << 20))
    assert all(r["success"] for r in free.values()), free  # the replay itself is faithful
    limits = derive_limits(env, tokenizer, ids)
    need_policy = max(r["policy_tokens"] for r in free.values())
    need_total = max(r["policy_tokens"] + r["env_tokens"] for r in free.values())
    assert limits.policy_budget >= need_policy and limits.budget >= need_total  # p99 + margin covers every episode
    assert limits.max_turns >= max(r["turns"] for r in free.values()) + 2
    assert limits.max_turn_tokens >= max(r["max_turn_tokens"] for r in free.values())
    assert "derived" in limits.source
    ok = oracle_ceiling(env, tokenizer, ids, limits)
    assert (ok["k"], ok["n"], ok["cut"]) == (len(ids), len(ids), 0)
    # each limit alone, set just below what the oracle needs, cuts episodes and lowers the ceiling
    for tight in (EpisodeLimits(need_total // 2, limits.max_turns, limits.max_turn_tokens),
                  EpisodeLimits(limits.budget, limits.max_turns, limits.max_turn_tokens, policy_budget=need_policy // 2),
                  EpisodeLimits(limits.budget, 2, limits.max_turn_tokens),
                  EpisodeLimits(limits.budget, limits.max_turns, 4)):
        low = oracle_ceiling(env, tokenizer, ids, tight)
        assert low["k"] < len(ids) and low["cut"] >= 1, (tight, low)


def test_require_ceiling_refuses_a_low_ceiling_and_says_which_limits(env: Any, tokenizer: Any) -> None:
    from synthagent.plugins.training.trl.ceiling import CeilingError, EpisodeLimits, oracle_ceiling, require_ceiling

    ids = sorted(env.tasks)
    low = oracle_ceiling(env, tokenizer, ids, EpisodeLimits(64, 3, 16))
    with pytest.raises(CeilingError, match=r"budget 64.*max_turns 3.*below 0.95"):
        require_ceiling(low, what="test")
    require_ceiling(low, 0.0)  # a minimum of 0 reports without refusing


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_learning_c", REPO / "benchmarks" / "bench_learning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(**kw: int) -> argparse.Namespace:
    base = {"budget": 0, "policy_budget": 0, "max_turns": 0, "max_turn_tokens": 0, "bfcl_max_turns": 0}
    return argparse.Namespace(**{**base, **kw})


def test_the_learning_bench_refuses_to_report_under_a_too_small_budget(env: Any, tokenizer: Any, work: Path) -> None:
    from synthagent.plugins.training.trl.ceiling import CeilingError

    bench = _bench()
    envs = {"heldout": (env, sorted(env.tasks), "state")}
    small = bench.episode_limits(_args(budget=96, max_turns=6, max_turn_tokens=96), work / "small", envs, tokenizer)
    assert small["state"].budget == 96 and small["state"].policy_budget == 0  # given flags win
    with pytest.raises(CeilingError, match="learning benchmark's heldout environment"):
        bench.ceiling_gate(work / "small", envs, small, tokenizer, 0.95)
    assert (work / "small" / "ceiling" / "heldout.json").exists()  # the measured ceiling is kept for the record
    auto = bench.episode_limits(_args(), work / "auto", envs, tokenizer)
    assert auto["state"].budget > 96 and auto["state"].policy_budget > 0  # from the data
    ceilings = bench.ceiling_gate(work / "auto", envs, auto, tokenizer, 0.95)
    assert ceilings["heldout"]["rate"] == 1.0
    assert bench.episode_limits(_args(budget=5), work / "auto", envs, tokenizer) == auto  # resumed: limits.json kept


def test_the_bench_script_exits_3_and_reports_nothing_when_the_ceiling_is_low(work: Path) -> None:
    out = work / "script"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_learning.py"), "--out", str(out),
                             "--model", str(work / "tiny"), "--train-tasks", "4", "--eval-tasks", "2", "--bfcl-tasks",
                             "0", "--max-tools", "2", "--budget", "64", "--max-turns", "3", "--prepare-only"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "refusing to report" in result.stderr and "ceiling" in result.stderr
    assert not (out / "evals").exists()  # no policy was scored


# -- process metrics ------------------------------------------------------------------------------------------
def test_on_policy_process_metrics_credit_the_oracle_and_catch_a_write_before_asking(env: Any) -> None:
    import attrs

    from synthagent.core.evaluation import independent_success
    from synthagent.core.models import Message, ToolCall
    from synthagent.plugins.training.trl.ceiling import oracle_trajectories
    from synthagent.plugins.training.trl.process import episode_process, rates

    gold = oracle_trajectories(env, sorted(env.tasks))
    records = []
    for tid, traj in gold.items():
        task = env.tasks[tid]
        ok, _, _, answer_ok = independent_success(task, traj)
        records.append(episode_process(task, traj, ok, answer_ok))
    pooled = rates(records)
    for name in ("valid_calls", "gold_tools_called", "exact_args", "answer_values", "success"):
        assert pooled[name]["rate"] == 1.0 and pooled[name]["n"] > 0, (name, pooled[name])
    assert pooled["asked_before_first_write"]["n"] == sum(bool(env.tasks[t].user_context) for t in gold)
    # a policy that writes with invented arguments before asking anything
    tid, traj = next((t, tr) for t, tr in gold.items() if env.tasks[t].user_context
                     and any(s.writes for s in env.tasks[t].workflow))
    task = env.tasks[tid]
    write = next(s for s in task.workflow if s.writes)
    bad = attrs.evolve(traj, messages=(*traj.messages[:2], Message("assistant", "", tool_calls=(
        ToolCall("c1", str(write.tool), {"x": "invented"}),)), *traj.messages[2:]))
    rec = episode_process(task, bad, False, False)
    assert rec["asked_before_first_write"] is False
    assert rec["exact_args"][1] == sum(1 for s in task.workflow if s.tool)
    none = attrs.evolve(traj, messages=traj.messages[:2], malformed_tool_calls=1)
    rec = episode_process(task, none, False, False)
    assert rec["valid_calls"] is False and rec["gold_tools_called"] is False and rec["exact_args"][0] == 0


def test_teacher_forced_accuracy_is_one_for_the_oracle_and_low_for_a_chatter(env: Any, tokenizer: Any,
                                                                            work: Path, monkeypatch: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from synthagent.plugins.training.trl import process, rollout
    from synthagent.plugins.training.trl.ceiling import _turn_ids, oracle_trajectories

    ids = sorted(env.tasks)
    gold = oracle_trajectories(env, ids)
    renderer = rollout.TemplateRenderer(tokenizer)
    prefixes = {}  # gold prefix ids -> the oracle's next turn ids
    for traj in gold.values():
        tools = env.tools_schema(env.tasks[traj.task_id])
        msgs = [m.openai() for m in traj.messages]
        for i, m in enumerate(traj.messages):
            if m.role == "assistant":
                prefixes[tuple(renderer.prompt_ids(msgs[:i], tools))] = _turn_ids(renderer, m)

    def oracle_fn(*a: Any, **k: Any) -> Any:
        return lambda batch, max_new: [prefixes[tuple(b)] for b in batch]

    monkeypatch.setattr(rollout, "model_generate_fn", oracle_fn)
    got = process.next_action_accuracy(None, tokenizer, env, ids, max_turn_tokens=512)
    assert len(got["turns"]) == len(prefixes) and got["tasks"] == len(gold)
    assert all(v["rate"] == 1.0 for v in got["rates"].values() if v["n"]), got["rates"]
    assert got["rates"]["asks_when_needed"]["n"] >= 1  # the oracle asked somewhere
    chatter = renderer.encode("Hello.<|im_end|>")
    monkeypatch.setattr(rollout, "model_generate_fn", lambda *a, **k: (lambda batch, mx: [chatter for _ in batch]))
    low = process.next_action_accuracy(None, tokenizer, env, ids, max_turn_tokens=512)
    assert low["rates"]["tool"]["rate"] == 0.0 and low["rates"]["asks_when_needed"]["rate"] == 0.0
    assert low["rates"]["action_type"]["rate"] < 1.0
    monkeypatch.undo()
    model = AutoModelForCausalLM.from_pretrained(str(work / "tiny"), dtype=torch.float32).eval()
    real = process.next_action_accuracy(model, tokenizer, env, ids[:2], max_turn_tokens=16)  # a real forward
    assert real["turns"] and all(0.0 <= v["rate"] <= 1.0 for v in real["rates"].values() if v["n"])


def test_the_gpu_protocol_script_uses_only_flags_the_bench_knows() -> None:
    import re

    script = (REPO / "benchmarks" / "gpu_protocol.sh").read_text()
    helptext = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_learning.py"), "--help"],
                              capture_output=True, text=True, timeout=120).stdout
    flags = set(re.findall(r"(--[a-z][a-z0-9-]+)", script.split("bench_learning.py", 2)[-1]))
    assert flags and {f for f in flags if f not in helptext} == set()
