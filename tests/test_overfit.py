"""`accelerate launch -m qwen_swe overfit` trains the objective on the demo corpus with 2 CPU processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_ddp_training_reduces_the_fixed_set_loss(tiny_06b):
    accelerate = Path(sys.executable).parent / "accelerate"
    run = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"),
         "-m", "qwen_swe", "overfit", "--model", str(tiny_06b), "--steps", "12", "--batch-size", "3"],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "2 process(es)" in output and "registered swedish" in output
    before = float(re.search(r"loss before training: ([0-9.]+)", output).group(1))
    after = float(re.search(r"loss after 12 steps: ([0-9.]+)", output).group(1))
    assert after < before - 0.5, (before, after)
