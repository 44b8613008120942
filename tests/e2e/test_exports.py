"""Exports load with `datasets` and every SFT row renders through a tool-capable chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# A ChatML template with tools, in the shape of Qwen2.5's: tools in the system turn, calls as <tool_call> JSON,
# tool results as <tool_response> in user turns, assistant output inside {% generation %} for TRL's masks.
TOOL_TEMPLATE = r"""{%- if tools %}<|im_start|>system
{%- if messages[0].role == 'system' %}
{{ messages[0].content }}
{%- endif %}

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Call a tool with a tool_call block holding {"name": ..., "arguments": ...}.<|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' %}<|im_start|>user
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% generation %}{%- if message.content %}{{ message.content }}{%- endif %}
{%- for call in message.tool_calls or [] %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{%- endfor %}<|im_end|>{% endgeneration %}
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


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
