#!/usr/bin/env bash
# Train across several hosts: run this on every host, each with its own NODE_RANK (0 runs the rendezvous).
#
#   # host 0                                          # host 1
#   NODE_RANK=0 MASTER_ADDR=10.0.0.5 \                NODE_RANK=1 MASTER_ADDR=10.0.0.5 \
#     RUN_CONFIG=runs/full.yaml launch/multinode.sh     RUN_CONFIG=runs/full.yaml launch/multinode.sh
#
# Environment (besides launch/common.sh's RUN_CONFIG, PRESET, MIN_FREE_GB, DRY_RUN, QWEN_SWE_ALLOW_CPU, PYTHON):
#   NODE_RANK       this host's rank, 0..NUM_MACHINES-1 (default: machine_rank of ACCELERATE_CONFIG)
#   ACCELERATE_CONFIG  default accelerate_configs/multinode_node$NODE_RANK.yaml (ranks above 1 use the node1 file
#                   with their rank as an override)
#   MASTER_ADDR     host 0's address as the others reach it (default: main_process_ip of the file)
#   MASTER_PORT     rendezvous port on host 0 (default: the file's main_process_port, else 29500)
#   NUM_MACHINES    hosts in the job (default: the file's num_machines)
#   GPUS_PER_NODE   processes per host (default: the file's num_processes / num_machines)
#   DS_CONFIG       DeepSpeed JSON instead of the file's (e.g. ds_configs/zero3.json)
#   BACKEND         cuda or rocm: the torch build every host must have (default: either)
#   GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME  the network interface to use when a host has several
# Every host must see the same run directory (a shared filesystem): all ranks write their parts of each
# checkpoint into it, and --resume auto on every host reads the same `latest`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -z ${ACCELERATE_CONFIG:-} ]]; then
    if [[ -z ${NODE_RANK:-} ]]; then
        echo "multinode.sh: set NODE_RANK (0 on the host that runs the rendezvous, 1.. on the others)" \
             "or ACCELERATE_CONFIG to a per-host file" >&2
        exit 2
    fi
    ACCELERATE_CONFIG=$REPO_DIR/accelerate_configs/multinode_node${NODE_RANK}.yaml
    [[ -f $ACCELERATE_CONFIG ]] || ACCELERATE_CONFIG=$REPO_DIR/accelerate_configs/multinode_node1.yaml
fi
host_options=()
[[ -n ${NODE_RANK:-} ]] && host_options+=(--node-rank "$NODE_RANK")
[[ -n ${MASTER_ADDR:-} ]] && host_options+=(--master-addr "$MASTER_ADDR")
[[ -n ${MASTER_PORT:-} ]] && host_options+=(--master-port "$MASTER_PORT")
[[ -n ${NUM_MACHINES:-} ]] && host_options+=(--num-machines "$NUM_MACHINES")
[[ -n ${GPUS_PER_NODE:-} ]] && host_options+=(--gpus-per-node "$GPUS_PER_NODE")
[[ -n ${DS_CONFIG:-} ]] && host_options+=(--ds-config "$DS_CONFIG")
[[ -n ${BACKEND:-} ]] && host_options+=(--backend "$BACKEND")
preflight multinode "${host_options[@]}" -- "$@"
launch_training "$@"
