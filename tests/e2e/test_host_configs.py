"""Per-host accelerate configs as accelerate itself loads them, the DeepSpeed and CPU accelerate configs consistent
with each other, the launch scripts' checks on this GPU-less machine, and the per-host attention choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from qwen_swe.data.synthetic import synthetic_shards

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "accelerate_configs"

# host file -> (distributed type, processes, machines, ZeRO stage or None, machine rank)
GPU_HOSTS = {
    "hemma_r9700.yaml": ("NO", 1, 1, None, 0),
    "h100_x1.yaml": ("NO", 1, 1, None, 0),
    "h100_x8_zero2.yaml": ("DEEPSPEED", 8, 1, 2, 0),
    "h100_x8_zero3.yaml": ("DEEPSPEED", 8, 1, 3, 0),
    "multinode_node0.yaml": ("DEEPSPEED", 16, 2, 2, 0),
    "multinode_node1.yaml": ("DEEPSPEED", 16, 2, 2, 1),
}


def test_every_accelerate_config_loads_and_gpu_hosts_are_bf16_with_the_right_shape():
    from accelerate.commands.config.config_args import load_config_from_file

    readme = (ROOT / "README.md").read_text()
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config_from_file(str(path))  # raises on unknown keys or values
        assert path.name in readme, f"{path.name} is missing from the README's config table"
        kind = str(config.distributed_type).split(".")[-1]
        ds = None
        if kind == "DEEPSPEED":
            ds_file = ROOT / config.deepspeed_config["deepspeed_config_file"]
            assert ds_file.is_file(), path.name
            ds = json.loads(ds_file.read_text())
            assert config.use_cpu is False, f"{path.name}: use_cpu true runs one process under DeepSpeed"
        if path.name.startswith("cpu_"):
            continue
        expected_kind, processes, machines, stage, rank = GPU_HOSTS[path.name]
        assert (kind, config.num_processes, config.num_machines, config.machine_rank) == \
            (expected_kind, processes, machines, rank), path.name
        if ds is None:
            assert config.mixed_precision == "bf16", path.name
        else:
            assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["stage"] == stage, path.name
        if machines > 1:  # each host starts its own processes: no pdsh/ssh from host 0
            assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
            assert config.main_process_ip and config.main_process_port
    assert set(GPU_HOSTS) <= {p.name for p in CONFIGS.glob("*.yaml")}


def test_deepspeed_and_accelerate_configs_are_consistent():
    for path in sorted((ROOT / "ds_configs").glob("*.json")):
        ds = json.loads(path.read_text())
        assert not ds.get("fp16", {}).get("enabled", False), f"{path.name}: fp16 must never be enabled"
        assert ds["bf16"]["enabled"] is (not path.name.startswith("cpu_")), path.name
        assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_clipping"] == "auto"
        stage = ds["zero_optimization"]["stage"]
        if stage == 3:
            assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True, path.name
        assert ("optimizer" in ds) == ("offload" in path.name), path.name
        assert path.name in (ROOT / "ds_configs" / "README.md").read_text(), f"{path.name} missing from README"
    for name in ("cpu_zero2", "cpu_zero3", "cpu_zero2_bf16", "cpu_ddp_bf16"):
        launch = yaml.safe_load((ROOT / "accelerate_configs" / f"{name}.yaml").read_text())
        assert launch["num_processes"] == 2 and launch["use_cpu"] is False, name
        if launch["distributed_type"] == "DEEPSPEED":
            assert (ROOT / launch["deepspeed_config"]["deepspeed_config_file"]).is_file(), name
        else:
            assert launch["mixed_precision"] == "bf16"


@pytest.fixture(scope="module")
def run_config(tiny_06b, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hosts")
    shards = synthetic_shards(root / "shards", shards=1, per_shard=4)
    path = root / "run.yaml"
    path.write_text(json.dumps({"model": {"path": str(tiny_06b)}, "data": {"shards": str(shards)},
                                "run": {"output_dir": str(root / "run")}}))
    return path


def script(name: str, run_config: Path | None, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("QWEN_SWE_ALLOW_CPU", "DRY_RUN", "NODE_RANK", "MASTER_ADDR", "GPUS", "MIN_FREE_GB")}
    environment.update(env)
    if run_config is not None:
        environment["RUN_CONFIG"] = str(run_config)
    return subprocess.run(["bash", str(ROOT / "launch" / name), *args], capture_output=True, text=True,
                          env=environment, timeout=300, cwd=run_config.parent if run_config else ROOT)


def test_hemma_without_a_gpu_fails_naming_every_problem(run_config):
    result = script("hemma.sh", run_config, MIN_FREE_GB="1000000000")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no GPU visible" in result.stderr and "needs a ROCm build" in result.stderr
    assert "checkpoints need about" in result.stderr  # the disk check ran too
    assert "nothing was launched" in result.stderr and "command:" not in result.stdout


def test_hemma_dry_run_on_cpu_prints_the_plan_and_the_command(run_config):
    result = script("hemma.sh", run_config, "optim.lr=1e-4", "--allow-changes", "optim.lr", "data.frame_budget=200000",
                    QWEN_SWE_ALLOW_CPU="1", DRY_RUN="1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "warning: no GPU visible" in result.stderr
    assert "hemma_r9700.yaml: NO, 1 process(es)" in out and "attention   sdpa" in out
    assert "adamw, lr 0.0001" in out  # overrides reach the resolved config
    # qwen-swe plan's estimate for Hemma's card: this frame budget does not fit, which warns and advises
    assert "memory plan" in out and "of 32 GB: does NOT fit" in out and "recommendation:" in out
    assert "does not fit on r9700-32gb" in result.stderr
    command = out.split("command:")[1]
    assert f"--config {run_config}" in command
    assert "--resume auto optim.lr=1e-4 --allow-changes optim.lr data.frame_budget=200000" in command
    assert "DRY_RUN=1: not launching" in out


def test_h100_picks_the_zero_config_and_process_count_and_checks_the_run_config(run_config):
    result = script("h100.sh", run_config, QWEN_SWE_ALLOW_CPU="1", DRY_RUN="1", GPUS="4", ZERO_STAGE="3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "needs a CUDA build" in result.stderr
    assert "h100_x8_zero3.yaml: DEEPSPEED, 4 process(es)" in result.stdout and "ZeRO-3, bf16" in result.stdout
    assert "--num_processes 4" in result.stdout and "--deepspeed_config_file" in result.stdout
    assert "h100-80gb, 1 host(s) x 4 device(s), DeepSpeed ZeRO-3" in result.stdout  # the memory plan's setup


def test_multinode_takes_rank_and_rendezvous_from_the_environment(run_config):
    missing = script("multinode.sh", run_config)
    assert missing.returncode == 2 and "set NODE_RANK" in missing.stderr
    usage = script("multinode.sh", None, "--help")
    assert usage.returncode == 0 and "MASTER_ADDR" in usage.stdout and "RUN_CONFIG" in usage.stdout
    result = script("multinode.sh", run_config, NODE_RANK="2", NUM_MACHINES="3", GPUS_PER_NODE="8",
                    MASTER_ADDR="192.0.2.7", MASTER_PORT="29611", DS_CONFIG=str(ROOT / "ds_configs" / "zero3.json"),
                    QWEN_SWE_ALLOW_CPU="1", DRY_RUN="1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "multinode 2 of 3" in out and "24 process(es) on 3 host(s), 8 here, rendezvous 192.0.2.7:29611" in out
    assert "multinode_node1.yaml" in out  # hosts above 1 reuse the node1 file with their own rank
    assert "3 host(s) x 8 device(s), DeepSpeed ZeRO-3" in out
    for expected in ("--num_processes 24", "--num_machines 3", "--machine_rank 2", "--main_process_ip 192.0.2.7",
                     "--main_process_port 29611", "zero3.json"):
        assert expected in out.split("command:")[1], expected


def preflight(*args: str):
    """launch/preflight.py in this process (torch is already imported here, so this is quick)."""
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("launch_preflight", ROOT / "launch" / "preflight.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return CliRunner().invoke(module.main, list(args))


def test_preflight_refuses_a_bad_rank_a_bad_field_and_a_missing_deepspeed_file(run_config):
    multinode = str(CONFIGS / "multinode_node1.yaml")
    outside = preflight("--host", "multinode", "--accelerate-config", multinode, "--node-rank", "5", "--allow-cpu",
                        "--run-config", str(run_config))
    assert outside.exit_code == 2 and "host rank 5 is outside 0..1" in outside.output, outside.output
    refused = preflight("--host", "multinode", "--accelerate-config", multinode, "--allow-cpu",
                        "--run-config", str(run_config), "--", "data.frame_budget=-1", "--allow-changes", "x")
    assert refused.exit_code == 2 and "data.frame_budget: must be > 0" in refused.output, refused.output
    missing = preflight("--host", "h100", "--accelerate-config", multinode, "--ds-config", "ds_configs/nothing.json")
    assert missing.exit_code == 2 and "DS_CONFIG: DeepSpeed config 'ds_configs/nothing.json' not found" \
        in missing.output, missing.output


# ------------------------------------------------------------------------------------------ attention per host
def test_attention_is_chosen_per_host(monkeypatch):
    from qwen_swe.train import precision

    monkeypatch.setattr(precision, "_flash_attn_import_error", lambda: None)  # flash-attn installed
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert precision.resolve_attn_implementation("auto", "cuda", "bf16-mixed") == ("flash_attention_2", None)
    monkeypatch.setattr(torch.version, "hip", "7.1.25424", raising=False)  # Hemma: ROCm reports device "cuda"
    assert precision.resolve_attn_implementation("auto", "cuda", "bf16-mixed") == ("sdpa", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(precision, "_flash_attn_import_error", lambda: "ModuleNotFoundError: flash_attn")
    attention, warning = precision.resolve_attn_implementation("auto", "cuda", "bf16-mixed")
    assert attention == "sdpa" and "flash-attn is not importable" in warning
