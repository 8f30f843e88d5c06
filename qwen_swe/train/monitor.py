"""What a run tells the world: metrics.jsonl, TensorBoard, status.json, report.json, and the `qwen-swe status` view.

`StepTally` adds up one optimizer step's micro-batches on one rank; `MetricsProcessor` reduces it across ranks into
the step record and writes that record where it goes (metrics.jsonl every `run.log_every` steps and at every
non-finite step, TensorBoard, the progress bar); `StatusFile` is the run's current state for `qwen-swe status`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..files import write_json_atomic

METRICS = "metrics.jsonl"
STATUS = "status.json"
REPORT = "report.json"
# A training run rewrites status.json after every step; one that has not for this long is presumed dead (a step,
# an eval or a checkpoint save at real scale takes minutes, not a quarter of an hour).
STALE_AFTER_SECONDS = 15 * 60


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


# A step's losses and accuracies: exact means per target over all its micro-batches and ranks (never a mean of
# micro-batch means), from per-target sums kept on the device until the step's one reduction.
LOSS_NAMES = ("codebook0_accuracy", "codebook0_loss", "loss", "sub_talker_accuracy", "sub_talker_loss")
# StepTally.sums, in this order: each part's sum over its targets, and the target counts
SUM_NAMES = ("codebook0_loss", "codebook0_accuracy", "codebook0_targets", "sub_talker_loss", "sub_talker_accuracy",
             "sub_talker_targets", "non_finite_losses")
# StepTally.by_source, per source: its loss sums and target counts, and the target frames of its batches
SOURCE_SUM_NAMES = ("codebook0_loss", "codebook0_targets", "sub_talker_loss", "sub_talker_targets", "frames")


@dataclass
class StepTally:
    """One optimizer step on one rank: what its micro-batches scored, held and cost. Scores stay on the device
    (`sums`): reading a number back to the host would stall a GPU once per micro-batch."""

    accumulation: int
    sources: tuple[str, ...] = ()  # a mixture's source names: its scores are also summed per source
    started: float = field(default_factory=time.perf_counter)
    waited: float = 0.0  # seconds spent waiting for the loader
    sums: Any = None  # float64 tensor on the device, SUM_NAMES
    by_source: Any = None  # float64 tensor on the device, [sources, SOURCE_SUM_NAMES]
    frames: float = 0.0  # target frames of the batches that ran (all of them, however many the sub-talker scored)
    positions: float = 0.0
    padded: float = 0.0
    keys: list[str] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)  # layout and keys per micro-batch (diagnosis)
    bad_samples: list[dict[str, Any]] = field(default_factory=list)  # shard, key, error of each sample skipped

    def fetch(self, batches: Iterator[Any]) -> Any:
        fetching = time.perf_counter()
        batch = next(batches)
        self.waited += time.perf_counter() - fetching
        self.bad_samples += batch.extra.get("bad_samples", [])
        return batch

    def add(self, batch: Any, out: dict[str, Any], target_frames: int) -> None:
        """A micro-batch that ran: `batch` as it came from the loader (host tensors), `out` the objective's."""
        import torch

        self.keys += batch.keys
        self.batches.append({"layout": batch.extra.get("layout"), "keys": batch.keys})
        cb0, sub = out["codebook0_targets"], out["sub_talker_targets"]
        scores = torch.stack([out["codebook0_loss"] * cb0, out["codebook0_accuracy"] * cb0, cb0,
                              out["sub_talker_loss"] * sub, out["sub_talker_accuracy"] * sub, sub,
                              (~torch.isfinite(out["loss"])).to(cb0.dtype)]).detach().double()
        self.sums = scores if self.sums is None else self.sums + scores
        if self.sources:
            if self.by_source is None:
                self.by_source = torch.zeros(len(self.sources), len(SOURCE_SUM_NAMES), dtype=torch.float64,
                                             device=scores.device)
            row = self.sources.index(batch.extra["source"])
            self.by_source[row] += torch.stack([scores[0], scores[2], scores[3], scores[5],
                                                torch.full_like(scores[0], float(target_frames))])
        self.frames += target_frames
        self.positions += float(batch.attention_mask.sum())
        self.padded += float(batch.attention_mask.numel())

    def finite_losses(self) -> Any:
        """On the device (nothing read back): whether every loss of the step's micro-batches was finite."""
        return self.sums[SUM_NAMES.index("non_finite_losses")] == 0


class MetricsProcessor:
    """The step record: reduced across ranks, written to metrics.jsonl and TensorBoard, shown on the progress bar."""

    def __init__(self, accelerator: Any, run_dir: Path, max_steps: int, log_every: int, device_type: str,
                 sub_talker_weight: float, sources: tuple[str, ...] = ()):
        self.accelerator = accelerator
        self.sub_talker_weight = sub_talker_weight
        self.sources = sources
        self.log = MetricsLog(run_dir)
        self.status = StatusFile(run_dir, max_steps, enabled=accelerator.is_main_process)
        self.max_steps, self.log_every, self.device_type = max_steps, log_every, device_type
        self.progress: Any = None

    def start(self, step: int) -> None:
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            self.progress = tqdm(total=self.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)

    def step_record(self, step: int, epoch: int, tally: StepTally, grad_norm: Optional[float], finite: bool,
                    learning_rates: dict[str, float], layer_stats: dict[str, float]) -> dict[str, Any]:
        """The job's view of one step: sums over ranks, losses as means per target over the whole step (one small
        all-reduce, the step's one read back to the host)."""
        import torch

        elapsed = time.perf_counter() - tally.started
        device = self.accelerator.device
        scores = tally.sums if tally.sums is not None else torch.zeros(len(SUM_NAMES), dtype=torch.float64,
                                                                       device=device)
        counts = torch.tensor([tally.frames, tally.positions, tally.padded, len(tally.keys), len(tally.bad_samples)],
                              dtype=torch.float64, device=device)
        by_source = tally.by_source if tally.by_source is not None else torch.zeros(
            len(self.sources), len(SOURCE_SUM_NAMES), dtype=torch.float64, device=device)
        summed = self.accelerator.reduce(torch.cat([counts, scores.to(device), by_source.to(device).flatten()]),
                                         reduction="sum").tolist()
        frames, positions, padded, samples, bad = summed[:5]
        total = dict(zip(SUM_NAMES, summed[5:5 + len(SUM_NAMES)]))
        per_source = summed[5 + len(SUM_NAMES):]
        losses = dict.fromkeys(LOSS_NAMES, float("nan"))
        if samples:
            cb0, sub = max(total["codebook0_targets"], 1.0), max(total["sub_talker_targets"], 1.0)
            losses.update(codebook0_loss=total["codebook0_loss"] / cb0, codebook0_accuracy=total["codebook0_accuracy"]
                          / cb0, sub_talker_loss=total["sub_talker_loss"] / sub,
                          sub_talker_accuracy=total["sub_talker_accuracy"] / sub)
            losses["loss"] = losses["codebook0_loss"] + self.sub_talker_weight * losses["sub_talker_loss"]
        return {"step": step, "epoch": epoch, **losses, **self._source_losses(per_source),
                "grad_norm": grad_norm, "finite": finite, "samples": int(samples), "bad_samples": int(bad),
                # no micro-batch of the step had a usable sample on every rank: nothing was scored or updated
                "data_skipped": not tally.keys, "frames_per_s": frames / elapsed,
                "samples_per_s": samples / elapsed, "padding_efficiency": positions / max(padded, 1.0),
                "data_wait_fraction": tally.waited / elapsed,
                **{f"lr/{name}": lr for name, lr in learning_rates.items()},
                **memory_usage(self.device_type), **layer_stats}

    def _source_losses(self, summed: list[float]) -> dict[str, float]:
        """source/<name>/frames for every source, and its losses where the step drew a batch from it."""
        record: dict[str, float] = {}
        width = len(SOURCE_SUM_NAMES)
        for number, name in enumerate(self.sources):
            sums = dict(zip(SOURCE_SUM_NAMES, summed[number * width:(number + 1) * width]))
            record[f"source/{name}/frames"] = sums["frames"]
            if sums["codebook0_targets"]:
                cb0 = sums["codebook0_loss"] / sums["codebook0_targets"]
                sub = sums["sub_talker_loss"] / max(sums["sub_talker_targets"], 1.0)
                record[f"source/{name}/codebook0_loss"] = cb0
                record[f"source/{name}/loss"] = cb0 + self.sub_talker_weight * sub
        return record

    def write(self, record: dict[str, Any], keep: bool = False) -> None:
        """metrics.jsonl and TensorBoard every `log_every` steps, at the last step, at every step that was not
        finite or skipped bad samples, and whenever `keep` (a step that measured per-layer statistics: rare, and
        never thinned away)."""
        step = record["step"]
        event = not record["finite"] or record["bad_samples"]
        if keep or event or step % self.log_every == 0 or step == self.max_steps:
            if self.accelerator.is_main_process:
                self.log.append(record)
            scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=step)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{record['loss']:.3f}", fps=f"{record['frames_per_s']:.0f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def render_status(run_dir: str | Path) -> str:
    """A human view of status.json, the last metrics line and the checkpoints."""
    from .checkpoint import best_checkpoint, complete_checkpoints

    run_dir = Path(run_dir)
    status_path = run_dir / STATUS
    if not status_path.exists():
        raise ValueError(f"{run_dir}: no {STATUS}; is this a qwen-swe run directory?")
    status = json.loads(status_path.read_text(encoding="utf-8"))
    health = status.get("health")
    silent = time.time() - status.get("updated", time.time())
    if health == "training" and silent > STALE_AFTER_SECONDS:
        health = (f"not responding: no update for {silent / 60:.0f} min (the process died or hangs; resume with "
                  "--resume auto)")
    lines = [f"run:          {run_dir}",
             f"health:       {health}",
             f"step:         {status.get('step')} / {status.get('max_steps')}   epoch {status.get('epoch')}"]
    eta = status.get("eta_seconds")
    if eta is not None and health == "training":
        lines.append(f"eta:          {eta / 3600:.1f} h" if eta > 3600 else f"eta:          {eta / 60:.1f} min")
    metrics = MetricsLog(run_dir).read()
    if metrics:
        last = metrics[-1]
        lines.append(f"last step:    loss {last.get('loss'):.4f}  codebook0 {last.get('codebook0_loss'):.4f}  "
                     f"sub-talker {last.get('sub_talker_loss'):.4f}  grad norm {last.get('grad_norm')}")
        lines.append(f"throughput:   {last.get('frames_per_s', 0):.0f} frames/s, {last.get('samples_per_s', 0):.1f} "
                     f"samples/s, padding efficiency {last.get('padding_efficiency', 0):.3f}, "
                     f"data wait {100 * last.get('data_wait_fraction', 0):.0f}%")
    for name, source in (status.get("sources") or {}).items():
        loss = source.get("loss")
        lines.append(f"source {name}: {100 * source.get('share', 0):.1f}% of frames so far (weight now "
                     f"{100 * (source.get('weight') or 0):.1f}%)" + (f", last loss {loss:.4f}" if loss is not None
                                                                    else ""))
    if status.get("last_eval"):
        ev = status["last_eval"]
        lines.append(f"last eval:    step {ev.get('step')}: loss {ev.get('loss'):.4f} "
                     f"(codebook0 acc {ev.get('codebook0_accuracy', 0):.3f})")
        for name, means in (ev.get("sources") or {}).items():
            lines.append(f"  eval {name}: loss {means.get('loss'):.4f}")
    checkpoints = complete_checkpoints(run_dir)
    lines.append("checkpoints:  " + (", ".join(p.name for p in checkpoints) or "none yet")
                 + (f"   best: {best_checkpoint(run_dir)}" if best_checkpoint(run_dir) else ""))
    if status.get("non_finite_total"):
        lines.append(f"non-finite:   {status['non_finite_total']} step(s) skipped")
    if status.get("message"):
        lines.append(f"message:      {status['message']}")
    if status.get("health") == "crashed" and status.get("error"):
        lines.append(f"error:        {status['error']}")
    return "\n".join(lines)
