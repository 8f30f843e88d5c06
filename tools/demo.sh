#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults (a tiny random-weight Qwen3-TTS and the Swedish
# demo corpus): model -> parity -> shards -> 2-process DeepSpeed ZeRO-2 training that is interrupted and resumed.
# Environment: DEMO_OUT (default ./demo_out), DEMO_STEPS (default 30), DEMO_STOP_AT (default 12).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${DEMO_OUT:-demo_out}"
steps="${DEMO_STEPS:-30}"
stop_at="${DEMO_STOP_AT:-12}"
bin=.venv/bin
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
rm -rf "$out"
mkdir -p "$out"

echo "== 1/6  a tiny random-weight Qwen3-TTS (0.6B shape) with Swedish registered"
"$bin/qwen-swe" init-tiny "$out/model" --shape 0.6b --with-swedish

echo "== 2/6  parity: the training graph equals what qwen_tts inference runs"
"$bin/qwen-swe" parity --model "$out/model" --layout all --frames 3

echo "== 3/6  shards from the Swedish demo corpus (one speaker held out for eval)"
"$bin/qwen-swe" shards build "$out/shards" --model "$out/model" --manifest qwen_swe/demo_corpus/manifest.jsonl \
  --eval-speakers 1 --min-seconds 0.5 --samples-per-shard 8 --no-progress
"$bin/qwen-swe" shards verify "$out/shards"
"$bin/qwen-swe" shards inspect "$out/shards"

train=("$bin/accelerate" launch --config_file accelerate_configs/cpu_zero2.yaml -m qwen_swe train --preset smoke
       "model.path=$out/model" "data.shards=$out/shards" "run.output_dir=$out/run" "run.max_steps=$steps"
       "schedule.total_steps=$steps" "run.checkpoint_every=5" "run.eval_every=5" "data.frame_budget=384"
       "data.num_workers=1")

echo "== 4/6  training: accelerate launch, 2 CPU processes, DeepSpeed ZeRO-2; interrupted at step $stop_at"
"${train[@]}" &
launcher=$!
metrics="$out/run/metrics.jsonl"
until [ -f "$metrics" ] && [ "$(wc -l < "$metrics")" -ge "$stop_at" ]; do
  kill -0 "$launcher" 2>/dev/null || { echo "training ended before the interruption"; exit 1; }
  sleep 0.5
done
echo "-- sending SIGTERM to the training processes (as a scheduler or Ctrl-C would)"
pkill -TERM -P "$launcher"
wait "$launcher" || true

echo "== 5/6  resuming from the newest complete checkpoint"
"${train[@]}" --resume auto

echo "== 6/6  where things are"
"$bin/qwen-swe" status "$out/run"
cat <<EOF

demo finished:
  model folder     $out/model
  shards + report  $out/shards (report.md, durations.png)
  run directory    $out/run (metrics.jsonl, status.json, report.json, checkpoints/)
  TensorBoard      $bin/tensorboard --logdir $out/run/tb
EOF
