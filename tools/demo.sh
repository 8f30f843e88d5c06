#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults (a tiny random-weight Qwen3-TTS and the Swedish
# demo corpus): model -> parity -> shards -> 2-process DeepSpeed ZeRO-2 training that is interrupted and resumed
# -> export (base and custom-voice) -> synthesis through the official qwen_tts API -> evaluation -> promotion.
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

echo "== 1/10 a tiny random-weight Qwen3-TTS (0.6B shape) with Swedish registered"
"$bin/qwen-swe" init-tiny "$out/model" --shape 0.6b --with-swedish

echo "== 2/10 parity: the training graph equals what qwen_tts inference runs"
"$bin/qwen-swe" parity --model "$out/model" --layout all --frames 3

echo "== 3/10 shards from the Swedish demo corpus (one speaker held out for eval)"
"$bin/qwen-swe" shards build "$out/shards" --model "$out/model" --manifest qwen_swe/demo_corpus/manifest.jsonl \
  --eval-speakers 1 --min-seconds 0.5 --samples-per-shard 8 --no-progress
"$bin/qwen-swe" shards verify "$out/shards"
"$bin/qwen-swe" shards inspect "$out/shards"

train=("$bin/qwen-swe" launch --config_file accelerate_configs/cpu_zero2.yaml -m qwen_swe train --preset smoke
       "model.path=$out/model" "data.shards=$out/shards" "run.output_dir=$out/run" "run.max_steps=$steps"
       "schedule.total_steps=$steps" "run.checkpoint_every=5" "run.eval_every=5" "data.frame_budget=384"
       "data.num_workers=1" "run.synth_every_evals=3" "run.synth_sentences=1")

echo "== 4/10 training: qwen-swe launch (accelerate launch), 2 CPU processes, DeepSpeed ZeRO-2; interrupted at step $stop_at"
"${train[@]}" &
launcher=$!
metrics="$out/run/metrics.jsonl"
until [ -f "$metrics" ] && [ "$(wc -l < "$metrics")" -ge "$stop_at" ]; do
  kill -0 "$launcher" 2>/dev/null || { echo "training ended before the interruption"; exit 1; }
  sleep 0.5
done
echo "-- sending SIGTERM to qwen-swe launch (as a scheduler or Ctrl-C would): checkpoint, then exit 0"
kill -TERM "$launcher"
wait "$launcher"

echo "== 5/10 resuming from the newest complete checkpoint"
"${train[@]}" --resume auto

"$bin/qwen-swe" status "$out/run"

echo "== 6/10 export: merged fp32-consolidated weights, Swedish registered, loadable by qwen_tts as is"
"$bin/qwen-swe" export "$out/run" --out "$out/export/base"
"$bin/qwen-swe" export "$out/run" --out "$out/export/voices" --mode custom-voice

echo "== 7/10 synthesis through Qwen3TTSModel: a held-out speaker's voice cloned, and a named training voice"
reference=qwen_swe/demo_corpus/audio/spk3_003.flac
sentence="Hej! Det här är en svensk röst från en liten demomodell."
"$bin/qwen-swe" synth "$out/export/base" --out "$out/synth/clone" --ref-audio "$reference" --text "$sentence" \
  --max-new-tokens 200
"$bin/qwen-swe" synth "$out/export/voices" --out "$out/synth/voice" --speaker spk0 --text "$sentence" \
  --max-new-tokens 200

echo "== 8/10 evaluation of the untrained start and the trained export (held-out loss, synthesis metrics)"
eval_args=(--shards "$out/shards" --max-sentences 3 --speakers 1 --max-new-tokens 100)
"$bin/qwen-swe" eval "$out/model" --out "$out/eval/start" "${eval_args[@]}"
"$bin/qwen-swe" eval "$out/export/base" --out "$out/eval/trained" "${eval_args[@]}"

echo "== 9/10 promotion: the trained model replaces the start only if it is no worse on the held-out loss"
# A tiny random model says nothing about intelligibility, so this demo gates on the held-out loss alone; a real run
# adds --asr (WER/CER) and the default gates.
"$bin/qwen-swe" compare "$out/eval/start" "$out/eval/trained" --gates heldout_loss --registry "$out/registry" \
  || echo "-- the trained model was not promoted (see the comparison above)"

echo "== 10/10 the model card, with the evaluation"
"$bin/qwen-swe" export "$out/run" --out "$out/export/base" --eval-json "$out/eval/trained/eval.json" --overwrite
sed -n '1,20p' "$out/export/base/README.md"
cat <<EOF

demo finished:
  model folder     $out/model (the untrained start)
  shards + report  $out/shards (report.md, durations.png)
  run directory    $out/run (metrics.jsonl, status.json, report.json, checkpoints/)
  exports          $out/export/base (voice cloning), $out/export/voices (named voices spk0-spk2); README.md in each
  synthesised WAVs $out/synth/clone/*.wav, $out/synth/voice/*.wav (stats in synth.json)
  evaluation       $out/eval/trained/eval.md (eval.json), comparison in $out/eval/trained/comparison.md
  registry         $out/registry (qwen-swe rollback $out/registry undoes the promotion)
  TensorBoard      $bin/tensorboard --logdir $out  (training curves, in-training audio, eval audio)
EOF
