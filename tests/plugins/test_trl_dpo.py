"""``synth train --algorithm dpo``: TRL's real DPOTrainer on a run's preference pairs, a tiny from-config model on
CPU (tokenizer trained here on the run's own text, no hub download)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from synthagent.core.config import load_config
from synthagent.core.errors import UsageError
from synthagent.core.pipeline import Pipeline
from synthagent.core.protocols import TrainRequest
from synthagent.core.registry import load_plugins

NO_AUTOLOAD = {"SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}
SMALL = ["tasks=4", 'plugins.offline-domains.domains=["banking", "library"]', "plugins.offline-domains.max_tools=2",
         "plugins.offline-domains.max_hidden=1"]


def _run(root: Path, overrides: list[str]) -> Path:
    pipeline = Pipeline(load_config(None, overrides), load_plugins(environ=NO_AUTOLOAD))
    pipeline.open_store(root, resume=False)
    asyncio.run(pipeline.run())
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trl-dpo")


@pytest.fixture(scope="module")
def pair_run(work: Path) -> Path:
    return _run(work / "pairs", [*SMALL, "simulate.samples=3", "plugins.oracle.mistakes=0.5",
                                 "plugins.oracle.vary=true"])


@pytest.fixture(scope="module")
def tiny_model(work: Path, pair_run: Path) -> str:
    from synthagent.plugins.backends.hf_testing import build_tiny_model

    corpus = (pair_run / "exports/sft.jsonl").read_text().splitlines()
    return build_tiny_model(str(work / "tiny"), corpus, vocab_size=800)


def test_dpo_registers_beside_sft(plugins: Any) -> None:
    from synthagent.plugins.training.trl.dpo import DPOAlgorithm

    impl = plugins.registry("algorithm").get("dpo")
    assert impl.target is DPOAlgorithm and impl.plugin == "training.trl" and "sft" in plugins.registry("algorithm")


def test_the_pairs_tokenize_with_each_rows_tools_and_a_shared_prompt(pair_run: Path, tiny_model: str) -> None:
    from transformers import AutoTokenizer

    from synthagent.plugins.training.trl.dpo import read_pairs, tokenize_pairs

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = read_pairs(pair_run / "exports/dpo.jsonl")
    assert rows
    for row, enc in zip(rows, tokenize_pairs(rows, tok)):
        prompt = tok.decode(enc["prompt_ids"])
        for tool in row["tools"]:
            assert tool["function"]["name"] in prompt
        assert enc["chosen_ids"] and enc["rejected_ids"] and enc["chosen_ids"] != enc["rejected_ids"]
        assert row["prompt"][-1]["content"] in prompt


def test_one_dpo_step_on_cpu(work: Path, pair_run: Path, tiny_model: str) -> None:
    from synthagent.plugins.training.trl.dpo import DPOAlgorithm

    request = TrainRequest(run_dir=str(pair_run), model=tiny_model, output_dir=str(work / "dpo"),
                           options={"max_steps": 1, "seed": 0, "plot": False, "report_to": "none"})
    summary = DPOAlgorithm().train(request)
    assert summary["steps"] == 1 and summary["pairs"] >= 1 and summary["per_device_train_batch_size"] == 1
    assert summary["first_loss"] is not None and summary["first_loss"] > 0
    assert (work / "dpo/model").is_dir() and (work / "dpo/train_summary.json").is_file()
    rows = [json.loads(line) for line in (work / "dpo/metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows)


def test_a_one_sample_run_is_refused_with_the_reason(work: Path, tiny_model: str) -> None:
    from synthagent.plugins.training.trl.dpo import DPOAlgorithm

    run = _run(work / "one", SMALL)
    request = TrainRequest(run_dir=str(run), model=tiny_model, output_dir=str(work / "one-dpo"), options={})
    with pytest.raises(UsageError, match="fewer_than_two_scored.*simulate.samples=2"):
        DPOAlgorithm().train(request)
