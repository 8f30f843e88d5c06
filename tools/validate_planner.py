"""Check the memory planner against the measured peak memory of real training steps on this CPU.

For each case below a fresh Python process builds a random-weight Qwen3TTSForConditionalGeneration at a size well
above the tiny test models (released 0.6B layer shapes and the released 151936-row text vocabulary, fewer talker
layers so it fits this machine), lays out a real batch with `qwen_swe.layout`, and runs two training steps
(forward + backward through `TalkerObjective`, gradient clipping, torch AdamW: the second step has the optimizer
state allocated, as every later step does). It reports the peak resident set size (`ru_maxrss`) minus the RSS
the process had after its imports and before building the model, and the planner's estimate for the same model,
batch and settings on a "cpu" host (no device context, no allocator slack).

Prints one JSON object: per case the estimate, the measurement and the relative error, and the largest error.

    .venv/bin/python tools/validate_planner.py                 # all cases (a few minutes, up to ~10 GB RSS)
    .venv/bin/python tools/validate_planner.py --case weights  # one case
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL = 0.15  # relative error the planner should stay within

# Each case: released 0.6B shapes with `talker_layers` layers, `samples` equal-length samples of `frames` frames
# (equal lengths: no padding mask, so sdpa runs its causal kernel as on a GPU), training settings.
CASES: dict[str, dict[str, Any]] = {
    # Weights, gradients and Adam states dominate: the whole model trains, the text embedding included.
    "weights": {"talker_layers": 4, "samples": 4, "frames": 24, "freeze_text_embedding": False,
                "gradient_checkpointing": False},
    # Activations dominate: 8 talker layers, 256 frames (4096 code-predictor positions), text embedding frozen.
    "activations": {"talker_layers": 8, "samples": 4, "frames": 64, "freeze_text_embedding": True,
                    "gradient_checkpointing": False},
    # The same batch with gradient checkpointing.
    "checkpointing": {"talker_layers": 8, "samples": 4, "frames": 64, "freeze_text_embedding": True,
                      "gradient_checkpointing": True},
}
TEXT = "Vi åker till Malmö med tåget i morgon bitti, och sedan vidare till Köpenhamn över bron."


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kilobytes


def model_config(case: dict[str, Any]) -> dict[str, Any]:
    from qwen_swe.model_shapes import model_config_dict

    config = model_config_dict("0.6b")
    config["talker_config"]["num_hidden_layers"] = case["talker_layers"]
    return config


def measure(name: str) -> dict[str, Any]:
    """Runs inside a fresh process: peak RSS of two real training steps over the post-import baseline."""
    case = CASES[name]
    import torch

    torch.manual_seed(0)
    from qwen_swe.layout import IGNORE, Sample, SequenceLayout
    from qwen_swe.model_shapes import CODEBOOK_SIZE, NUM_CODE_GROUPS
    from qwen_swe.modeling import import_qwen_tts
    from qwen_swe.objective import TalkerObjective
    from qwen_swe.text_tokenizer import load_qwen_text_tokenizer

    import_qwen_tts()
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    tokenizer = load_qwen_text_tokenizer()
    config = Qwen3TTSConfig(**model_config(case))
    layout = SequenceLayout(config, tokenizer)
    generator = torch.Generator().manual_seed(1)
    samples = [Sample(key=f"s{i}", text=TEXT, language="german",
                      codes=torch.randint(0, CODEBOOK_SIZE, (case["frames"], NUM_CODE_GROUPS), generator=generator),
                      xvector=torch.randn(config.talker_config.hidden_size, generator=generator))
               for i in range(case["samples"])]
    batch = layout.collate([layout.build(s, "non_streaming") for s in samples])
    baseline = rss_peak_bytes()

    config._attn_implementation = "sdpa"
    config.talker_config._attn_implementation = "sdpa"
    config.talker_config.code_predictor_config._attn_implementation = "sdpa"
    model = Qwen3TTSForConditionalGeneration(config)
    model.speaker_encoder.requires_grad_(False)
    if case["freeze_text_embedding"]:
        model.talker.model.text_embedding.requires_grad_(False)
    if case["gradient_checkpointing"]:
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
        model.talker.model.gradient_checkpointing_enable(**kwargs)
        model.talker.code_predictor.model.gradient_checkpointing_enable(**kwargs)
    model.train()
    objective = TalkerObjective(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, weight_decay=0.01)
    after_model = rss_peak_bytes()
    started = time.perf_counter()
    losses = []
    for _ in range(2):
        out = objective(batch)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out["loss"]))
    return {
        "peak_bytes": rss_peak_bytes() - baseline,
        "model_bytes": after_model - baseline,
        "seconds": round(time.perf_counter() - started, 1),
        "losses": [round(v, 4) for v in losses],
        "batch": {"positions": int(batch.text_ids.numel()), "target_frames": int(batch.sub_frames.numel()),
                  "supervised": int((batch.labels != IGNORE).sum())},
    }


def planner_estimate(name: str, batch: dict[str, int]) -> dict[str, Any]:
    from qwen_swe.plan import BatchShape, ModelShape, Settings, cpu_host, estimate

    case = CASES[name]
    shape = ModelShape.from_config(model_config(case), name=f"0.6b x {case['talker_layers']} talker layers")
    settings = Settings(precision="fp32", optimizer="adamw", gradient_checkpointing=case["gradient_checkpointing"],
                        freeze_text_embedding=case["freeze_text_embedding"])
    result = estimate(shape, settings, cpu_host(64 * 1024**3), batch=BatchShape(**batch))
    return {"total_bytes": result.gpu_total, "parameters": result.parameters["total"],
            "trainable": result.trainable_parameters,
            "breakdown_gb": {k: round(v / 1024**3, 3) for k, v in result.gpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=list(CASES), action="append", help="Run only these cases.")
    parser.add_argument("--measure", choices=list(CASES), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    report: dict[str, Any] = {"goal_relative_error": GOAL, "device": "cpu (fp32, torch AdamW)", "cases": {}}
    for name in args.case or list(CASES):
        child = subprocess.run([sys.executable, __file__, "--measure", name], capture_output=True, text=True,
                               cwd=ROOT)
        if child.returncode != 0:
            raise SystemExit(f"case {name} failed:\n{child.stderr[-3000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        planned = planner_estimate(name, measured["batch"])
        error = (planned["total_bytes"] - measured["peak_bytes"]) / measured["peak_bytes"]
        report["cases"][name] = {
            "settings": CASES[name], "batch": measured["batch"], "parameters": planned["parameters"],
            "trainable_parameters": planned["trainable"],
            "estimated_gb": round(planned["total_bytes"] / 1024**3, 3),
            "measured_peak_gb": round(measured["peak_bytes"] / 1024**3, 3),
            "measured_model_gb": round(measured["model_bytes"] / 1024**3, 3),
            "relative_error": round(error, 4), "estimate_breakdown_gb": planned["breakdown_gb"],
            "step_seconds": measured["seconds"], "losses": measured["losses"],
        }
    errors = [abs(case["relative_error"]) for case in report["cases"].values()]
    report["max_abs_relative_error"] = round(max(errors), 4)
    report["goal_met"] = max(errors) <= GOAL
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
