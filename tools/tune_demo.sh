#!/usr/bin/env bash
# `make tune-demo`: the two-phase workflow on the Swedish demo corpus with a tiny random-weight Qwen3-TTS.
# Phase 1: a small Optuna study of short trials (TPE, median pruner on the held-out loss at every eval), with its
# report, plots and best.yaml. Phase 2: best.yaml trained longer, in rounds: every eval the quality loop synthesises
# and scores the evaluation sentences, keeps the best round as `best` and stops the run when its patience runs out.
# A random tiny model says nothing about how good speech sounds; the demo shows the machinery, not the numbers.
# Environment: TUNE_DEMO_OUT (default ./tune_demo_out), TUNE_DEMO_TRIALS (default 6).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${TUNE_DEMO_OUT:-tune_demo_out}"
trials="${TUNE_DEMO_TRIALS:-6}"
bin=.venv/bin
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TQDM_DISABLE=1  # progress bars of every trial would bury the study's own lines
rm -rf "$out"
mkdir -p "$out"

echo "== 1/5 a tiny random-weight Qwen3-TTS (0.6B shape) and shards of the demo corpus (one speaker held out)"
"$bin/qwen-swe" init-tiny "$out/model" --shape 0.6b --with-swedish
"$bin/qwen-swe" shards build "$out/shards" --model "$out/model" --manifest qwen_swe/demo_corpus/manifest.jsonl \
  --eval-speakers 1 --min-seconds 0.5 --samples-per-shard 8 --no-progress

echo "== 2/5 the short run every trial starts from, and the search space"
cat > "$out/short.yaml" <<YAML
model: {path: $out/model}
data: {shards: $out/shards, frame_budget: 384, num_workers: 0}
train: {freeze: [text_embedding]}
schedule: {warmup_steps: 2, total_steps: 8}
run: {output_dir: $out/unused, max_steps: 8, eval_every: 2, eval_batches: 2, checkpoint_every: 100, keep_last: 1,
      activation_stats_every: 0, tensorboard: false}
YAML
cat > "$out/space.yaml" <<'YAML'
optim.lr: {low: 1.0e-5, high: 3.0e-2, log: true}
schedule.warmup_steps: {low: 0, high: 4}
objective.sub_talker_weight: {low: 0.1, high: 1.0}
optim.lr_multipliers.talker\.text_projection: {low: 1, high: 10, log: true}
YAML
cat "$out/space.yaml"

echo "== 3/5 phase 1: qwen-swe tune, $trials trials (TPE seeded, the first 3 at random, median pruner)"
"$bin/qwen-swe" tune --preset smoke --config "$out/short.yaml" --space "$out/space.yaml" --trials "$trials" \
  --study-dir "$out/study" --random-trials 3 --pruner-startup-trials 2
sed -n '/^## Best trial/,/^## Search space/p' "$out/study/report.md"
sed -n '/^## Trials/,/^## Plots/p' "$out/study/report.md"

echo "== 4/5 phase 2: best.yaml trained longer, in rounds; the quality loop scores every eval and stops on patience"
"$bin/qwen-swe" train --config "$out/study/best.yaml" run.output_dir="$out/long" run.max_steps=24 \
  schedule.total_steps=24 run.eval_every=4 run.quality.every_evals=1 run.quality.speakers=1 \
  run.quality.max_sentences=2 run.quality.max_new_tokens=40 run.quality.metric=duration_error \
  run.quality.patience=2 run.tensorboard=true

echo "== 5/5 how phase 2 ended"
"$bin/qwen-swe" status "$out/long"
cat "$out/long/checkpoints/best.json"
cat <<EOF

tune demo finished:
  study            $out/study (study.db, report.md, plots/*.png, best.yaml, trials/trial-N/)
  phase 2 run      $out/long (report.json: stop_reason and quality rounds; evaluations/step-N/: eval.json, WAVs)
  TensorBoard      $bin/tensorboard --logdir $out/long  (quality/* scalars and audio)
  live study view  optuna-dashboard sqlite:///$PWD/$out/study/study.db  (pip install optuna-dashboard)
EOF
