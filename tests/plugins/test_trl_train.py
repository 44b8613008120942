"""Training through TRL on a tiny model on CPU: real GRPOTrainer / SFTTrainer, no mocks.

One small run (two domains, two tools per task) and one tiny Qwen2-config model with a tokenizer trained here
on the run's own text are shared by the module; SFT runs once and GRPO starts from its weights (the order a
user follows: SFT on teacher demonstrations, then GRPO).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.protocols import TrainRequest

SMALL_RUN = ["--tasks", "8", "--set", 'plugins.offline-domains.domains=["banking", "library"]',
             "--set", "plugins.offline-domains.max_tools=2", "--set", "plugins.offline-domains.max_hidden=1",
             "--set", 'export.vertical=["library"]']


def _synth(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trl-train")


@pytest.fixture(scope="module")
def small_run(work: Path) -> Path:
    result = _synth("run", "-q", "--out", str(work / "runs"), "--name", "small", *SMALL_RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    return work / "runs" / "small"


@pytest.fixture(scope="module")
def open_run(work: Path, small_run: Path) -> Path:
    """The small run with every hidden fact made visible and a reward that pays for staying inside the task's
    tools (rubrics, scores and exports rebuilt with ``--from rubric``): a tiny policy's rewards then vary within a
    group (a malformed or foreign tool call trips the gate, plain text does not). The default reward pays a
    do-nothing policy nothing, so without this a tiny model's groups have zero variance."""
    import shutil

    from synthagent.core.config import config_from_dict
    from synthagent.core.pipeline import config_digest

    root = work / "runs" / "open"
    shutil.copytree(small_run, root)
    tasks = [json.loads(line) for line in (root / "tasks.jsonl").read_text().splitlines()]
    for t in tasks:
        t["visible_facts"] = list(t["visible_facts"]) + list(t["user_context"])
        t["user_context"] = []
    (root / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["config"]["plugins"]["rubric"] = {"reward": {"gate": {"all_of": ["kind:forbidden"]}, "then": {
        "sum": [{"weight": 0.5, "of": {"const": 1.0}}, {"weight": 0.5, "of": "kind:subgoal"}]}}}
    manifest["fingerprint"] = config_digest(config_from_dict(manifest["config"]))
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = _synth("run", "-q", "--out", str(work / "runs"), "--name", "open", "--from", "rubric", *SMALL_RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def tiny_model(work: Path, small_run: Path) -> str:
    from synthagent.plugins.backends.hf_testing import build_tiny_model

    corpus = (small_run / "exports/sft.jsonl").read_text().splitlines()
    return build_tiny_model(str(work / "tiny"), corpus, vocab_size=1200)


@pytest.fixture(scope="module")
def sft_result(work: Path, small_run: Path, tiny_model: str) -> dict[str, Any]:
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    request = TrainRequest(run_dir=str(small_run), model=tiny_model, output_dir=str(work / "sft"),
                           options={"max_steps": 20, "learning_rate": 5e-3, "per_device_train_batch_size": 2,
                                    "seed": 0, "lr_scheduler_type": "constant"})
    return SFTAlgorithm().train(request)


def cpu_grpo_config(out: Path, **fields: Any) -> Any:
    """TRL's GRPOConfig for these CPU tests (each test sets its steps, group size and completion length)."""
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(out / "trainer"), learning_rate=1e-3, per_device_train_batch_size=4,
                      temperature=1.0, seed=0, use_cpu=True, bf16=False, gradient_checkpointing=False,
                      report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, **fields)


def _weights(model_dir: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(next(Path(model_dir).glob("*.safetensors"))))


def test_sft_loss_falls_on_a_fixed_tiny_set(sft_result: dict[str, Any], work: Path) -> None:
    (stage,) = sft_result["stages"]
    assert stage["examples"] == 8 and stage["steps"] == 20
    rows = [json.loads(line) for line in (work / "sft/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses  # the loss falls well below where it started
    assert (work / "sft/curves.png").stat().st_size > 1000
    assert 0 < stage["assistant_tokens"] < stage["tokens"]


def test_evaluate_policy_is_greedy_reproducible_and_names_the_failed_criteria(
        small_run: Path, sft_result: dict[str, Any]) -> None:
    """What bench_learning reports: success rate, mean score and the failed criteria, the same on a second run."""
    import statistics

    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.evaluate import evaluate_policy

    env = RunEnvironment(small_run, max_turns=3)
    ids = sorted(env.tasks)[:4]
    # limits this tight cut the oracle too: ceiling_min=0 reports that ceiling instead of refusing (the gate itself
    # is tested in test_ceiling.py)
    first = evaluate_policy(sft_result["model_out"], env, ids, max_turn_tokens=16, budget=96, batch_size=2,
                            ceiling_min=0)
    second = evaluate_policy(sft_result["model_out"], env, ids, max_turn_tokens=16, budget=96, batch_size=2,
                             ceiling_min=0)
    assert first["ceiling"]["n"] == 4 and first["ceiling"]["rate"] < 0.95 and first["ceiling"]["cut"] >= 1
    assert first["process"]["success"]["n"] == 4 and set(first["per_task"][ids[0]]["process"]) >= {
        "valid_calls", "asked_before_first_write", "exact_args"}
    assert first["tasks"] == 4 and sorted(first["per_task"]) == ids
    assert first["per_task"] == second["per_task"]  # greedy decoding: the same episodes again
    per_task = first["per_task"].values()
    assert first["score_mean"] == pytest.approx(statistics.fmean(t["reward"] for t in per_task), abs=1e-4)
    assert first["success_rate"] == sum(t["success"] for t in per_task) / 4
    assert sum(first["failed_by_kind"].values()) == sum(len(t["failed"]) for t in per_task)
    for t in per_task:  # an unsuccessful episode always names what it failed
        assert t["success"] or t["failed"], t
    # the headline is the reward-independent success (final state + answer), recounted from the episodes
    assert first["finished"] == 4
    assert first["independent_successes"] == sum(bool(t["independent"]) for t in per_task)
    for t in per_task:
        assert t["independent"] in (True, False) and (t["independent"] or t["failure"]), t
    assert first["transcripts"] == {}


def test_evaluate_policy_under_bf16_autocast_keeps_transcripts(small_run: Path, sft_result: dict[str, Any]) -> None:
    """bfloat16 autocast (the fast CPU path) runs the same episodes' bookkeeping and keeps the asked transcripts."""
    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.evaluate import evaluate_policy

    env = RunEnvironment(small_run, max_turns=3)
    ids = sorted(env.tasks)[:2]
    res = evaluate_policy(sft_result["model_out"], env, ids, max_turn_tokens=16, budget=96, batch_size=2,
                          bf16_autocast=True, transcripts=1, ceiling_min=0, teacher_forced=True)
    assert res["teacher_forced"]["turns"] and res["teacher_forced"]["rates"]["action_type"]["n"] > 0
    assert res["tasks"] == 2 and sorted(res["per_task"]) == ids
    (tid, messages), = res["transcripts"].items()
    assert tid == ids[0] and messages[0]["role"] == "system" and any(m["role"] == "assistant" for m in messages)


def test_sft_trains_on_assistant_tokens_only_with_tools_rendered(small_run: Path, tiny_model: str) -> None:
    from transformers import AutoTokenizer

    from synthagent.plugins.training.trl.sft import read_rows, tokenize_rows

    tok = AutoTokenizer.from_pretrained(tiny_model)
    row = read_rows(small_run / "exports/sft.jsonl")[0]
    (enc,) = tokenize_rows([row], tok)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    ignored = tok.decode([i for i, m in zip(ids, mask) if not m])
    for tool in row["tools"]:  # every tool of the row is rendered by the template, in the ignored part
        assert tool["function"]["name"] in ignored
    for m in row["messages"]:
        if m["role"] == "assistant":
            for call in m.get("tool_calls") or []:
                assert call["function"]["name"] in trained
            if m.get("content"):
                assert m["content"] in trained
        elif m["role"] in ("user", "tool"):
            assert m["content"] not in trained and m["content"] in ignored


def test_loss_mask_is_zero_on_tool_and_user_tokens_and_one_on_policy_tokens(small_run: Path, tiny_model: str) -> None:
    from transformers import AutoTokenizer

    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.rollout import TemplateRenderer, run_batch

    tok = AutoTokenizer.from_pretrained(tiny_model)
    env = RunEnvironment(small_run)
    renderer = TemplateRenderer(tok)
    task = next(t for t in env.tasks.values() if t.user_context)
    step = task.workflow[0]
    script = [f"Could you tell me your {task.user_context[0].keywords[0]}?<|im_end|>",
              "<tool_call>\n" + json.dumps({"name": step.tool, "arguments": step.arguments}) + "\n</tool_call><|im_end|>",
              "<tool_call>\n{\"name\": \"no_such_tool\", \"arguments\": {}}\n</tool_call><|im_end|>",
              "Is there anything else?<|im_end|>"]
    turn = {"i": 0}

    def scripted(batch: list[list[int]], max_new: list[int]) -> list[list[int]]:  # the policy's sampled ids
        out = [renderer.encode(script[min(turn["i"], len(script) - 1)]) for _ in batch]
        turn["i"] += 1
        return out

    (rollout,), (tokens,), _ = asyncio.run(run_batch(env, [(task, 0)], scripted, renderer, budget=4000,
                                                     max_turn_tokens=400, eos_ids=[tok.eos_token_id], seed=0))
    roles = [m.role for m in rollout.trajectory.messages]
    assert roles.count("tool") == 2 and roles.count("user") >= 2  # tool results and user turns happened
    assert len(tokens.mask) == len(tokens.completion_ids)
    sources = [src for _, _, src in tokens.turns]
    assert sources.count("policy") == 4 and "tool" in sources and "user" in sources
    policy_texts = []
    covered = 0
    for start, end, src in tokens.turns:
        assert start == covered
        covered = end
        span = tokens.mask[start:end]
        text = tok.decode(tokens.completion_ids[start:end])
        if src == "policy":
            assert span == [1] * (end - start)
            policy_texts.append(text)
        else:
            assert span == [0] * (end - start)
            assert "<|im_start|>assistant" in text  # the env span ends with the next generation prompt
    assert covered == len(tokens.completion_ids)
    assert policy_texts == script  # exactly the sampled ids carry mask 1
    env_text = "".join(tok.decode(tokens.completion_ids[s:e]) for s, e, src in tokens.turns if src != "policy")
    messages = list(rollout.trajectory.messages)
    last_policy = max(i for i, m in enumerate(messages) if m.role == "assistant")
    for m in messages[2:last_policy]:  # every tool result and user reply the policy saw lies in a mask-0 span
        if m.role in ("tool", "user"):
            assert m.content and m.content in env_text
    # token-in/token-out: the ids equal a fresh rendering of the whole conversation (no drift)
    messages = [m.openai() for m in rollout.trajectory.messages]
    full = renderer.encode(renderer.render(messages, env.tools_schema(task), add_generation_prompt=False))
    assert full[: len(tokens.prompt_ids) + len(tokens.completion_ids)] == tokens.prompt_ids + tokens.completion_ids
    assert rollout.score is not None and rollout.reward == rollout.score.total  # the rubric scored it
    verdicts = {r.criterion_id: r.passed for r in rollout.score.breakdown}
    assert verdicts[f"step-{step.index}"] and not verdicts["no-foreign-tool"]  # the right call, and the foreign one


def test_grpo_three_steps_through_the_environment_changes_weights_and_logs_rubric_reward(
        work: Path, open_run: Path, sft_result: dict[str, Any]) -> None:

    from synthagent.plugins.training.trl.grpo import GRPO_OPTIONS, train_grpo
    from synthagent.plugins.training.trl.rollout import ZeroVarianceFilter

    start = sft_result["model_out"]
    before = _weights(start)
    out = work / "grpo"
    config = cpu_grpo_config(out, max_steps=3, num_generations=4, max_completion_length=256)
    kept: list[Any] = []
    request = TrainRequest(run_dir=str(open_run), model=start, output_dir=str(out), options={})
    summary = train_grpo(request, config, {**GRPO_OPTIONS, "max_turn_tokens": 48}, ZeroVarianceFilter("resample", 2),
                         keep_rollouts=kept)
    assert summary["steps"] == 3 and summary["scorer"] == "rubric"
    after = _weights(summary["model_out"])
    assert any(not before[k].equal(after[k]) for k in before), "GRPO did not change the weights"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert {"loss", "reward_mean", "reward_std", "zero_variance_frac", "success_rate"} <= set(row)
        assert 0.0 <= row["reward_mean"] <= 1.0
    assert (out / "curves.png").stat().st_size > 1000
    rollouts = [r for item in kept for r in item[0]]
    assert len(rollouts) >= 12
    # episodes ran in the environment: the agent loop, the user simulator and the tools
    assert all(r.trajectory.messages[0].role == "system" for r in rollouts)
    assert any(len(r.trajectory.messages) > 3 for r in rollouts)
    # the reward is the run's rubric score of the trajectory
    from synthagent.plugins.training.trl.environment import RunEnvironment

    env = RunEnvironment(open_run)
    scorer = env.components.scorer  # the run's own scorer, with the run's reward composition
    assert len({r.reward for r in rollouts}) > 1  # the rewards varied, so there was something to learn
    assert any(sum(t.mask) < len(t.mask) for item in kept for t in item[1])  # some episode had environment turns
    for r in rollouts[:8]:
        assert r.reward == (asyncio.run(scorer.score(r.task, env.rubrics[r.task.id], r.trajectory)).total or 0.0)
    # what TRL got as env_mask is the episode's policy mask (or zeros for a dropped group)
    for item in kept:
        for tok, mask in zip(item[1], item[2]):
            assert mask == tok.mask or not any(mask)


SCORER_PLUGIN = '''
from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Score, stable_id

FLAT_DOMAIN = "library"

class HalfFlatScorer:
    """Library tasks always score 0.5 (a zero-variance group); others score by sample parity."""
    async def score(self, task, rubric, trajectory):
        total = 0.5 if task.domain == FLAT_DOMAIN else float(trajectory.sample % 2)
        return Score(stable_id("score", trajectory.id), trajectory.id, task.id, rubric.id, "half-flat", "ok",
                     total, total == 1.0, (), {})

@hookimpl
def synth_register_reward_scorers(register):
    register("half-flat", HalfFlatScorer)
'''


def test_zero_variance_filter_finds_and_masks_exactly_the_flat_groups() -> None:
    from synthagent.core.errors import ConfigError
    from synthagent.plugins.training.trl.rollout import ZeroVarianceFilter

    f = ZeroVarianceFilter("drop")
    rewards = [0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.25, 0.25 + 1e-9]
    assert f.flat_groups(rewards, 2) == [0, 3]  # (0.5, 0.5) and (0.25, 0.25+1e-9); (0.5, 1.0) and (0, 1) vary
    masks = [[1, 1, 0, 1] for _ in rewards]
    f.mask_groups(masks, [0, 3], 2)
    assert masks[0] == masks[1] == masks[6] == masks[7] == [0, 0, 0, 0]
    assert masks[2] == masks[5] == [1, 1, 0, 1]
    with pytest.raises(ConfigError):
        ZeroVarianceFilter("sometimes")


@pytest.mark.parametrize("mode", ["resample"])
def test_a_crafted_zero_variance_group_is_filtered_and_counted(work: Path, tiny_model: str, mode: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:

    from synthagent.plugins.training.trl.grpo import GRPO_OPTIONS, train_grpo
    from synthagent.plugins.training.trl.rollout import ZeroVarianceFilter

    plugin_dir = work / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "half_flat_scorer.py").write_text(SCORER_PLUGIN)
    monkeypatch.syspath_prepend(str(plugin_dir))
    run = work / "runs" / "flat"
    if not run.exists():
        result = _synth("run", "-q", "--out", str(work / "runs"), "--name", "flat", "--plugin", "half_flat_scorer",
                        "--set", "scorer=half-flat", "--set", "export.min_score=0", *SMALL_RUN[:6],
                        env={"PYTHONPATH": str(plugin_dir)})  # min_score 0: a run that keeps nothing exits 3
        assert result.returncode == 0, result.stderr[-2000:]
    out = work / f"flat-{mode}"
    config = cpu_grpo_config(out, max_steps=2, num_generations=2, max_completion_length=16)
    kept: list[Any] = []
    request = TrainRequest(run_dir=str(run), model=tiny_model, output_dir=str(out), options={})
    summary = train_grpo(request, config, {**GRPO_OPTIONS, "max_turn_tokens": 8, "save_model": False, "plot": False},
                         ZeroVarianceFilter(mode, 1), keep_rollouts=kept)
    flat_seen = 0
    for item in kept:
        rollouts, _, masks = item
        for g in range(len(rollouts) // 2):
            group = rollouts[2 * g: 2 * g + 2]
            flat = group[0].reward == group[1].reward
            if group[0].task.domain == "library":
                assert flat
            if flat:  # every zero-variance group that reaches TRL has its loss mask zeroed
                flat_seen += 1
                assert not any(any(m) for m in masks[2 * g: 2 * g + 2])
            else:
                assert all(any(m) for m in masks[2 * g: 2 * g + 2])
    zv = summary["zero_variance"]
    assert zv["mode"] == mode and zv["groups"] == 4
    assert zv["dropped_groups"] == flat_seen
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["zero_variance_groups"] for r in rows) == zv["zero_variance_groups"] >= zv["dropped_groups"]
    if mode == "resample":
        assert zv["resampled_groups"] == zv["zero_variance_groups"] > 0
    else:
        assert zv["resampled_groups"] == 0 and zv["dropped_groups"] == zv["zero_variance_groups"] > 0


def test_sft_curriculum_trains_general_then_vertical(work: Path, small_run: Path, tiny_model: str) -> None:
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    request = TrainRequest(run_dir=str(small_run), model=tiny_model, output_dir=str(work / "curriculum"),
                           options={"curriculum": True, "max_steps": 2, "per_device_train_batch_size": 2,
                                    "save_model": False})
    summary = SFTAlgorithm().train(request)
    general, vertical = summary["stages"]
    assert (general["stage"], vertical["stage"]) == ("general", "vertical")
    assert general["examples"] == 8 and 0 < vertical["examples"] < 8
    rows = [json.loads(line) for line in (work / "curriculum/metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["general"] * 2 + ["vertical"] * 2


def test_synth_train_rejects_bad_input_with_exit_code_2(small_run: Path, tiny_model: str, work: Path) -> None:
    cases = [
        (["--algorithm", "ppo", "--model", tiny_model, "--run", str(small_run)], "unknown algorithm 'ppo'"),
        (["--algorithm", "sft", "--model", tiny_model, "--run", str(work / "nope")], "not a run directory"),
        (["--algorithm", "sft", "--model", str(work / "nope"), "--run", str(small_run)], "model"),
        (["--algorithm", "grpo", "--model", tiny_model, "--run", str(small_run), "--set", "max_stepz=3"],
         "Did you mean 'max_steps'?"),
    ]
    for args, message in cases:
        result = _synth("train", *args)
        assert result.returncode == 2, (args, result.stderr[-1500:])
        assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr[-1500:]


def test_a_third_party_algorithm_trains_through_synth_train(small_run: Path, tiny_model: str, work: Path) -> None:
    plugin_dir = work / "algo_plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "echo_algorithm.py").write_text(textwrap.dedent('''
        from synthagent.core.hookspecs import hookimpl

        class Echo:
            def __init__(self, greeting="hi"):
                self.greeting = greeting
            def train(self, request):
                return {"algorithm": "echo", "model": request.model, "options": dict(request.options),
                        "greeting": self.greeting}

        @hookimpl
        def synth_register_rl_algorithms(register):
            register("echo", Echo, description="test algorithm")
        '''))
    result = _synth("train", "--plugin", "echo_algorithm", "--algorithm", "echo", "--model", tiny_model,
                    "--run", str(small_run), "--set", "beta=0.1", env={"PYTHONPATH": str(plugin_dir)})
    assert result.returncode == 0, result.stderr[-1500:]
    out = json.loads(result.stdout)
    assert out == {"algorithm": "echo", "model": tiny_model, "options": {"beta": 0.1}, "greeting": "hi"}


def test_grpo_runs_unchanged_under_a_two_process_launch(small_run: Path, tiny_model: str, work: Path) -> None:
    """Two CPU processes (gloo) through torchrun, the launcher accelerate uses for multi-GPU."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = work / "two-proc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "synthagent.core", "train", "-a", "grpo", "-m", tiny_model, "-r", str(small_run), "-o", str(out),
         "--set", "max_steps=2", "--set", "learning_rate=1e-3", "--set", "max_completion_length=32",
         "--set", "max_turn_tokens=8", "--set", "num_generations=2", "--set", "per_device_train_batch_size=2",
         "--set", "zero_variance=keep", "--set", "save_model=false", "--set", "plot=false"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["groups"] == 2 and r["rollouts"] == 4 for r in rows)  # one group per process, gathered
