"""GRPO with a model-played user (EigenData, issue 16 point 3): a run made with ``user=llm`` served by a local
transformers model (a user model trained by ``synth train --algorithm user-sft``, here a tiny from-config one)
carries that user into GRPO's environment, and the user model writes the user turns the policy trains against.
No hub, no mocks: a real ``synth run``, a real GRPOTrainer step on CPU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.protocols import TrainRequest

pytest.importorskip("trl")

RUN = ["--tasks", "4", "--set", 'plugins.offline-domains.domains=["banking", "library"]',
       "--set", "plugins.offline-domains.max_tools=2", "--set", "plugins.offline-domains.max_hidden=1",
       "--set", "simulate.max_turns=6"]


def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grpo-llm-user")


@pytest.fixture(scope="module")
def tiny(work: Path) -> str:
    """One tiny model (tokenizer trained here on task text): the user model and the policy's start."""
    from synthagent.plugins.backends.hf_testing import build_tiny_model
    from synthagent.plugins.generators.offline_domains import OfflineDomainsGenerator

    corpus = [t.full_instruction + " " + " ".join(f.statement for f in t.user_context)
              for t in OfflineDomainsGenerator().sample(40, seed=0)]
    return build_tiny_model(str(work / "tiny"), corpus, vocab_size=600)


@pytest.fixture(scope="module")
def llm_user_run(work: Path, tiny: str) -> Path:
    """``synth run`` whose user is the ``llm`` user served in process by the tiny transformers model."""
    # sampled: greedy decoding of an untrained model repeats a newline, an empty turn the user's guard refuses
    result = _synth("run", "-q", "--out", str(work / "runs"), "--name", "llmuser", *RUN, "--set", "user=llm",
                    "--set", "plugins.llm.user.backend=transformers", "--set", "plugins.llm.user.temperature=1.0",
                    "--set", f'plugins.llm.user.backend_options={{model = "{tiny}", max_tokens = 12}}')
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "runs" / "llmuser"


def test_the_environment_rebuilds_the_runs_llm_user_with_its_own_backend(llm_user_run: Path, tiny: str) -> None:
    from synthagent.plugins.backends.local import TransformersBackend
    from synthagent.plugins.training.trl.environment import RunEnvironment

    env = RunEnvironment(llm_user_run)
    user = env.components.user
    assert env.config.user == "llm" and user.name == "llm"
    assert isinstance(user.llm, TransformersBackend) and user.llm.model_path == tiny
    assert user.llm is not env.components.llm  # not the run's teacher (the oracle)


def test_grpo_rollouts_play_against_the_user_model(work: Path, llm_user_run: Path, tiny: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from synthagent.plugins.backends.local import TransformersBackend
    from synthagent.plugins.simulators.users.llm import STOP
    from synthagent.plugins.training.trl.grpo import GRPO_OPTIONS, train_grpo
    from synthagent.plugins.training.trl.rollout import ZeroVarianceFilter

    # Record what every transformers backend generates (the real generation runs; nothing is replaced).
    written: list[tuple[str, str, str]] = []
    generate = TransformersBackend._generate

    def recording(self: TransformersBackend, request: Any) -> Any:
        response = generate(self, request)
        written.append((self.model_path, request.messages[0].content or "", response.message.content or ""))
        return response

    monkeypatch.setattr(TransformersBackend, "_generate", recording)
    out = work / "grpo"
    eos = AutoTokenizer.from_pretrained(tiny).eos_token_id
    # An untrained policy's turns run into the token limit, which ends the episode before the user speaks: its
    # sampling favours the end-of-turn token here, so its turns end and the user model answers them.
    config = GRPOConfig(generation_kwargs={"sequence_bias": [[[eos], 6.0]]},
                        output_dir=str(out / "trainer"), learning_rate=1e-3, per_device_train_batch_size=2,
                        num_generations=2, max_completion_length=256, max_steps=2, temperature=1.0, seed=0,
                        use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                        save_strategy="no", logging_steps=1, disable_tqdm=True)
    kept: list[Any] = []
    request = TrainRequest(run_dir=str(llm_user_run), model=tiny, output_dir=str(out), options={})
    summary = train_grpo(request, config, {**GRPO_OPTIONS, "max_turn_tokens": 24, "max_turns": 6,
                                           "save_model": False, "plot": False},
                         ZeroVarianceFilter("keep", 0), keep_rollouts=kept)
    assert summary["steps"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    env_info = summary["environment"]
    assert env_info["user"] == "llm"
    user_stats = env_info["stats"]["user"]
    assert user_stats.get("model_turns", 0) > 0, user_stats  # the user model wrote user turns during training
    rollouts = [r for item in kept for r in item[0]]
    assert len(rollouts) >= 4
    replies = [m.content for r in rollouts for m in r.trajectory.messages[2:] if m.role == "user"]
    # every user turn after the opening request is the user model's text (or the guard's fixed fallback)
    by_user_model = {text.replace(STOP, "").strip() for path, system, text in written
                     if path == tiny and "role-playing" in system}
    from_model = [t for t in replies if t in by_user_model]
    assert from_model, (replies[:6], user_stats)
    fixed = ("Could you continue, please?", "Thanks, that's all.", "Could you help me with that, please?")
    assert all(t in by_user_model or t in fixed for t in replies), replies[:6]
