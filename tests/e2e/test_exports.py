"""Exports load with `datasets` and every SFT row renders through a tool-capable chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

from synthagent.plugins.training.trl.chat_template import CHATML_TOOL_TEMPLATE as TOOL_TEMPLATE


@pytest.fixture(scope="module")
def tokenizer(default_run):
    """A byte-level BPE tokenizer trained here on the run's own text (no hub download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    corpus = (default_run.root / "exports/sft.jsonl").read_text().splitlines()[:50]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = TOOL_TEMPLATE
    return fast


def test_both_exports_load_with_datasets(default_run) -> None:
    import datasets

    sft = datasets.load_dataset("json", data_files=str(default_run.root / "exports/sft.jsonl"), split="train")
    rl = datasets.load_dataset("json", data_files=str(default_run.root / "exports/rl.jsonl"), split="train")
    assert len(sft) >= 200 and len(rl) >= 200
    assert {"messages", "tools", "task_id"} <= set(sft.column_names)
    assert {"prompt", "tools", "task_id"} <= set(rl.column_names)
    assert rl[0]["prompt"][0]["role"] == "system" and rl[0]["prompt"][1]["role"] == "user"


def test_every_sft_row_renders_through_the_chat_template(default_run, tokenizer) -> None:
    import datasets

    sft = datasets.load_dataset("json", data_files=str(default_run.root / "exports/sft.jsonl"), split="train")
    raw = [json.loads(line) for line in Path(default_run.root / "exports/sft.jsonl").read_text().splitlines()]
    for row, original in zip(sft, raw):
        text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
        calls = [c for m in original["messages"] for c in m.get("tool_calls", [])]
        assert text.count("<tool_call>") == len(calls)
        for call in calls:  # arguments survive Arrow exactly (no injected null keys)
            assert json.dumps(call["function"]["arguments"]) in text
        assert text.count("<tool_response>") == sum(1 for m in original["messages"] if m["role"] == "tool")
        for tool in original["tools"]:
            assert tool["function"]["name"] in text
    out = tokenizer.apply_chat_template(sft[0]["messages"], tools=sft[0]["tools"], tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    assert 0 < sum(out["assistant_masks"]) < len(out["input_ids"])
