#!/usr/bin/env bash
# A real two-host training run on one Linux machine: each "host" is a network namespace with its own address on a
# veth pair (10.77.0.1 and 10.77.0.2), and each runs launch/multinode.sh with its own per-host accelerate config
# (accelerate_configs/multinode_node0.yaml, multinode_node1.yaml): 1 process per host, gloo over the veth link,
# DeepSpeed ZeRO-2 on the CPU accelerator. Checkpoints go to one run directory that both namespaces see, as a
# shared filesystem would be on a real cluster (namespaces separate the network, not the files).
#
#   RUN_CONFIG=run.yaml tools/multinode_netns.sh                     # train (resumes if the run has a checkpoint)
#   RUN_CONFIG=run.yaml tools/multinode_netns.sh run.max_steps=8      # arguments go to `qwen_swe train`
#
# Needs root or CAP_NET_ADMIN (`ip netns add`); exits 77 when namespaces cannot be created. The namespaces and the
# veth pair are removed on exit, also after a failure or Ctrl-C.
#
# Environment:
#   RUN_CONFIG / PRESET  the run config, as for the launch scripts
#   DS_CONFIG            DeepSpeed config (default ds_configs/cpu_zero2_fp32.json: fp32, since CPU bf16 is slow)
#   MASTER_PORT          rendezvous port inside namespace 0 (default 29500; namespaces have their own ports)
#   NETNS_PREFIX         namespace/interface name prefix (default qsw<pid>, so several runs can coexist)
#   LOG_DIR              where node0.log and node1.log go (default: a new temporary directory)
# Anything else launch/multinode.sh reads (PYTHON, MIN_FREE_GB, ...) is passed through.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '/^#!/d; /^#/!q; s/^# \{0,1\}//p' "$0"
    exit 0
fi

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${NETNS_PREFIX:-qsw$$}
SUBNET=10.77.0
LOG_DIR=${LOG_DIR:-$(mktemp -d -t multinode-netns.XXXXXX)}
mkdir -p "$LOG_DIR"

cleanup() {
    local rank
    for rank in 0 1; do
        ip netns pids "${PREFIX}n$rank" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns delete "${PREFIX}n$rank" 2>/dev/null || true   # deleting a namespace deletes its veth end
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add "${PREFIX}n0" 2>"$LOG_DIR/netns.err"; then
    echo "cannot create network namespaces ($(cat "$LOG_DIR/netns.err")); this needs root or CAP_NET_ADMIN" >&2
    exit 77
fi
ip netns add "${PREFIX}n1"
ip link add "${PREFIX}v0" type veth peer name "${PREFIX}v1"
for rank in 0 1; do
    ip link set "${PREFIX}v$rank" netns "${PREFIX}n$rank"
    ip -n "${PREFIX}n$rank" addr add "$SUBNET.$((rank + 1))/24" dev "${PREFIX}v$rank"
    ip -n "${PREFIX}n$rank" link set lo up
    ip -n "${PREFIX}n$rank" link set "${PREFIX}v$rank" up
done
echo "hosts: ${PREFIX}n0 at $SUBNET.1, ${PREFIX}n1 at $SUBNET.2; logs in $LOG_DIR"

# One host: launch/multinode.sh inside its namespace. GLOO_SOCKET_IFNAME pins gloo to the veth link (otherwise it
# resolves the hostname, which both namespaces share, to an address neither owns).
run_host() {
    local rank=$1; shift
    ip netns exec "${PREFIX}n$rank" env \
        NODE_RANK="$rank" NUM_MACHINES=2 GPUS_PER_NODE=1 MASTER_ADDR="$SUBNET.1" MASTER_PORT="${MASTER_PORT:-29500}" \
        DS_CONFIG="${DS_CONFIG:-ds_configs/cpu_zero2_fp32.json}" QWEN_SWE_ALLOW_CPU=1 \
        GLOO_SOCKET_IFNAME="${PREFIX}v$rank" TP_SOCKET_IFNAME="${PREFIX}v$rank" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
        "$REPO_DIR/launch/multinode.sh" "$@" >"$LOG_DIR/node$rank.log" 2>&1
}

run_host 0 "$@" & pids[0]=$!
run_host 1 "$@" & pids[1]=$!
# When one host fails, stop the other instead of letting it wait for the rendezvous until it times out.
status=0
for _ in 0 1; do
    finished=
    code=0
    wait -n -p finished "${pids[@]}" || code=$?
    for rank in 0 1; do
        [[ ${pids[$rank]:-} == "$finished" ]] || continue
        unset "pids[$rank]"
        echo "host $rank exited with $code"
        if [[ $code -ne 0 ]]; then
            status=1
            echo "----- last lines of $LOG_DIR/node$rank.log" >&2
            tail -n 40 "$LOG_DIR/node$rank.log" >&2
            other=$((1 - rank))
            ip netns pids "${PREFIX}n$other" 2>/dev/null | xargs -r kill 2>/dev/null || true
        fi
    done
done
exit $status
