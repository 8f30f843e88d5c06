"""Running qwen-swe commands and `accelerate launch` as subprocesses from tests, and reading what runs wrote."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def launch(args: list[str], timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    run = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=environment(**env))
    return run


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines)}


def wait_for(predicate, process: subprocess.Popen, timeout: float = 300, poll: float = 0.2) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"run ended early with {process.returncode}: {process.stdout.read()[-3000:]}")
        if time.time() > deadline:
            raise AssertionError("timed out waiting for the run")
        time.sleep(poll)


def metrics_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0
