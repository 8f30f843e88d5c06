# Shared by hemma.sh, h100.sh and multinode.sh (sourced, not run): find the checkout and its Python, run the
# preflight checks, print the plan, then hand over to `qwen-swe launch` (`accelerate launch` with a clean stop).
#
# Environment understood by every launch script:
#   RUN_CONFIG          run config YAML (required unless PRESET is set)
#   PRESET              smoke | pilot | full, applied under RUN_CONFIG
#   ACCELERATE_CONFIG   accelerate config file (default: the host's file in accelerate_configs/)
#   MIN_FREE_GB         free disk needed under run.output_dir (default: estimated from the model size)
#   DRY_RUN=1           check and print the plan and the command, do not launch
#   QWEN_SWE_ALLOW_CPU=1  GPU and torch-build problems only warn (to check a plan, or simulate on CPU)
#   PYTHON              interpreter with qwen-swe installed (default: .venv/bin/python of the checkout, else python3)
# Arguments after the script name go to `qwen_swe train` (dotted overrides such as optim.lr=1e-4, or flags such as
# --allow-changes world_size).

# -h / --help: the comment at the top of the calling script, then this one's.
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    for file in "$0" "${BASH_SOURCE[0]}"; do
        sed -n '/^#!/d; /^#/!q; s/^# \{0,1\}//p' "$file"
        echo
    done
    exit 0
fi

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAUNCH_DIR")
# Paths (RUN_CONFIG, ACCELERATE_CONFIG, DS_CONFIG, paths inside the run config) are relative to where the script is
# run from; the DeepSpeed file an accelerate config names is looked up there, then in the repository.

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO_DIR/.venv/bin/python ]]; then PYTHON=$REPO_DIR/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
# This checkout first on the path, so the code that runs is the code that was checked out.
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
# DeepSpeed compiles small ops on first use; keep them between runs.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/qwen-swe/torch_extensions}

LAUNCH_ARGS=()

# preflight HOST [preflight options...] -- [train args...]: check the host, print the plan, fill LAUNCH_ARGS.
preflight() {
    local host=$1; shift
    local options=() train_args=()
    while [[ $# -gt 0 && $1 != -- ]]; do options+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    train_args=("$@")
    [[ -n ${RUN_CONFIG:-} ]] && options+=(--run-config "$RUN_CONFIG")
    [[ -n ${PRESET:-} ]] && options+=(--preset "$PRESET")
    [[ -n ${MIN_FREE_GB:-} ]] && options+=(--min-free-gb "$MIN_FREE_GB")
    [[ ${QWEN_SWE_ALLOW_CPU:-0} == 1 ]] && options+=(--allow-cpu)
    local args_file
    args_file=$(mktemp)
    if ! "$PYTHON" "$LAUNCH_DIR/preflight.py" --host "$host" --accelerate-config "$ACCELERATE_CONFIG" \
            --emit-args "$args_file" "${options[@]}" -- "${train_args[@]}"; then
        rm -f "$args_file"
        echo "$host: preflight failed; nothing was launched" >&2
        exit 2
    fi
    mapfile -t LAUNCH_ARGS < "$args_file"
    rm -f "$args_file"
}

# launch_training [train args...]: print the command, then replace this shell with it (unless DRY_RUN=1).
launch_training() {
    # `qwen-swe launch` is `accelerate launch` with a clean stop (SIGTERM: every rank checkpoints, exit 0)
    local command=("$PYTHON" -m qwen_swe launch --config_file "$ACCELERATE_CONFIG" "${LAUNCH_ARGS[@]}" -m qwen_swe train)
    [[ -n ${RUN_CONFIG:-} ]] && command+=(--config "$RUN_CONFIG")
    [[ -n ${PRESET:-} ]] && command+=(--preset "$PRESET")
    command+=(--resume auto "$@")
    printf 'command:'; printf ' %q' "${command[@]}"; printf '\n'
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        echo "DRY_RUN=1: not launching"
        exit 0
    fi
    exec "${command[@]}"
}
