"""What a run tells the world: metrics.jsonl, status.json, report.json, and the `qwen-swe status` view."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from .checkpoint import write_json_atomic

METRICS = "metrics.jsonl"
STATUS = "status.json"
REPORT = "report.json"


def memory_usage(device_type: str) -> dict[str, float]:
    """Peak accelerator memory (GB) on GPUs; resident set size of this process on the CPU."""
    import torch

    if device_type in ("cuda", "rocm") and torch.cuda.is_available():
        return {"memory_allocated_gb": torch.cuda.max_memory_allocated() / 2**30}
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return {"memory_rss_gb": int(line.split()[1]) / 2**20}
    except OSError:
        pass
    return {}


class MetricsLog:
    """Append-only metrics.jsonl (main process); its byte size is saved in checkpoints and restored on resume."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Drop lines written after the checkpoint being resumed (they belong to a timeline that did not happen)."""
        if self.path.exists() and self.path.stat().st_size > offset:
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


class StatusFile:
    """status.json: where the run stands, rewritten atomically after every step and at every event."""

    def __init__(self, run_dir: Path, max_steps: int, enabled: bool = True):
        self.enabled = enabled  # only the main process writes
        self.path = run_dir / STATUS
        self.max_steps = max_steps
        self.started = time.time()
        self.first_step: Optional[int] = None
        self.state: dict[str, Any] = {"health": "starting", "pid": os.getpid()}

    def update(self, step: int, **fields: Any) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.first_step is None:
            self.first_step, self.started = step, now
        done = step - self.first_step
        eta = (now - self.started) / done * (self.max_steps - step) if done > 0 else None
        self.state.update(fields)
        self.state.update(step=step, max_steps=self.max_steps, updated=now, eta_seconds=eta)
        write_json_atomic(self.path, self.state)


def render_status(run_dir: str | Path) -> str:
    """A human view of status.json, the last metrics line and the checkpoints."""
    from .checkpoint import best_checkpoint, complete_checkpoints

    run_dir = Path(run_dir)
    status_path = run_dir / STATUS
    if not status_path.exists():
        raise ValueError(f"{run_dir}: no {STATUS}; is this a qwen-swe run directory?")
    status = json.loads(status_path.read_text(encoding="utf-8"))
    lines = [f"run:          {run_dir}",
             f"health:       {status.get('health')}",
             f"step:         {status.get('step')} / {status.get('max_steps')}   epoch {status.get('epoch')}"]
    eta = status.get("eta_seconds")
    if eta is not None and status.get("health") == "training":
        lines.append(f"eta:          {eta / 3600:.1f} h" if eta > 3600 else f"eta:          {eta / 60:.1f} min")
    metrics = MetricsLog(run_dir).read()
    if metrics:
        last = metrics[-1]
        lines.append(f"last step:    loss {last.get('loss'):.4f}  codebook0 {last.get('codebook0_loss'):.4f}  "
                     f"sub-talker {last.get('sub_talker_loss'):.4f}  grad norm {last.get('grad_norm')}")
        lines.append(f"throughput:   {last.get('frames_per_s', 0):.0f} frames/s, {last.get('samples_per_s', 0):.1f} "
                     f"samples/s, padding efficiency {last.get('padding_efficiency', 0):.3f}, "
                     f"data wait {100 * last.get('data_wait_fraction', 0):.0f}%")
    if status.get("last_eval"):
        ev = status["last_eval"]
        lines.append(f"last eval:    step {ev.get('step')}: loss {ev.get('loss'):.4f} "
                     f"(codebook0 acc {ev.get('codebook0_accuracy', 0):.3f})")
    checkpoints = complete_checkpoints(run_dir)
    lines.append("checkpoints:  " + (", ".join(p.name for p in checkpoints) or "none yet")
                 + (f"   best: {best_checkpoint(run_dir)}" if best_checkpoint(run_dir) else ""))
    if status.get("non_finite_total"):
        lines.append(f"non-finite:   {status['non_finite_total']} step(s) skipped")
    if status.get("message"):
        lines.append(f"message:      {status['message']}")
    return "\n".join(lines)
