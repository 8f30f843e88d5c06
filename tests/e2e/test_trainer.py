"""The trainer under real `accelerate launch` runs (2 CPU processes): exact resume after SIGTERM and kill -9 on DDP,
ZeRO-2 and ZeRO-3, strategies that agree, refusal of changed math, export of a ZeRO-3 run."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from qwen_swe.data.synthetic import synthetic_shards

from ..launching import ROOT, environment, launch, losses, metrics_lines, wait_for

STEPS = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("train-shards"), shards=4, per_shard=24, eval_samples=6)


def command(accelerate_config: str, model: Path, shards: Path, run_dir: Path, *extra: str) -> list[str]:
    launcher = Path(sys.executable).parent / "accelerate"
    return [str(launcher), "launch", "--config_file", str(ROOT / "accelerate_configs" / accelerate_config),
            "-m", "qwen_swe", "train", "--preset", "smoke",
            f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}",
            f"run.max_steps={STEPS}", f"schedule.total_steps={STEPS}", "run.checkpoint_every=4", "run.eval_every=4",
            "run.eval_batches=2", "data.num_workers=1", "data.frame_budget=200",
            # the tiny model's 150k-row text embedding only makes checkpoints big and steps slow here
            "train.freeze=[text_embedding]", *extra]


@pytest.fixture(scope="module")
def reference(tiny_06b, shards, tmp_path_factory):
    """Uninterrupted runs, one per strategy, computed once."""
    cache = {}

    def get(accelerate_config: str) -> Path:
        if accelerate_config not in cache:
            run_dir = tmp_path_factory.mktemp("reference") / accelerate_config.replace(".yaml", "")
            result = launch(command(accelerate_config, tiny_06b, shards, run_dir))
            assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
            cache[accelerate_config] = run_dir
        return cache[accelerate_config]

    return get


def assert_same_losses(resumed: Path, reference: Path, rel: float = 1e-6) -> None:
    ours, theirs = losses(resumed), losses(reference)
    assert sorted(ours) == list(range(1, STEPS + 1)), sorted(ours)
    for step in range(1, STEPS + 1):
        assert ours[step] == pytest.approx(theirs[step], rel=rel, abs=1e-7), (step, ours[step], theirs[step])


def test_ddp_sigterm_then_resume_continues_exactly(reference, tiny_06b, shards, tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(command("cpu_ddp.yaml", tiny_06b, shards, run_dir), cwd=ROOT, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: metrics_lines(run_dir) >= 4, process)
    for worker in psutil.Process(process.pid).children(recursive=False):
        worker.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert "stopped by signal" in output and "--resume auto" in output, output[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["health"] == "interrupted"
    stopped_at = status["step"]
    assert stopped_at < STEPS
    assert (run_dir / "checkpoints" / f"step-{stopped_at:08d}" / "COMPLETE").exists()

    resumed = launch(command("cpu_ddp.yaml", tiny_06b, shards, run_dir, "--resume", "auto"))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert_same_losses(run_dir, reference("cpu_ddp.yaml"))
    report = json.loads((run_dir / "report.json").read_text())
    assert report["steps"] == STEPS and report["last_eval"]["loss"] > 0
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["activation_max/talker.0"] > 0 and first["grad_max/sub_talker.0"] > 0  # per-layer drift watch
    assert {"lr/default/decay", "frames_per_s", "padding_efficiency", "data_wait_fraction"} <= set(first)
    assert list((run_dir / "tb").rglob("events.out.tfevents.*"))  # TensorBoard logs


def test_zero2_resume_from_a_middle_checkpoint_continues_exactly(reference, tiny_06b, shards, tmp_path):
    source = reference("cpu_zero2.yaml")
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    for later in (run_dir / "checkpoints").glob("step-*"):
        if later.name > "step-00000004":
            shutil.rmtree(later)
    (run_dir / "checkpoints" / "latest").write_text("step-00000004\n")
    resumed = launch(command("cpu_zero2.yaml", tiny_06b, shards, run_dir, "--resume", "auto"))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert "at step 4" in resumed.stdout + resumed.stderr
    assert_same_losses(run_dir, source)
    # DeepSpeed writes sharded optimizer states per rank
    assert len(list((run_dir / "checkpoints" / f"step-{STEPS:08d}").rglob("*optim_states.pt"))) == 2


def test_zero3_kill9_then_resume_matches_the_uninterrupted_run(reference, tiny_06b, shards, tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(command("cpu_zero3.yaml", tiny_06b, shards, run_dir), cwd=ROOT, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # kill everything the moment the step-4 checkpoint is complete, mid-way to the end
    wait_for(lambda: (run_dir / "checkpoints" / "step-00000004" / "COMPLETE").exists(), process, poll=0.01)
    launcher = psutil.Process(process.pid)
    tree = [launcher, *launcher.children(recursive=True)]  # the workers run in sessions of their own
    for member in tree:
        member.kill()
    psutil.wait_procs(tree, timeout=60)
    process.wait(timeout=60)
    assert not (run_dir / "checkpoints" / f"step-{STEPS:08d}").exists()
    resumed = launch(command("cpu_zero3.yaml", tiny_06b, shards, run_dir, "--resume", "auto"))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert "resumed from" in resumed.stdout + resumed.stderr and "at step 4" in resumed.stdout + resumed.stderr
    # ZeRO-3 and ZeRO-2 compute the same fp32 sums; the uninterrupted ZeRO-2 run is the reference
    assert_same_losses(run_dir, reference("cpu_zero2.yaml"), rel=1e-5)
    assert len(list((run_dir / "checkpoints" / f"step-{STEPS:08d}").rglob("*optim_states.pt"))) == 2
    assert_export_equals_the_fp32_consolidation(run_dir, reference("cpu_zero2.yaml"), tmp_path / "export")


def assert_export_equals_the_fp32_consolidation(run_dir: Path, zero2_run: Path, out: Path) -> None:
    """The export of a ZeRO-3 run holds exactly DeepSpeed's fp32 consolidation of its partitions, and those weights
    agree with the (differently partitioned) ZeRO-2 run of the same math."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    from qwen_swe.export import export
    from qwen_swe.train.checkpoint import trained_state_dict

    export(run_dir, out, dtype="float32", progress=False)
    exported = load_file(str(out / "model.safetensors"))
    final = f"step-{STEPS:08d}"
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints" / final), tag="pytorch_model")
    zero2 = trained_state_dict(zero2_run / "checkpoints" / final)
    # checkpoints hold the weights that train; the frozen text embedding is the base model's, in the export as well
    assert len(consolidated) > 50 and not any("text_embedding" in name for name in consolidated)
    base = load_file(str(Path(yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["path"])
                         / "model.safetensors"))
    text_embedding = "talker.model.text_embedding.weight"
    assert torch.equal(exported[text_embedding].float(), base[text_embedding].float())
    for name, tensor in consolidated.items():
        assert torch.equal(exported[name.removeprefix("model.")], tensor.float()), name
        torch.testing.assert_close(tensor.float(), zero2[name], rtol=1e-3, atol=1e-5)  # Adam amplifies 1e-7 sums


def test_strategies_agree_and_changed_math_is_refused(reference, tiny_06b, shards, tmp_path):
    ddp, zero2 = losses(reference("cpu_ddp.yaml")), losses(reference("cpu_zero2.yaml"))
    for step in range(1, STEPS + 1):
        assert ddp[step] == pytest.approx(zero2[step], rel=1e-3), step
    # bf16 (DeepSpeed bf16 with fp32 master weights) follows the fp32 curve within bf16 tolerance
    bf16_dir = tmp_path / "bf16"
    bf16 = launch(command("cpu_zero2_bf16.yaml", tiny_06b, shards, bf16_dir, "run.max_steps=4"))
    assert bf16.returncode == 0, (bf16.stdout + bf16.stderr)[-5000:]
    assert "deepspeed-bf16" in json.loads((bf16_dir / "run_manifest.json").read_text())["precision_strategy"]
    for step, loss in losses(bf16_dir).items():
        assert loss == pytest.approx(zero2[step], rel=2e-2), (step, loss, zero2[step])
    run_dir = tmp_path / "run"
    shutil.copytree(reference("cpu_ddp.yaml"), run_dir)
    refused = launch(command("cpu_ddp.yaml", tiny_06b, shards, run_dir, "--resume", "auto", "optim.lr=0.5"))
    assert refused.returncode != 0
    assert "optim.lr" in refused.stdout + refused.stderr and "--allow-changes" in refused.stdout + refused.stderr
