"""Durable, atomic checkpoints: complete or ignored, `latest` moves only after a complete save.

Layout of a run directory:
    checkpoints/step-00000500/        accelerate save_state (DeepSpeed: sharded ZeRO files) + our files
        trainer_state.json            step, epoch, best eval, metrics.jsonl offset (written by the main process)
        data_position_rank{R}.json    each rank's reader position
        COMPLETE                      written last (the step and every file's size); a directory without it is
                                      ignored and cleaned up
    checkpoints/latest                text file naming the newest complete checkpoint (replaced atomically)
    checkpoints/best.json             the best checkpoint by eval loss, or by the quality loop's metric (kept by
                                      retention)

Saving: every rank writes into `checkpoints/.tmp-step-N`, a barrier, then the main process marks it complete,
renames it into place, updates `latest` and applies retention. A crash at any point leaves the previous checkpoint
loadable, and never deletes the newest complete one.

A checkpoint holds the weights that train, never the frozen ones: those are the base model's, which every resume and
export loads anyway (a LoRA run of the 1.7B stored 7.8 GB of fp32 weights per checkpoint for 32M trainable
parameters; a full run with the text embedding frozen, 1.2 GB of it). Without DeepSpeed an accelerate pre-save hook
(`keep_trainable_weights`) drops them from what it writes; DeepSpeed is asked not to save them
(`exclude_frozen_parameters`). Resuming loads non-strictly and first checks that every trainable weight is there
(`missing_trainable_weights`); export rebuilds the base model and lays the trained weights over it.

Loading verifies: `checkpoint_problems` compares every file with the size COMPLETE recorded (a file truncated or
lost later, by a full disk or a copy that stopped half way). `--resume auto` takes the newest checkpoint that
verifies and says which newer ones it passed over and why; export and an explicit `--resume PATH` refuse a broken
one, naming the file. Checkpoints written before COMPLETE recorded sizes (it held the step alone) are trusted.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from ..files import write_json_atomic, write_text_atomic

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file() and (path / STATE_FILE).is_file()


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and is_complete(p))


def checkpoint_problems(path: Path) -> list[str]:
    """Files of a complete checkpoint that are missing or not the size COMPLETE recorded, one line each."""
    try:
        recorded = json.loads((path / COMPLETE).read_text(encoding="utf-8"))
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):  # a checkpoint from before sizes were recorded: COMPLETE holds the step alone
        return []
    problems = []
    for name, size in recorded.get("files", {}).items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != size:
            problems.append(f"{file}: {file.stat().st_size} bytes, {size} when saved")
    return problems


def newest_verified(run_dir: str | Path, say: Callable[[str], None] = print) -> Optional[Path]:
    """The newest complete checkpoint whose files are as saved; newer broken ones are named and passed over."""
    latest = find_latest(run_dir)
    candidates = [p for p in complete_checkpoints(run_dir) if latest is None or p.name <= latest.name]
    for path in reversed(candidates):
        problems = checkpoint_problems(path)
        if not problems:
            return path
        say(f"warning: checkpoint {path.name} is damaged ({'; '.join(problems[:3])}); trying an older one")
    return None


def find_latest(run_dir: str | Path) -> Optional[Path]:
    """The newest complete checkpoint (the `latest` pointer if it is valid, else a scan)."""
    root = checkpoints_dir(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text(encoding="utf-8").strip()
        if is_complete(named):
            newer = [p for p in complete_checkpoints(run_dir) if p.name > named.name]
            return newer[-1] if newer else named
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(run_dir: str | Path, resume: Optional[str],
                   say: Callable[[str], None] = print) -> Optional[Path]:
    """`--resume auto` -> the newest complete checkpoint that verifies, or None; a path must be a complete
    checkpoint that verifies."""
    if not resume:
        return None
    if resume == "auto":
        return newest_verified(run_dir, say)
    path = Path(resume)
    if path.is_dir() and not (path / STATE_FILE).exists() and (path / "checkpoints").is_dir():
        path = find_latest(path) or path  # a run directory was given
    if not path.is_dir() or not is_complete(path):
        raise ValueError(f"{path}: not a complete checkpoint (no {COMPLETE} marker); "
                         "use --resume auto to take the newest complete one")
    problems = checkpoint_problems(path)
    if problems:
        raise ValueError(f"{path}: damaged checkpoint:\n  " + "\n  ".join(problems)
                         + "\nuse --resume auto to take the newest checkpoint that is intact")
    return path


def _plain(name: str) -> str:
    """A parameter's name without the "module." a DDP wrapper adds (what accelerate saves)."""
    return name[len("module."):] if name.startswith("module.") else name


def keep_trainable_weights(models: list[Any], weights: list[dict[str, Any]], _output_dir: str) -> None:
    """accelerate save_state pre-hook (without DeepSpeed): drop frozen parameters from the state dicts it is about
    to write. Buffers stay (they are small and some are not rebuilt from the config)."""
    for model, state in zip(models, weights):
        frozen = {_plain(name) for name, parameter in model.named_parameters() if not parameter.requires_grad}
        for key in [key for key in state if _plain(key) in frozen]:
            del state[key]


def missing_trainable_weights(checkpoint: Path, model: Any) -> list[str]:
    """Trainable parameters of `model` absent from a checkpoint written without DeepSpeed; empty when it holds them
    all (older checkpoints hold every weight)."""
    from safetensors import safe_open

    weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        return []  # pytorch_model.bin checkpoints: nothing to list cheaply
    with safe_open(str(weights), framework="pt") as handle:
        saved = {_plain(key) for key in handle.keys()}
    return [_plain(name) for name, parameter in model.named_parameters()
            if parameter.requires_grad and _plain(name) not in saved]


def save_checkpoint(accelerator: Any, run_dir: str | Path, step: int, trainer_state: dict,
                    rank_files: dict[str, Any], keep_last: int, before_commit: Optional[Callable[[], None]] = None
                    ) -> Path:
    """Save on all ranks; returns the final checkpoint path (on every rank)."""
    root = checkpoints_dir(run_dir)
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    from accelerate.utils import DistributedType

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    accelerator.save_state(str(tmp), **({"exclude_frozen_parameters": True} if deepspeed else {}))
    for name, payload in rank_files.items():
        write_json_atomic(tmp / name, payload)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE_FILE, trainer_state)
        if before_commit is not None:
            before_commit()  # tests use this to die half way
        sizes = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / COMPLETE).write_text(json.dumps({"step": step, "files": sizes}, indent=1) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(root / "latest", final.name + "\n")
        apply_retention(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def record_best(run_dir: str | Path, checkpoint: Path, **why: Any) -> None:
    """best.json: the best checkpoint and why (`eval_loss`: its held-out loss, or the quality `metric` and `value`
    that chose it)."""
    write_json_atomic(checkpoints_dir(run_dir) / "best.json", {"checkpoint": checkpoint.name, **why})


def best_checkpoint(run_dir: str | Path) -> Optional[str]:
    path = checkpoints_dir(run_dir) / "best.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("checkpoint")


def apply_retention(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints and the best one; clean stale temporaries."""
    root = checkpoints_dir(run_dir)
    complete = complete_checkpoints(run_dir)
    keep = {p.name for p in complete[-max(1, keep_last):]}
    best = best_checkpoint(run_dir)
    if best:
        keep.add(best)
    removed = []
    for path in complete:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for path in root.glob("step-*"):  # directories left by a crash between rename steps
        if path.is_dir() and not is_complete(path) and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    return removed


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def trained_state_dict(checkpoint: Path) -> dict[str, Any]:
    """fp32 weights of the trained module (names as in TalkerObjective: `model.talker...`), whatever wrote them:
    accelerate's model.safetensors or pytorch_model.bin, or DeepSpeed ZeRO partitions consolidated by its
    zero_to_fp32."""
    import torch

    deepspeed_dir = checkpoint / "pytorch_model"
    safetensors_file = checkpoint / "model.safetensors"
    bin_file = checkpoint / "pytorch_model.bin"
    if deepspeed_dir.is_dir():
        import contextlib
        import io

        from ..noise import quiet_cpu_accelerator

        quiet_cpu_accelerator()
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with contextlib.redirect_stdout(io.StringIO()):  # it narrates every step
            state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="pytorch_model")
    elif safetensors_file.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safetensors_file))
    elif bin_file.is_file():
        state = torch.load(str(bin_file), map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{checkpoint}: no model weights found (expected model.safetensors, pytorch_model.bin or "
                         "a DeepSpeed pytorch_model/ folder)")
    return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
