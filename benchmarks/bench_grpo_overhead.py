"""Overhead of a GRPO step through synthagent against the same bare TRL step, measured side by side.

Same model, same prompts (a task's opening with its tools, rendered by the same chat template), same batch
(``--batch`` completions in groups of ``--generations``), same completion length. The bare step is TRL's own
``GRPOTrainer`` generating one completion per prompt with a reward function; the synthagent step runs every
completion as an episode of the agent loop (one policy turn: ``max_turns=1``, so both generate the same tokens),
with the task's SQLite tool session, the rule user, the rubric scorer, the token bookkeeping and the
zero-variance bookkeeping (``keep``, so no extra rollouts). The two trainers alternate for ``--rounds`` rounds and
the median step time of each is compared (the first step of every trainer is a warm-up and not counted).

    python benchmarks/bench_grpo_overhead.py            # tiny Qwen2-config model (~0.4M parameters)
    python benchmarks/bench_grpo_overhead.py --model DIR --tokens 32 --batch 4

Prints ``ratio = synthagent step / bare TRL step`` (target: at most 1.1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class StepTimer:
    """A TrainerCallback that records wall time per optimizer step."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        times: list[float] = []
        self.times = times

        class _CB(TrainerCallback):  # type: ignore[misc]
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self._t = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                times.append(time.perf_counter() - self._t)

        self.callback = _CB()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="a local model dir (default: a tiny model built here)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64, help="completion tokens")
    p.add_argument("--steps", type=int, default=6, help="steps per trainer per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from synthagent.core.protocols import TrainRequest
    from synthagent.plugins.backends.hf_testing import build_tiny_model
    from synthagent.plugins.training.trl.common import load_model_and_tokenizer
    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.grpo import GRPO_OPTIONS, train_grpo
    from synthagent.plugins.training.trl.rollout import TemplateRenderer, ZeroVarianceFilter

    out = args.out or Path(tempfile.mkdtemp(prefix="grpo-overhead-"))
    run = out / "runs" / "bench"
    if not run.exists():
        subprocess.run([sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(out / "runs"), "--name",
                        "bench", "--tasks", "16", "--set", 'plugins.offline-domains.domains=["banking"]',
                        "--set", "plugins.offline-domains.max_tools=2"], check=True)
    model_dir = args.model
    if not model_dir:
        corpus = (run / "exports/sft.jsonl").read_text().splitlines()
        model_dir = build_tiny_model(str(out / "tiny"), corpus, vocab_size=1200, hidden=64, layers=2)
    env = RunEnvironment(run, max_turns=1)
    _, tokenizer, _ = load_model_and_tokenizer(model_dir, "auto", need_generation=False)
    renderer = TemplateRenderer(tokenizer)
    texts = [renderer.render(env.prompt(t), env.tools_schema(t), add_generation_prompt=True) for t in env.tasks.values()]
    eos_block = {"min_new_tokens": args.tokens}  # both sides generate exactly --tokens tokens

    def config(path: Path) -> Any:
        return GRPOConfig(output_dir=str(path), max_steps=args.steps, learning_rate=1e-4,
                          num_generations=args.generations, per_device_train_batch_size=args.batch,
                          max_completion_length=args.tokens, temperature=1.0, seed=0, use_cpu=True, bf16=False,
                          gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
                          disable_tqdm=True, generation_kwargs=eos_block)

    def bare_round(i: int) -> list[float]:
        model, tok, _ = load_model_and_tokenizer(model_dir, "auto", need_generation=False)
        timer = StepTimer()

        def reward(completions: list[Any], **kw: Any) -> list[float]:
            return [float(len(c)) % 3 for c in completions]

        # plain-text prompts: TRL tokenizes exactly the text synthagent renders (same tools, same template)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config(out / f"bare-{i}"),
                              train_dataset=datasets.Dataset.from_list([{"prompt": t} for t in texts]),
                              processing_class=tok, callbacks=[timer.callback])
        trainer.train()
        return timer.times[1:]

    def synth_round(i: int) -> list[float]:
        timer = StepTimer()
        request = TrainRequest(run_dir=str(run), model=model_dir, output_dir=str(out / f"synth-{i}"), options={})
        train_grpo(request, config(out / f"synth-{i}/trainer"),
                   {**GRPO_OPTIONS, "max_turns": 1, "max_turn_tokens": args.tokens, "save_model": False,
                    "plot": False}, ZeroVarianceFilter("keep"), callbacks=[timer.callback])
        return timer.times[1:]

    bare: list[float] = []
    synth: list[float] = []
    for i in range(args.rounds):
        bare += bare_round(i)
        synth += synth_round(i)
    b, s = statistics.median(bare), statistics.median(synth)
    result = {"bare_trl_step_s": round(b, 4), "synthagent_step_s": round(s, 4), "ratio": round(s / b, 3),
              "ratio_of_fastest_steps": round(min(synth) / min(bare), 3),
              "steps_measured_each": len(bare), "batch": args.batch, "generations": args.generations,
              "completion_tokens": args.tokens, "model": "tiny (built here)" if not args.model else args.model,
              "bare_all_s": [round(x, 4) for x in bare], "synth_all_s": [round(x, 4) for x in synth]}
    print(json.dumps(result, indent=2))
    print(f"ratio = synthagent step / bare TRL step = {s:.4f} s / {b:.4f} s = {s / b:.3f}")


if __name__ == "__main__":
    main()
