"""bfloat16 autocast against float32 on CPU for SmolLM2-135M: a forward pass (generation's prefill) and a
training forward+backward, side by side in one run, alternating, one torch thread.

The learning benchmark (bench_learning.py) trains with ``bf16=True`` and generates under bfloat16 autocast unless
``--no-bf16``; ``synth train --set bf16=auto`` decides from a hardware probe (printed first). This measures what
bf16 buys or costs on the machine it runs on. Not a timed test: it prints the ratios and tokens/s.

    OMP_NUM_THREADS=1 python benchmarks/bench_bf16_cpu.py --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prefill", type=int, default=1000, help="tokens of the forward pass")
    p.add_argument("--train-len", type=int, default=1200, help="tokens per sequence of the training step")
    p.add_argument("--train-batch", type=int, default=2)
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from synthagent.plugins.backends.hf_testing import smollm2_model_dir

    from synthagent.plugins.training.trl.common import choose_precision

    bf16, why = choose_precision("auto")
    print(f"probe (synth train --set bf16=auto) picks {'bf16' if bf16 else 'fp32'}: {why}")
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(smollm2_model_dir(), dtype=torch.float32)
    times: dict[str, list[float]] = {k: [] for k in ("forward fp32", "forward bf16-autocast",
                                                     "train step fp32", "train step bf16-autocast")}
    x = torch.randint(0, 40000, (1, args.prefill))
    y = torch.randint(0, 40000, (args.train_batch, args.train_len))
    for _ in range(args.rounds):
        for cast in (False, True):
            name = "bf16-autocast" if cast else "fp32"
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cast else contextlib.nullcontext()
            model.eval()
            t = time.perf_counter()
            with torch.no_grad(), ctx:
                model(x)
            times[f"forward {name}"].append(time.perf_counter() - t)
            model.train()
            t = time.perf_counter()
            with ctx:
                loss = model(y, labels=y).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
            times[f"train step {name}"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:28s} median {v:6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in times[k])})")
    print(f"forward speed-up    {med['forward fp32'] / med['forward bf16-autocast']:.2f}x  ({args.prefill} tokens)")
    print(f"train step speed-up {med['train step fp32'] / med['train step bf16-autocast']:.2f}x  "
          f"({args.train_batch} x {args.train_len} tokens)")
    tokens = args.train_batch * args.train_len
    for name in ("fp32", "bf16-autocast"):
        print(f"SFT step tokens/s, {name:14s}: {tokens / med[f'train step {name}']:7.1f} (one thread)")


if __name__ == "__main__":
    main()
