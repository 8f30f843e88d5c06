"""`qwen-swe diagnose-non-finite`: replay the batch that broke a run and name the first module that went bad.

The trainer leaves a diagnostic bundle (batch keys and layouts per rank, the checkpoint in force, the config) when
it stops on non-finite numbers. This replays each rank's batch from that checkpoint's weights in fp32 with forward
and backward hooks on every module (numerics.first_non_finite).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from . import checkpoint as ckpt


def latest_bundle(run_dir: Path) -> Path:
    bundles = sorted((run_dir / "diagnostics").glob("non_finite_step*"))
    if not bundles:
        raise ValueError(f"{run_dir}: no diagnostic bundle (diagnostics/non_finite_step*); the run never stopped on "
                         "non-finite numbers")
    return bundles[-1]


def load_checkpoint_weights(objective: torch.nn.Module, checkpoint: Path) -> str:
    """Load the objective's weights from an accelerate checkpoint (plain or DeepSpeed ZeRO shards)."""
    missing, unexpected = objective.load_state_dict(ckpt.trained_state_dict(checkpoint), strict=False)
    return f"{checkpoint} (missing {len(missing)}, unexpected {len(unexpected)})"


def diagnose(run_dir: str | Path, bundle: Optional[str | Path] = None) -> dict[str, Any]:
    from ..data.mixture import open_training_index
    from ..data.stream import load_samples_by_key
    from ..layout import SequenceLayout
    from ..modeling import load_model
    from ..objective import TalkerObjective
    from .config import load_config
    from .model_setup import prepare_model
    from .numerics import fault_injection_from_env, first_non_finite
    from .precision import FP32

    run_dir = Path(run_dir)
    bundle = Path(bundle) if bundle else latest_bundle(run_dir)
    config = load_config(bundle / "config.yaml", None, [])
    ranks = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(bundle.glob("rank*.json"))]
    wrapper = load_model(config.model.path, attn_implementation="eager")
    config.train.gradient_checkpointing = False
    # replay in full precision: the question is where the numbers break
    model, _ = prepare_model(wrapper.model, config, "cpu", precision=FP32)
    objective = TalkerObjective(model, sub_talker_weight=config.objective.sub_talker_weight,
                                mask_suppressed_logits=config.objective.mask_suppressed_logits)
    checkpoint = ranks[0].get("checkpoint") if ranks else None
    weights = load_checkpoint_weights(objective, Path(checkpoint)) if checkpoint else "base model (no checkpoint yet)"
    fault = fault_injection_from_env(objective)
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    index = open_training_index(config.data.shards, config.data.sources, config.data.mixture(),
                                config.data.train_split)
    reports = []
    for rank in ranks:
        for micro in rank.get("batches", []):
            samples = load_samples_by_key(index, micro["keys"], config.data.language)
            batch = layout.collate([layout.build(s, micro["layout"]) for s in samples])
            if fault is not None:
                fault.keys = micro["keys"]
            objective.zero_grad(set_to_none=True)
            found = first_non_finite(objective, batch)
            reports.append({"rank": rank["rank"], "layout": micro["layout"], "keys": micro["keys"], **found})
    culprit = next((r["first_forward"] or r["first_backward"] for r in reports
                    if r["first_forward"] or r["first_backward"]), None)
    return {"bundle": str(bundle), "step": ranks[0]["step"] if ranks else None, "weights": weights,
            "culprit": culprit, "batches": reports}


def render(report: dict[str, Any]) -> str:
    lines = [f"bundle:  {report['bundle']} (step {report['step']})", f"weights: {report['weights']}"]
    culprit = report["culprit"]
    if culprit is None:
        lines.append("replay: every module stayed finite (the failure did not reproduce in fp32; "
                     "suspect precision: try train.precision=fp32 or keep more modules in fp32)")
    else:
        kind = "output" if "output" in culprit else ("grad_output" if "grad_output" in culprit else "grad_input")
        lines.append(f"first non-finite: {culprit['module']} ({kind})")
        lines.append("  stats: " + json.dumps(culprit[kind]))
    for batch in report["batches"]:
        first = batch["first_forward"] or batch["first_backward"]
        lines.append(f"rank {batch['rank']} {batch['layout']:<14} loss {batch['loss']}  keys {batch['keys'][:4]}"
                     + (f"  -> {first['module']}" if first else "  -> finite"))
    return "\n".join(lines)
