"""What the ``grpo`` and ``sft`` algorithms share: option splitting, CPU defaults, model and template loading.

``TrainRequest.options`` mixes synthagent's own options (documented per algorithm) with any field of TRL's
config dataclass (``GRPOConfig`` / ``SFTConfig``), passed through unchanged. An option that is neither is a
:class:`~synthagent.core.errors.ConfigError` naming the closest known key (exit code 2 in the CLI).
"""

from __future__ import annotations

import dataclasses
import json
import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError, UsageError, close_matches
from synthagent.plugins.training.trl.chat_template import CHATML_TOOL_TEMPLATE

__all__ = ["split_options", "trl_config", "load_model_and_tokenizer", "resolve_chat_template", "check_model_dir",
           "write_json", "distributed_teardown"]

log = logging.getLogger("synthagent.train")

#: TRL defaults that do not suit CPU training (field notes): applied unless the user sets them.
CPU_DEFAULTS: dict[str, Any] = {"use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False}
COMMON_DEFAULTS: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "logging_steps": 1,
                                   "disable_tqdm": True}


def check_model_dir(model: str) -> Path:
    """The model directory, or a :class:`UsageError` saying what is missing."""
    path = Path(model)
    if not path.is_dir():
        raise UsageError(f"model directory {model!r} does not exist (synth train loads local Hugging Face "
                         "model directories only)")
    if not (path / "config.json").is_file():
        raise UsageError(f"{model!r} is not a Hugging Face model directory (no config.json)")
    return path


def split_options(options: Mapping[str, Any], own: Mapping[str, Any], config_cls: type, algorithm: str
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``options`` into synthagent's own (defaults from ``own``) and TRL config fields of ``config_cls``.

    :raises ConfigError: an option that is neither, with a close-match hint.
    """
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    mine = dict(own)
    trl: dict[str, Any] = {}
    for key, value in options.items():
        if key in own:
            mine[key] = value
        elif key in fields:
            trl[key] = value
        else:
            known = sorted(set(own) | fields)
            raise ConfigError(f"unknown option {key!r} for algorithm {algorithm!r}: it is neither a synthagent "
                              f"option ({', '.join(sorted(own))}) nor a {config_cls.__name__} field."
                              + close_matches(key, known))
    return mine, trl


def trl_config(config_cls: type, output_dir: str, fields: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    """Build TRL's config: CPU-friendly defaults, then ``defaults``, then the user's ``fields`` (which win)."""
    import torch

    values: dict[str, Any] = {**COMMON_DEFAULTS}
    if not torch.cuda.is_available():
        values.update(CPU_DEFAULTS)
    values.update(defaults)
    values.update(fields)
    values["output_dir"] = output_dir
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config_cls.__name__} rejected the options {dict(fields)}: {exc}") from exc


def resolve_chat_template(tokenizer: Any, choice: str, *, need_generation: bool) -> str:
    """Set the tokenizer's chat template and say which was used.

    :param choice: ``auto`` (keep the model's template when it renders tools, and, for SFT, marks the assistant
        output with ``{% generation %}``; else the built-in ChatML tool template), ``model`` (keep it whatever
        it is), ``chatml-tools`` (the built-in one), or a path to a Jinja file.
    :returns: a short description for the training summary.
    """
    current = getattr(tokenizer, "chat_template", None) or ""
    if choice == "model":
        if not current:
            raise ConfigError("chat_template=model, but the model's tokenizer has no chat template")
        return "model"
    if choice == "chatml-tools":
        tokenizer.chat_template = CHATML_TOOL_TEMPLATE
        return "chatml-tools"
    if choice == "auto":
        renders_tools = "tools" in current
        marks = "{% generation %}" in current or "{%- generation %}" in current
        if current and renders_tools and (marks or not need_generation):
            return "model"
        log.warning("the model's chat template %s; using synthagent's ChatML tool template (chat_template=chatml-tools)",
                    "does not render tools" if not renders_tools else "has no {% generation %} markers")
        tokenizer.chat_template = CHATML_TOOL_TEMPLATE
        return "chatml-tools (auto: the model's template " + (
            "does not render tools)" if not renders_tools else "has no {% generation %} markers)")
    path = Path(choice)
    if not path.is_file():
        raise ConfigError(f"chat_template {choice!r} is neither auto, model, chatml-tools nor a template file")
    tokenizer.chat_template = path.read_text(encoding="utf-8")
    return str(path)


def load_model_and_tokenizer(model_dir: str, chat_template: str, *, need_generation: bool) -> tuple[Any, Any, str]:
    """Load a local causal LM (float32) and its tokenizer with a tool-capable chat template and a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = resolve_chat_template(tokenizer, chat_template, need_generation=need_generation)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, template


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as pretty JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


@contextlib.contextmanager
def distributed_teardown() -> Iterator[None]:
    """Tear down the process group that the trainer (accelerate) opened, once every rank is done.

    Under ``torchrun``/``accelerate launch`` accelerate initialises ``torch.distributed`` and never destroys it;
    a gloo group left to the interpreter's exit can abort a rank (``terminate called without an active
    exception``, SIGABRT) after training finished, which fails the launch. A group that existed before the
    block (the caller's own) is left alone.
    """
    import torch.distributed as dist

    owned = not (dist.is_available() and dist.is_initialized())
    ok = False
    try:
        yield
        ok = True
    finally:
        if owned and dist.is_available() and dist.is_initialized():
            try:
                if ok:  # after a failure the other ranks may sit in another collective: no barrier then
                    dist.barrier()
            finally:
                dist.destroy_process_group()
                with contextlib.suppress(Exception):  # accelerate's singleton would still point at the old group
                    from accelerate.state import AcceleratorState

                    AcceleratorState._reset_state(reset_partial_state=True)
