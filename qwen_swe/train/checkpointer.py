"""The trainer's checkpointer: when to save, what a checkpoint holds, which to keep, which is best, how to resume.

The on-disk format (atomic save, `latest`, retention, `best.json`, reading weights back) is `checkpoint.py`'s; this
component decides for a run: a checkpoint every `run.checkpoint_every` optimizer steps, at the last step and when
a stop is requested, and when a hook asks (`wants_checkpoint`); each holds the accelerate state, the trainer's
progress (`Progress`), the hooks' states (under `hooks` in trainer_state.json) and every rank's reader position; the
newest `run.keep_last` are kept plus the best: by held-out loss, or as the hook that judges it says (the quality
loop's best round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..data.stream import StreamPosition
from . import checkpoint as ckpt
from .config import RunSection
from .hooks import Hooks


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint (trainer_state.json) and restored on resume."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # micro-batches of the current epoch this rank has consumed
    best_eval: Optional[float] = None  # the lowest held-out loss a checkpoint was saved at
    last_eval: Optional[dict[str, Any]] = None
    non_finite_total: int = 0
    samples_read: int = 0  # by every rank together, bad ones included
    bad_samples: int = 0  # unreadable or invalid samples skipped, every rank together
    data_skipped_steps: int = 0  # steps with no usable sample, so no update
    source_frames: dict[str, float] = field(default_factory=dict)  # a mixture's frames trained on, by source


class Checkpointer:
    def __init__(self, accelerator: Any, run_dir: Path, run: RunSection, max_steps: int, hooks: Hooks):
        from accelerate.utils import DistributedType

        self.accelerator = accelerator
        self.hooks = hooks
        self.run_dir = run_dir
        self.every, self.keep_last, self.max_steps = run.checkpoint_every, run.keep_last, max_steps
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        if not self.deepspeed:  # frozen weights are the base model's: not written (see checkpoint.py)
            accelerator.register_save_state_pre_hook(ckpt.keep_trainable_weights)

    def resume_point(self, resume: Optional[str], say: Callable[[str], None] = print) -> Optional[Path]:
        """The checkpoint `--resume` names (auto: the newest complete one whose files are as saved), or None to
        start fresh."""
        return ckpt.resolve_resume(self.run_dir, resume, say)

    def due(self, step: int, stopping: bool) -> bool:
        return step % self.every == 0 or step == self.max_steps or stopping or self.hooks.wants_checkpoint(step)

    def save(self, progress: Progress, position: StreamPosition, metrics_offset: int) -> Path:
        """Save on every rank; a checkpoint saved right after a better held-out eval becomes `best` (or, when a hook
        judges the best, one it names)."""
        last = progress.last_eval
        lower_loss = last is not None and (progress.best_eval is None or last["loss"] <= progress.best_eval)
        if lower_loss:
            progress.best_eval = last["loss"]
        judge = self.hooks.best_judge()
        if judge is not None:
            best = judge.best_record(progress.step)
        else:
            best = {"eval_loss": progress.best_eval} if lower_loss else None
        state = {"step": progress.step, "epoch": progress.epoch, "best_eval": progress.best_eval,
                 "last_eval": progress.last_eval, "non_finite_total": progress.non_finite_total,
                 "samples_read": progress.samples_read, "bad_samples": progress.bad_samples,
                 "data_skipped_steps": progress.data_skipped_steps, "source_frames": progress.source_frames,
                 "metrics_offset": metrics_offset, "hooks": self.hooks.state_dict()}
        rank = self.accelerator.process_index
        path = ckpt.save_checkpoint(self.accelerator, self.run_dir, progress.step, state,
                                    {position_file(rank): position.state_dict()}, keep_last=self.keep_last)
        if best is not None and self.accelerator.is_main_process:
            ckpt.record_best(self.run_dir, path, **best)
            ckpt.apply_retention(self.run_dir, self.keep_last)  # the previous best may go now
        return path

    def restore(self, path: Path, progress: Progress, model: Any) -> tuple[StreamPosition, int]:
        """Load the accelerate state and the progress; returns this rank's saved reader position and the
        metrics.jsonl offset the checkpoint was taken at. The checkpoint holds the trainable weights only (the
        frozen ones come from the base model, already loaded), so it is loaded non-strictly after checking that
        every trainable weight is in it."""
        if self.deepspeed:
            self.accelerator.load_state(str(path), load_module_strict=False)
        else:
            missing = ckpt.missing_trainable_weights(path, model)
            if missing:
                raise ValueError(f"{path}: {len(missing)} trained weights are missing (e.g. {missing[:3]}): the "
                                 "checkpoint does not belong to this run config or is damaged; resume from another "
                                 "checkpoint (checkpoints/step-*)")
            self.accelerator.load_state(str(path), strict=False)
        state = ckpt.read_json(path / ckpt.STATE_FILE)
        progress.step, progress.best_eval = state["step"], state.get("best_eval")
        progress.last_eval = state.get("last_eval")
        progress.non_finite_total = state.get("non_finite_total", 0)
        progress.samples_read, progress.bad_samples = state.get("samples_read", 0), state.get("bad_samples", 0)
        progress.data_skipped_steps = state.get("data_skipped_steps", 0)
        progress.source_frames = dict(state.get("source_frames") or {})
        self.hooks.load_state_dict(state.get("hooks") or {})
        saved = path / position_file(self.accelerator.process_index)
        if not saved.exists():  # the saved run had fewer ranks: continue from rank 0's position
            saved = path / position_file(0)
        return StreamPosition.from_state_dict(ckpt.read_json(saved)), state.get("metrics_offset", 0)

    def latest(self) -> Optional[Path]:
        return ckpt.find_latest(self.run_dir)


def position_file(rank: int) -> str:
    return f"data_position_rank{rank}.json"
