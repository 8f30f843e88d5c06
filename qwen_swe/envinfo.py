"""`qwen-swe env`: what this machine offers for training, as text and as JSON."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import platform
import sys
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

PACKAGES = (
    "qwen-swe", "torch", "torchaudio", "qwen-tts", "transformers", "accelerate", "deepspeed", "peft",
    "bitsandbytes", "webdataset", "datasets", "evaluate", "tensorboard", "click", "soundfile", "soxr", "librosa",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is missing): what runs, builds and evals record."""
    return {name: _version(name) for name in names}


def _quietly_import(module: str) -> tuple[bool, str]:
    """Import a module whose import prints banners; return (ok, error message)."""
    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            importlib.import_module(module)
        return True, ""
    except Exception as error:  # any failure to load is what we report
        return False, f"{type(error).__name__}: {error}".splitlines()[0][:200]


def _attention_implementations(torch: Any) -> dict[str, str]:
    found = {"eager": "available", "sdpa": "available" if hasattr(torch.nn.functional, "scaled_dot_product_attention")
             else "missing"}
    ok, error = _quietly_import("flash_attn")
    found["flash_attention_2"] = "available" if ok else f"not installed ({error})"
    return found


def _deepspeed_ops() -> dict[str, str]:
    ok, error = _quietly_import("deepspeed")
    if not ok:
        return {"deepspeed": f"fails to import: {error}"}
    ops = {}
    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        from deepspeed.ops.op_builder import CPUAdamBuilder  # noqa: WPS433 (lazy by design)

        try:
            ops["cpu_adam"] = "compatible" if CPUAdamBuilder().is_compatible(verbose=False) else "incompatible"
        except Exception as error:  # builder probing may raise on odd toolchains
            ops["cpu_adam"] = f"unknown ({type(error).__name__})"
    return ops


def collect() -> dict[str, Any]:
    import torch

    rocm = getattr(torch.version, "hip", None)
    cuda = torch.version.cuda
    device = "cpu"
    devices = []
    if torch.cuda.is_available():
        device = "rocm" if rocm else "cuda"
        devices = [
            {"index": i, "name": torch.cuda.get_device_name(i),
             "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())
        ]
    if device == "cpu":
        bf16 = True  # CPU autocast and bf16 tensors work on every x86-64/aarch64 torch build we support
    else:
        bf16 = bool(torch.cuda.is_bf16_supported())
    from .train.precision import SLOW_BF16, bf16_slowdown

    slowdown = round(bf16_slowdown(device), 2) if bf16 else None
    bnb_ok, bnb_error = _quietly_import("bitsandbytes.optim")
    advice = []
    if rocm:
        advice += [
            "ROCm: use attn_implementation=sdpa (flash-attention's composable-kernel build fails on gfx1201).",
            "ROCm: SDPA gets AOTriton acceleration from ROCm 7.2 on.",
            "ROCm: bitsandbytes 8-bit optimizers need a ROCm 7.2.3+ build of bitsandbytes.",
        ]
    if device == "cpu":
        advice.append("No GPU visible: training runs on the CPU (fine for tests and the demo only).")
    if slowdown is not None and slowdown >= SLOW_BF16:
        advice.append(f"bf16 matmuls take {slowdown:.0f}x the time of fp32 here (no native bf16 units): train with "
                      "train.precision=fp32 on this machine.")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_build": {"cuda": cuda, "rocm": rocm},
        "device": device,
        "devices": devices,
        "bf16_supported": bf16,
        "bf16_matmul_time_vs_fp32": slowdown,  # measured here: > 1 means bf16 is slower
        "fp16": "never used (unstable for Qwen3-TTS)",
        "attention_implementations": _attention_implementations(torch),
        "deepspeed_ops": _deepspeed_ops(),
        "bitsandbytes": "loads" if bnb_ok else f"fails: {bnb_error}",
        "advice": advice,
    }


def render(info: dict[str, Any]) -> str:
    lines = [f"python {info['python']} on {info['platform']}", "", "packages:"]
    for name, version in info["packages"].items():
        lines.append(f"  {name:<14} {version or 'not installed'}")
    build = info["torch_build"]
    lines += [
        "",
        f"device:          {info['device']}"
        + (f" (cuda {build['cuda']})" if build["cuda"] else "")
        + (f" (rocm/hip {build['rocm']})" if build["rocm"] else ""),
    ]
    for gpu in info["devices"]:
        lines.append(f"  gpu {gpu['index']}: {gpu['name']}, {gpu['memory_gb']} GB")
    slowdown = info.get("bf16_matmul_time_vs_fp32")
    lines.append(f"bf16 supported:  {'yes' if info['bf16_supported'] else 'no'}"
                 + (f" (a bf16 matmul takes {slowdown:g}x the time of fp32 here)" if slowdown is not None else ""))
    lines.append("attention:       " + ", ".join(f"{k}: {v}" for k, v in info["attention_implementations"].items()))
    lines.append("deepspeed ops:   " + ", ".join(f"{k}: {v}" for k, v in info["deepspeed_ops"].items()))
    lines.append(f"bitsandbytes:    {info['bitsandbytes']}")
    for note in info["advice"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
