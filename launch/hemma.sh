#!/usr/bin/env bash
# Train on Hemma: one AMD Radeon AI PRO R9700 (32 GB, ROCm 7.1), one process, bf16 autocast, sdpa attention.
#
#   RUN_CONFIG=runs/pilot.yaml launch/hemma.sh                 # start, or continue after a stop (--resume auto)
#   RUN_CONFIG=runs/pilot.yaml DRY_RUN=1 launch/hemma.sh       # checks and plan only
#   PRESET=pilot launch/hemma.sh model.path=/models/Qwen3-TTS-12Hz-1.7B-Base data.shards=/data/shards \
#       run.output_dir=/runs/pilot1
#
# Checks first: a GPU is visible, torch is a ROCm build, the run config is valid, the run directory's disk has room
# for checkpoints. Environment: see launch/common.sh (RUN_CONFIG, PRESET, ACCELERATE_CONFIG, MIN_FREE_GB, DRY_RUN,
# QWEN_SWE_ALLOW_CPU, PYTHON). In a container, see launch/Containerfile.hemma.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$REPO_DIR/accelerate_configs/hemma_r9700.yaml}
preflight hemma -- "$@"
launch_training "$@"
