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
from synthagent.plugins.training.trl.chat_template import CHATML_COMPACT_TOOL_TEMPLATE, CHATML_TOOL_TEMPLATE

__all__ = ["split_options", "trl_config", "load_model_and_tokenizer", "resolve_chat_template", "check_model_dir",
           "write_json", "distributed_teardown", "choose_precision", "resolve_precision", "precision_summary",
           "PRECISION_MODES", "CPU_BF16_FLAGS"]

log = logging.getLogger("synthagent.train")

#: TRL defaults that do not suit CPU training (field notes): applied unless the user sets them.
CPU_DEFAULTS: dict[str, Any] = {"use_cpu": True, "bf16": False, "fp16": False, "gradient_checkpointing": False}
COMMON_DEFAULTS: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "logging_steps": 1,
                                   "disable_tqdm": True}


#: What the ``bf16`` option accepts besides true/false: probe the hardware, force bfloat16 autocast, or float32.
PRECISION_MODES = ("auto", "bf16", "fp32")
#: /proc/cpuinfo flags of CPUs with native bfloat16 matrix math (AVX512-BF16, AMX); without them bf16 autocast
#: is emulated and ~13x slower than float32 (2.65 s vs 34.6 s per forward+backward of 128 tokens, AVX2 EPYC).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _read_cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU feature flags of ``path`` (``flags`` lines on x86, ``Features`` on ARM), None if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.lower().split())
    return flags or None


def _cpu_capability() -> str:
    """torch's view of the CPU's vector unit (``AVX2``, ``AVX512``, ``DEFAULT``...), ``unknown`` if it has none."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch, or a build without the probe
        return "unknown"


def choose_precision(mode: str = "auto") -> tuple[bool, str]:
    """Whether to train with bfloat16 autocast, and why.

    :param mode: ``auto`` (on CUDA: bf16 iff ``torch.cuda.is_bf16_supported()``; on CPU: bf16 only when
        ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16``, since bf16 autocast is ~13x slower than float32
        on CPUs without them and ~2.3x faster on CPUs with them; float32 when the flags cannot be read),
        ``bf16`` (always) or ``fp32`` (never).
    :returns: ``(use_bf16, reason)``; the reason names the CPU capability torch sees and the flag found (or not).
    :raises ConfigError: any other ``mode``.
    """
    if not isinstance(mode, str) or mode not in PRECISION_MODES:
        raise ConfigError(f"option bf16={mode!r}: expected true, false or one of {', '.join(PRECISION_MODES)}")
    import torch

    if mode == "bf16":
        use, reason = True, "bf16: requested (bf16=bf16)"
    elif mode == "fp32":
        use, reason = False, "fp32: requested (bf16=fp32)"
    elif torch.cuda.is_available():
        use = bool(torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(0)
        reason = f"bf16: CUDA device {name} supports bfloat16" if use else \
            f"fp32: CUDA device {name} does not support bfloat16"
    else:
        capability = _cpu_capability()
        flags = _read_cpu_flags()
        found = [f for f in CPU_BF16_FLAGS if flags and f in flags]
        use = bool(found)
        if flags is None:
            reason = (f"fp32: CPU capability {capability}, CPU flags unreadable (no /proc/cpuinfo), so no sign of "
                      "avx512_bf16/amx_bf16 (bf16 autocast is ~13x slower without them)")
        elif found:
            reason = f"bf16: CPU capability {capability}, flag {'/'.join(found)} found (native bfloat16 matmuls)"
        else:
            reason = (f"fp32: CPU capability {capability}, no avx512_bf16/amx_bf16 flag (bf16 autocast is ~13x "
                      "slower there)")
    log.info("precision %s", reason)
    return use, reason


def resolve_precision(fields: dict[str, Any]) -> dict[str, Any]:
    """Resolve the ``bf16`` TRL field in place (``auto``/``bf16``/``fp32`` become true/false through
    :func:`choose_precision`) and return ``{"bf16": bool | None, "reason": str}`` for the training summary.

    ``bf16`` unset keeps the old defaults (float32 on CPU, TRL's default on CUDA); call
    :func:`precision_summary` with the built config to record what was used.
    """
    value = fields.get("bf16")
    if isinstance(value, str):
        use, reason = choose_precision(value.strip().lower())
        fields["bf16"] = use
        return {"bf16": use, "reason": reason}
    if isinstance(value, bool):
        return {"bf16": value, "reason": f"{'bf16' if value else 'fp32'}: set by the user (bf16={str(value).lower()})"}
    if value is not None:
        raise ConfigError(f"option bf16={value!r}: expected true, false or one of {', '.join(PRECISION_MODES)}")
    return {"bf16": None, "reason": ""}


def precision_summary(precision: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """The ``precision`` entry of ``train_summary.json``: what ``config`` trains with and why (from
    :func:`resolve_precision`, or the default that applied when the user did not set ``bf16``)."""
    import torch

    used = bool(getattr(config, "bf16", False))
    reason = str(precision.get("reason") or "")
    if not reason:
        if torch.cuda.is_available():
            reason = f"{'bf16' if used else 'fp32'}: TRL's default on CUDA"
        elif used:
            reason = "bf16: requested"
        else:
            reason = "fp32: CPU default (set bf16=auto to use bf16 where the CPU has avx512_bf16/amx_bf16)"
    return {"bf16": used, "reason": reason}


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


def trl_config(config_cls: type, output_dir: str, fields: Mapping[str, Any], defaults: Mapping[str, Any],
               cpu_defaults: Mapping[str, Any] | None = None) -> Any:
    """Build TRL's config: CPU-friendly defaults, then ``defaults`` (and, without CUDA, ``cpu_defaults``), then
    the user's ``fields`` (which win). A ``bf16`` of ``auto``/``bf16``/``fp32`` is resolved first
    (:func:`resolve_precision`; call it yourself beforehand to keep the reason)."""
    import torch

    fields = dict(fields)
    resolve_precision(fields)
    values: dict[str, Any] = {**COMMON_DEFAULTS}
    cpu = not torch.cuda.is_available()
    if cpu:
        values.update(CPU_DEFAULTS)
    values.update(defaults)
    if cpu and cpu_defaults:
        values.update(cpu_defaults)
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
        it is), ``chatml-tools`` (the built-in one), ``chatml-tools-compact`` (the built-in one with one line a
        tool instead of its JSON schema), or a path to a Jinja file.
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
    if choice == "chatml-tools-compact":  # one line a tool instead of its JSON schema (fewer prompt tokens)
        tokenizer.chat_template = CHATML_COMPACT_TOOL_TEMPLATE
        return "chatml-tools-compact"
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
        raise ConfigError(f"chat_template {choice!r} is neither auto, model, chatml-tools, chatml-tools-compact "
                          "nor a template file")
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


def require_run(run_dir: str) -> Path:
    """``run_dir`` as a path, or a :class:`UsageError` when it is not a synthagent run directory."""
    run = Path(run_dir)
    if not (run / "manifest.json").is_file():
        raise UsageError(f"run directory {run_dir!r} does not exist or is not a synthagent run")
    return run


def save_outputs(trainer: Any, tokenizer: Any, out: Path, own: Mapping[str, Any], rows: Any, summary: dict[str, Any],
                 title: str) -> None:
    """What every trainer writes on the main process: the model (``save_model``), the loss curves (``plot``),
    recorded in ``summary``, and ``train_summary.json``."""
    from synthagent.plugins.training.trl.metrics import plot_curves

    if own["save_model"]:
        trainer.save_model(str(out / "model"))
        tokenizer.save_pretrained(str(out / "model"))
        summary["model_out"] = str(out / "model")
    if own["plot"]:
        png = plot_curves(rows, out / "curves.png", title=title)
        summary["curves"] = str(png) if png else None
    write_json(out / "train_summary.json", summary)


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
