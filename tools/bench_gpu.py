"""Training throughput on a GPU at the released shapes: frames/s, achieved TFLOP/s, MFU and peak memory.

For each released shape (0.6B, 1.7B), attention kernel (sdpa; flash_attention_2 when flash-attn imports) and share
of frames the sub-talker is scored on (1 and 1/16), a random-weight Qwen3TTSForConditionalGeneration with the
released widths and all layers trains full (fp32 weights, bf16 autocast: the `bf16-mixed` strategy of the GPU
presets; text embedding frozen; fused AdamW) on one frame-budget batch of equal-length samples (`--frame-budget`,
`--frames-per-sample`) laid out by `qwen_swe.layout` (streaming layout, Swedish text). After `--warmup` steps,
`--steps` optimizer steps are timed with the two shares interleaved step by step. FLOPs come from the shapes
(`qwen_swe.plan.step_flops`: text projection, talker with causal attention, codebook-0 head, code predictor and its
heads); MFU divides the achieved rate by `--peak-tflops` (default: the card's dense bf16 figure when it is known).

Needs torch with CUDA (or ROCm), transformers and qwen-tts; nothing else of this package's pinned stack (it imports
only qwen_swe.layout, objective, model_shapes, plan and text_tokenizer from this checkout). Prints one JSON object.

    python tools/bench_gpu.py                            # both shapes, about 3 minutes on one H100
    python tools/bench_gpu.py --shape 1.7b --frame-budget 8192
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARES = (1.0, 0.0625)
TEXT = ("Vi åker till Malmö med tåget i morgon bitti, och sedan vidare till Köpenhamn över bron. "
        "Det regnade hela natten, men på morgonen sken solen över skärgården.")  # about 1.5 tokens a frame
# Dense bf16 tensor-core peaks (TFLOP/s) by device name fragment, for MFU.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "MI300X": 1307.0, "R9700": 191.0}


def peak_tflops(name: str) -> float | None:
    return next((value for fragment, value in PEAK_TFLOPS.items() if fragment in name), None)


def attention_kernels() -> list[str]:
    import importlib.util

    return ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])


def build(shape: str, attention: str, device: Any, tiny: bool) -> tuple[Any, Any]:
    from qwen_swe.objective import TalkerObjective
    from qwen_swe.tiny import random_model

    config, model = random_model(shape, released=not tiny, attention=attention)
    model.to(device)
    model.speaker_encoder.requires_grad_(False)
    model.talker.model.text_embedding.requires_grad_(False)
    model.train()
    return config, TalkerObjective(model)


def measure(shape: str, attention: str, args: argparse.Namespace, device: Any) -> dict[str, Any]:
    import torch

    from qwen_swe.layout import IGNORE
    from qwen_swe.objective import frame_sampling_generator, sample_sub_talker_frames
    from qwen_swe.model_shapes import model_config_dict
    from qwen_swe.plan import BatchShape, ModelShape, step_flops
    from qwen_swe.tiny import random_batch

    config, objective = build(shape, attention, device, args.tiny)
    cuda = device.type == "cuda"
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    batch = random_batch(config, max(1, args.frame_budget // args.frames_per_sample), args.frames_per_sample, TEXT)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=cuda)
    model_shape = ModelShape.from_config(model_config_dict(shape, tiny=args.tiny), name=shape)
    frames = int(batch.sub_frames.numel())
    sequence = int(batch.attention_mask.shape[1])

    def step(share: float, draw: int) -> float:
        scored = sample_sub_talker_frames(batch, share, frame_sampling_generator(0, draw, 0, 0)).to(device)
        synchronize()
        started = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = objective(scored)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        return time.perf_counter() - started

    for draw in range(args.warmup):
        for share in SHARES:
            step(share, draw)
    times: dict[float, list[float]] = {share: [] for share in SHARES}
    peaks: dict[float, int] = {}
    for draw in range(args.steps):
        for share in SHARES:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times[share].append(step(share, args.warmup + draw))
            peaks[share] = max(peaks.get(share, 0), torch.cuda.max_memory_allocated() if cuda else 0)
    peak = args.peak_tflops or (peak_tflops(torch.cuda.get_device_name()) if cuda else None)
    out: dict[str, Any] = {"batch": {"samples": len(batch.keys), "frames": frames, "sequence": sequence},
                           "shares": {}}
    for share in SHARES:
        seconds = statistics.median(times[share])
        shape_now = BatchShape(positions=int(batch.attention_mask.sum()), target_frames=frames,
                               supervised=int((batch.labels != IGNORE).sum()),
                               scored_frames=max(1, round(share * frames)))
        flops = step_flops(model_shape, shape_now, sequence)["total"]
        achieved = flops / seconds / 1e12
        out["shares"][str(share)] = {
            "step_seconds": round(seconds, 4), "frames_per_s": round(frames / seconds, 1),
            "tflops_per_step": round(flops / 1e12, 2), "achieved_tflops": round(achieved, 1),
            "mfu": round(achieved / peak, 4) if peak else None,
            "peak_memory_gb": round(peaks[share] / 1024**3, 2) if cuda else None}
    out["speedup_at_1_16"] = round(out["shares"]["1.0"]["step_seconds"]
                                   / out["shares"][str(SHARES[-1])]["step_seconds"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["0.6b", "1.7b"], action="append", help="Only these shapes.")
    parser.add_argument("--frame-budget", type=int, default=4096, help="Frames per batch (the `full` preset's).")
    parser.add_argument("--frames-per-sample", type=int, default=150, help="12 s utterances at 12.5 frames/s.")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None, help="Dense bf16 peak of the device, for MFU.")
    parser.add_argument("--device", default="cuda", help="cuda (CUDA or ROCm); cpu only to check the script runs.")
    parser.add_argument("--tiny", action="store_true", help="Tiny test shapes instead of the released ones (a check "
                        "that the script runs, with --device cpu; its figures mean nothing).")
    args = parser.parse_args()
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: torch sees no GPU (CUDA or ROCm); run it on a GPU host")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report: dict[str, Any] = {
        "device": name, "torch": torch.__version__, "shapes": "tiny (a run check)" if args.tiny else "released",
        "peak_tflops": args.peak_tflops or peak_tflops(name),
        "setup": "full fine-tune, fp32 weights + bf16 autocast, fused AdamW, text embedding frozen, no recomputation",
        "frame_budget": args.frame_budget, "frames_per_sample": args.frames_per_sample, "results": {}}
    started = time.time()
    for shape in args.shape or ["0.6b", "1.7b"]:
        for attention in attention_kernels():
            report["results"][f"{shape}/{attention}"] = measure(shape, attention, args, device)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the model and its optimizer went with measure()
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
