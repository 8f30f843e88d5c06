"""A real two-host run on one machine: two network namespaces joined by a veth pair, each running
launch/multinode.sh with its own per-host accelerate config (1 process per host, gloo, DeepSpeed ZeRO-2 on CPU),
through tools/multinode_netns.sh. The run checkpoints; a resume across both hosts from the middle checkpoint must
reproduce the uninterrupted run's losses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from qwen_swe.data.synthetic import synthetic_shards

from ..launching import ROOT, losses

TOOL = ROOT / "tools" / "multinode_netns.sh"
STEPS, MIDDLE = 4, 2


def namespaces_unavailable() -> str | None:
    """Why `ip netns add` cannot work here (not root, no CAP_NET_ADMIN, no iproute2), or None."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"qswprobe{uuid.uuid4().hex[:6]}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"cannot create network namespaces (needs root or CAP_NET_ADMIN): {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


_WHY_NOT = namespaces_unavailable()  # probed once per process
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))


@pytest.fixture(scope="module")
def run_config(tiny_06b, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multinode")
    shards = synthetic_shards(root / "shards", shards=4, per_shard=24, eval_samples=6)
    path = root / "run.yaml"
    # smoke preset underneath; the tiny model's 150k-row text embedding frozen so checkpoints stay small
    path.write_text(json.dumps({
        "model": {"path": str(tiny_06b)},
        "data": {"shards": str(shards), "frame_budget": 200, "num_workers": 0},
        "train": {"freeze": ["text_embedding"]},
        "schedule": {"total_steps": STEPS},
        "run": {"output_dir": str(root / "uninterrupted"), "max_steps": STEPS, "checkpoint_every": MIDDLE,
                "eval_every": 0},
    }))
    return path


def run_two_hosts(run_config: Path, logs: Path, *train_args: str, timeout: float = 600) -> str:
    """Both hosts through tools/multinode_netns.sh; returns both hosts' logs. SIGTERM on timeout so the tool's trap
    removes the namespaces."""
    prefix = f"qst{uuid.uuid4().hex[:5]}"
    env = {**os.environ, "RUN_CONFIG": str(run_config), "PRESET": "smoke", "LOG_DIR": str(logs),
           "NETNS_PREFIX": prefix, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(["bash", str(TOOL), *train_args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        raise AssertionError(f"two-host run timed out: {output[-3000:]}")
    host_logs = "\n".join((logs / f"node{rank}.log").read_text() for rank in (0, 1) if (logs / f"node{rank}.log").exists())
    assert process.returncode == 0, (output + host_logs)[-6000:]
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in leftovers, leftovers  # the tool removed its namespaces
    return host_logs


def test_two_hosts_train_checkpoint_and_resume_exactly(run_config, tmp_path):
    uninterrupted = Path(json.loads(run_config.read_text())["run"]["output_dir"])
    logs = run_two_hosts(run_config, tmp_path / "logs-first")
    # each host ran its own file with its own rank, meeting at host 0's namespace address
    node0, node1 = (tmp_path / "logs-first" / "node0.log").read_text(), (tmp_path / "logs-first" / "node1.log").read_text()
    assert "multinode_node0.yaml" in node0 and "--machine_rank 0" in node0, node0[-2000:]
    assert "multinode_node1.yaml" in node1 and "--machine_rank 1" in node1, node1[-2000:]
    assert "--main_process_ip 10.77.0.1" in node1 and "ZeRO-2" in node1
    assert json.loads((uninterrupted / "run_manifest.json").read_text())["world_size"] == 2
    assert sorted(losses(uninterrupted)) == list(range(1, STEPS + 1)), logs[-3000:]
    final = uninterrupted / "checkpoints" / f"step-{STEPS:08d}"
    assert (final / "COMPLETE").exists()
    # one ZeRO-2 optimizer shard per rank, i.e. one written from each host into the shared run directory
    assert len(list(final.rglob("*optim_states.pt"))) == 2

    # resume across both hosts from the middle checkpoint the two-host run wrote
    resumed = tmp_path / "resumed"
    shutil.copytree(uninterrupted, resumed)
    for later in (resumed / "checkpoints").glob("step-*"):
        if later.name > f"step-{MIDDLE:08d}":
            shutil.rmtree(later)
    (resumed / "checkpoints" / "latest").write_text(f"step-{MIDDLE:08d}\n")
    metrics = resumed / "metrics.jsonl"  # keep only what the middle checkpoint had: the resume must write the rest
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:MIDDLE]))
    logs = run_two_hosts(run_config, tmp_path / "logs-resume", f"run.output_dir={resumed}")
    assert logs.count(f"at step {MIDDLE}") >= 1 and "resumed from" in logs, logs[-3000:]
    ours, theirs = losses(resumed), losses(uninterrupted)
    assert sorted(ours) == list(range(1, STEPS + 1))
    for step in range(MIDDLE + 1, STEPS + 1):
        assert ours[step] == pytest.approx(theirs[step], rel=1e-6, abs=1e-7), (step, ours[step], theirs[step])
    assert (resumed / "checkpoints" / f"step-{STEPS:08d}" / "COMPLETE").exists()
