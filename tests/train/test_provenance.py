"""train/provenance.py: the math fingerprint counts what changes the optimizer's computation and nothing else, and a
resume refuses what changed unless it is named."""

from __future__ import annotations

import pytest

from qwen_swe.train.provenance import ResumeRefused, check_resume_compatible, fingerprint_changes, math_fingerprint

from .configs import config_with


def test_math_fingerprint_tracks_math_only():
    base = config_with()
    assert math_fingerprint(config_with("optim.lr=1e-4")) != math_fingerprint(base)
    assert math_fingerprint(config_with("data.layouts.icl=0")) != math_fingerprint(base)
    for knob in ("run.eval_every=7", "run.checkpoint_every=9", "run.output_dir=/elsewhere", "data.num_workers=0",
                 "run.max_steps=5", "run.keep_last=1", "train.gradient_checkpointing=true"):
        assert math_fingerprint(config_with(knob)) == math_fingerprint(base), knob
    changes = fingerprint_changes(math_fingerprint(base), math_fingerprint(config_with("optim.lr=1e-4")))
    assert changes == ["optim.lr: 2e-05 -> 0.0001"]
    # Inert knobs do not count: LoRA settings in full mode, fp32-kept modules unless the weights are bf16.
    assert math_fingerprint(config_with("train.lora.r=4")) == math_fingerprint(base)
    assert math_fingerprint(config_with("train.mode=lora", "train.lora.r=4")) != \
           math_fingerprint(config_with("train.mode=lora"))
    assert math_fingerprint(config_with("train.keep_fp32_modules=[norm]")) == math_fingerprint(base)


def test_resume_refuses_changes_unless_named_and_reads_new_knobs_at_their_defaults(tmp_path):
    """What `--resume` compares: the math and the run's identity; a knob the saved manifest lacks stood at its
    default there (added to the config since, or inert), so only a non-default value counts as a change."""
    def manifest(*overrides: str, world_size: int = 2) -> dict:
        return {"math": math_fingerprint(config_with(*overrides)), "model_fingerprint": "m", "seed": 0,
                "shards_fingerprint": "s", "world_size": world_size, "precision_strategy": "fp32"}

    saved = manifest()
    del saved["math"]["objective.mask_suppressed_logits"]  # as if saved before the knob existed
    assert check_resume_compatible(saved, manifest(), tmp_path, ()) is False
    with pytest.raises(ResumeRefused, match=r"mask_suppressed_logits: True -> False\n.*--allow-changes objective"):
        check_resume_compatible(saved, manifest("objective.mask_suppressed_logits=false"), tmp_path, ())
    # a knob that is inert now is not named: leaving LoRA names train.mode, not the rank it had
    lora = manifest("train.mode=lora", "train.lora.r=32")
    with pytest.raises(ResumeRefused, match=r"refusing.*\n  train.mode: 'lora' -> 'full'\nresume unchanged"):
        check_resume_compatible(lora, manifest(), tmp_path, ())
    assert check_resume_compatible(lora, manifest(), tmp_path, ("train.mode",)) is False
    # DeepSpeed's precision is the run's too: a bf16 run does not continue in fp32 unless named
    with pytest.raises(ResumeRefused, match="precision_strategy"):
        check_resume_compatible({**saved, "precision_strategy": "deepspeed-bf16 (fp32 master weights)"},
                                {**manifest(), "precision_strategy": "deepspeed-fp32 (fp32 master weights)"},
                                tmp_path, ())
    with pytest.raises(ResumeRefused, match=r"optim.lr: 2e-05 -> 0.0001"):
        check_resume_compatible(saved, manifest("optim.lr=1e-4"), tmp_path, ())
    assert check_resume_compatible(saved, manifest("optim.lr=1e-4"), tmp_path, ("optim.lr",)) is False
    # a LoRA rank is inert in a full run: saved and current both leave it out
    assert check_resume_compatible(saved, manifest("train.lora.r=4"), tmp_path, ()) is False
    # a new world size is allowed only by name, and then the reader re-deals the data
    with pytest.raises(ResumeRefused, match="world_size: 2 -> 4"):
        check_resume_compatible(saved, manifest(world_size=4), tmp_path, ())
    assert check_resume_compatible(saved, manifest(world_size=4), tmp_path, ("world_size",)) is True
