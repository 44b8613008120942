#!/usr/bin/env bash
# The issue-21 learning protocol on one GPU: 3 seeds of SFT (3 epochs) then GRPO, evaluated on train
# reproduction, 50 new seen-domain tasks, leave-one-domain-out travel and BFCL multi_turn_base, each beside
# its oracle ceiling (the bench refuses to report, exit 3, under a ceiling below 95%). Prints results.md.
#
# The GPU machine has no network: make the model here in parts of at most 60 MiB and carry them over,
#   python -m synthagent.plugins.backends.hf_testing smollm2 --out MODEL --max-shard-size 60MB --dtype bfloat16
# then, there, from the repository root (after the README's install):
#   bash benchmarks/gpu_protocol.sh MODEL [OUT]
# Not yet run on a GPU (no device was lent to the session that wrote it); the CPU results are in docs/results.md.
set -euo pipefail
MODEL=${1:?usage: gpu_protocol.sh MODEL_DIR [OUT]}
OUT=${2:-/tmp/synth-learning-gpu}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/bench_learning.py --out "$OUT" --model "$MODEL" --chat-template chatml-tools-compact \
  --seen-tasks 50 --train-repro 16 --bfcl-tasks 8 --seeds 0,1,2 --sft-epochs 3 --sft-lr 3e-4 \
  --grpo-steps 20 --grpo-batch 8 --num-generations 4 --eval-batch 32 --precision auto
cat "$OUT/results.md"
