"""Run provenance: what a run records about itself (run_manifest.json) and whether a resume may continue it.

The manifest holds the package versions, the git revision, a fingerprint of the model folder and of the training
shards, the seed, the world size, the precision and the math fingerprint: every config knob that changes what the
optimizer computes. A resumed run compares the saved manifest with its own and refuses to continue with changed
math, model, data, seed or world size unless the user names the change (`--allow-changes`).
"""

from __future__ import annotations

import dataclasses
import subprocess
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ..envinfo import package_versions
from ..fingerprints import model_fingerprint
from .config import QualitySection, RunConfig

MANIFEST = "run_manifest.json"
RECORDED_PACKAGES = ("qwen-swe", "torch", "transformers", "accelerate", "deepspeed", "peft", "bitsandbytes",
                     "qwen-tts", "webdataset")
# Manifest entries besides the math that a resume compares.
RESUME_IDENTITY = ("model_fingerprint", "shards_fingerprint", "world_size", "seed", "precision_strategy")
# Changes after which the data reader re-deals the remaining samples instead of continuing each rank's position
# (a mixture's plan also depends on its sources, their weights and the accumulation: data/mixture.py).
RESHARDING_CHANGES = frozenset({"world_size", "shards_fingerprint", "data.sources", "data.weights", "data.schedule",
                                "optim.accumulation"})


class ResumeRefused(SystemExit):
    """The run changed since its checkpoint; the message lists what and how to allow it."""


def git_revision() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(config: RunConfig, *, shards_fingerprint: str, world_size: int, distributed_type: str,
                   precision_label: str) -> dict[str, Any]:
    return {
        "versions": package_versions(RECORDED_PACKAGES),
        "git_revision": git_revision(),
        "model_fingerprint": model_fingerprint(Path(config.model.path)),
        "shards_fingerprint": shards_fingerprint,
        "seed": config.run.seed,
        "world_size": world_size,
        "distributed_type": distributed_type,
        "precision_strategy": precision_label,
        "math": math_fingerprint(config),
    }


def manifest_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{name: (saved, current)} for every math knob of the current run and identity entry that differs.

    A knob the saved manifest lacks (added to the config since, or inert then: LoRA settings of a full run) stood
    at its default there, so it counts as changed only when the current run sets it to something else. A knob the
    current run lacks is inert now (or gone), so only the change that made it so is named (e.g. train.mode)."""
    defaults = _flatten(RunConfig().to_dict())
    changes = {}
    for key, now in current["math"].items():
        was = saved["math"].get(key, defaults.get(key))
        if was != now:
            changes[key] = (was, now)
    for key in RESUME_IDENTITY:
        if saved.get(key) != current[key]:
            changes[key] = (saved.get(key), current[key])
    return changes


def check_resume_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], checkpoint: Path,
                            allowed: Iterable[str]) -> bool:
    """Refuse a changed run unless each change is allowed; returns True when the reader must re-deal the data."""
    changes = manifest_changes(saved, current)
    refused = [key for key in changes if key not in set(allowed)]
    if refused:
        was, now = ({key: changes[key][i] for key in refused} for i in (0, 1))
        listing = "\n".join(f"  {line}" for line in fingerprint_changes(was, now))
        raise ResumeRefused(f"refusing to resume {checkpoint}: the run changed\n{listing}\n"
                            f"resume unchanged, or name what you mean to change: --allow-changes {','.join(refused)}")
    return bool(RESHARDING_CHANGES & set(changes))


# ------------------------------------------------------------------------------------------ the math
# Fields that do not change what the optimizer computes: where things live (the model and shard contents are
# fingerprinted separately), how often things are logged/evaluated/saved, when to stop, how many loader workers,
# and implementation choices proven equivalent (gradient checkpointing recomputes the same activations; the
# attention kernels compute the same function).
NOT_MATH = frozenset({
    "model.path", "model.attn_implementation",
    "data.shards", "data.eval_split", "data.num_workers",
    # retokenize only decides between refusing shards whose stored ids came from another tokenizer and tokenizing
    # their text again; whenever a run proceeds either way, the ids it trains on are the same
    "data.retokenize",
    "data.max_bad_samples",  # when to give up on bad data, not what is computed
    "train.gradient_checkpointing",
    "run.output_dir", "run.max_steps", "run.eval_every", "run.eval_batches", "run.checkpoint_every",
    "run.keep_last", "run.log_every", "run.activation_stats_every", "run.non_finite_patience", "run.tensorboard",
    "run.synth_every_evals", "run.synth_sentences",
    # the quality loop listens to the model and may stop the run; it never changes what a step computes
    *(f"run.quality.{name}" for name in QualitySection.__dataclass_fields__),
})


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and dataclasses.is_dataclass(_section_type(name)):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _section_type(name: str) -> Any:
    cls: Any = RunConfig
    for part in name.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        cls = typing.get_type_hints(cls).get(part)
    return cls


def math_fingerprint(config: RunConfig) -> dict[str, Any]:
    """Every knob that changes the math, flat: {"optim.lr": 2e-05, "data.layouts": {...}, ...}.

    Knobs that are inert under the chosen settings are left out too: LoRA settings in full mode,
    keep_fp32_modules unless the weights are bf16.
    """
    flat = {k: v for k, v in _flatten(config.to_dict()).items() if k not in NOT_MATH}
    if flat.get("data.sources"):  # the sources' names are math (which corpora, in which order); their folders'
        flat["data.sources"] = list(config.data.sources)  # contents are the shards fingerprint
    if flat.get("data.schedule"):  # as run_manifest.json holds it: JSON keys are strings
        flat["data.schedule"] = {str(step): weights for step, weights in sorted(config.data.schedule.items())}
    if config.train.mode != "lora":
        flat = {k: v for k, v in flat.items() if not k.startswith("train.lora.")}
    if config.train.precision != "bf16-pure":
        flat.pop("train.keep_fp32_modules", None)
    return flat


def fingerprint_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two flat fingerprints, one line per field: "optim.lr: 2e-05 -> 0.0001"."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key, "<absent>") != current.get(key, "<absent>"):
            changes.append(f"{key}: {saved.get(key, '<absent>')!r} -> {current.get(key, '<absent>')!r}")
    return changes
