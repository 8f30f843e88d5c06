"""Stopping a launched run (2 CPU processes): through `qwen-swe launch` on a step longer than the launcher's grace
period (DeepSpeed ZeRO-2, with no library noise on the way), and by killing the launcher's whole process group (DDP),
which must not leave ranks training alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from qwen_swe.data.synthetic import synthetic_shards

from ..launching import ROOT, environment, metrics_lines, wait_for

STEPS = 40  # far more than a test lets run: every run here is stopped


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("stop-shards"), shards=2, per_shard=12, eval_samples=0)


def train_args(accelerate_config: str, model: Path, shards: Path, run_dir: Path) -> list[str]:
    return ["--config_file", str(ROOT / "accelerate_configs" / accelerate_config), "-m", "qwen_swe", "train",
            "--preset", "smoke", f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}",
            f"run.max_steps={STEPS}", f"schedule.total_steps={STEPS}", "run.checkpoint_every=1000",
            "run.eval_every=0", "data.num_workers=0", "data.frame_budget=200", "train.freeze=[text_embedding]"]


def start(command: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=environment(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def assert_checkpointed_stop(run_dir: Path) -> int:
    status = json.loads((run_dir / "status.json").read_text())
    assert status["health"] == "interrupted", status
    stopped_at = status["step"]
    assert 1 <= stopped_at < STEPS
    assert (run_dir / "checkpoints" / f"step-{stopped_at:08d}" / "COMPLETE").exists()
    return stopped_at


def test_sigterm_to_qwen_swe_launch_checkpoints_and_exits_0_when_the_step_outlasts_the_grace(tiny_06b, shards,
                                                                                            tmp_path):
    run_dir = tmp_path / "run"
    # another job holding accelerate's default port (29500) is a normal case: the launcher finds a free one, quietly
    with socket.socket() as other_job:
        with contextlib.suppress(OSError):  # already held by another test's launch: just as good
            other_job.bind(("127.0.0.1", 29500))
            other_job.listen()
        process = start([sys.executable, "-m", "qwen_swe", "launch",
                         *train_args("cpu_zero2.yaml", tiny_06b, shards, run_dir)],
                        # the launcher would kill its ranks 1 s after a signal; every step lasts 6 s longer than that
                        TORCH_ELASTIC_SHUTDOWN_TIMEOUT="1", QWEN_SWE_DRILL_SLOW_STEP="6")
        wait_for(lambda: metrics_lines(run_dir) >= 1, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-4000:]
    assert "asking 2 rank(s) to finish their step" in output and "stopped by signal" in output, output[-4000:]
    for noise in ("Traceback", "Warning", "Setting accelerator to CPU"):  # nothing that reads like a failure
        assert noise not in output, output[-4000:]
    assert_checkpointed_stop(run_dir)


def test_killing_the_launchers_process_group_stops_its_ranks_with_a_checkpoint(tiny_06b, shards, tmp_path):
    run_dir = tmp_path / "run"
    launcher = Path(sys.executable).parent / "accelerate"
    process = start([str(launcher), "launch", *train_args("cpu_ddp.yaml", tiny_06b, shards, run_dir)])
    wait_for(lambda: metrics_lines(run_dir) >= 1, process)
    ranks = psutil.Process(process.pid).children(recursive=False)
    assert len(ranks) == 2
    assert all(os.getsid(rank.pid) != os.getsid(process.pid) for rank in ranks)  # out of reach of the killpg
    os.killpg(process.pid, signal.SIGKILL)  # what a supervisor's "kill the job" does; each rank has its own session
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(ranks, timeout=240)
    assert not alive, f"ranks still running after their launcher died: {alive}"
    stopped_at = assert_checkpointed_stop(run_dir)
    assert metrics_lines(run_dir) == stopped_at  # nothing written after the stop
