#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults (tiny random-weight model, Swedish demo corpus).
# Environment: DEMO_OUT (default ./demo_out), DEMO_STEPS (default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${DEMO_OUT:-demo_out}"
steps="${DEMO_STEPS:-40}"
bin=.venv/bin
mkdir -p "$out"

echo "== 1/3  a tiny random-weight Qwen3-TTS (0.6B shape) with Swedish registered"
rm -rf "$out/tiny-model"
"$bin/qwen-swe" init-tiny "$out/tiny-model" --shape 0.6b --with-swedish

echo "== 2/3  parity: the training graph equals what qwen_tts inference runs"
"$bin/qwen-swe" parity --model "$out/tiny-model" --layout all --frames 4

echo "== 3/3  training on the Swedish demo corpus: accelerate launch, 2 CPU processes (DDP over gloo)"
"$bin/accelerate" launch --config_file accelerate_configs/cpu_ddp.yaml -m qwen_swe overfit \
  --model "$out/tiny-model" --steps "$steps"

echo
echo "demo finished: model folder $out/tiny-model"
