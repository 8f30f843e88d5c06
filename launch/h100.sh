#!/usr/bin/env bash
# Train on one host with one to eight NVIDIA H100s.
#
#   RUN_CONFIG=runs/full.yaml launch/h100.sh                   # all visible GPUs; ZeRO-2 when more than one
#   RUN_CONFIG=runs/full.yaml GPUS=4 launch/h100.sh            # four of them
#   RUN_CONFIG=runs/full.yaml ZERO_STAGE=3 launch/h100.sh      # ZeRO-3 when ZeRO-2 runs out of memory
#   RUN_CONFIG=runs/full.yaml DRY_RUN=1 launch/h100.sh         # checks and plan only
#
# Environment (besides launch/common.sh's RUN_CONFIG, PRESET, MIN_FREE_GB, DRY_RUN, QWEN_SWE_ALLOW_CPU, PYTHON):
#   GPUS         processes to start (default: GPUs nvidia-smi lists); 1 -> accelerate_configs/h100_x1.yaml,
#                more -> accelerate_configs/h100_x8_zero$ZERO_STAGE.yaml with that many processes
#   ZERO_STAGE   2 (default) or 3, for more than one GPU
#   ACCELERATE_CONFIG  any accelerate config instead (GPUS, when set, still overrides its process count)
# Checks first: enough GPUs visible, torch is a CUDA build, the run config is valid, disk for checkpoints.
# Attention: flash-attention 2 when flash-attn imports, otherwise sdpa with a warning (the plan shows which).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -z ${ACCELERATE_CONFIG:-} ]]; then
    if [[ -z ${GPUS:-} ]]; then
        if command -v nvidia-smi >/dev/null; then GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
        [[ ${GPUS:-0} -ge 1 ]] || GPUS=1
    fi
    case ${ZERO_STAGE:-2} in
        2|3) ;;
        *) echo "ZERO_STAGE=${ZERO_STAGE}: use 2 or 3" >&2; exit 2 ;;
    esac
    if [[ $GPUS -eq 1 ]]; then
        ACCELERATE_CONFIG=$REPO_DIR/accelerate_configs/h100_x1.yaml
    else
        ACCELERATE_CONFIG=$REPO_DIR/accelerate_configs/h100_x8_zero${ZERO_STAGE:-2}.yaml
    fi
fi
process_options=()
[[ -n ${GPUS:-} ]] && process_options=(--num-processes "$GPUS")
preflight h100 "${process_options[@]}" -- "$@"
launch_training "$@"
