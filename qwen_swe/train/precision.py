"""Precision, decided in one place: what dtype the weights have, whether autocast runs, which attention kernels can
be used, and what a DeepSpeed config's bf16 section means for all of that.

Three settings, in `train.precision`'s words (fp16 is refused: its range overflows in Qwen3-TTS training):
- `fp32`: fp32 weights, no autocast;
- `bf16-mixed`: fp32 weights with bf16 autocast (accelerate's mixed precision);
- `bf16-pure`: bf16 weights except `train.keep_fp32_modules` (norms, output heads), which stay fp32 behind dtype
  bridges.

Under DeepSpeed the DeepSpeed config decides, not `train.precision`: a config with `bf16.enabled` runs the forward
and backward on bf16 weights and steps fp32 master weights, which costs memory like `bf16-mixed` (16 bytes per
trained parameter, bf16 activations), so it is `bf16-mixed` to the planner and the kernels; without it, `fp32`.
`bf16-pure` is refused there (DeepSpeed casts the weights itself).

The trainer, `model_setup`, the optimizer builder, the config validation, `launch/preflight.py`, the planner,
export and diagnosis all ask `resolve_precision` (or use `FP32`) instead of reading the settings themselves. Light
at import (no torch): the planner and the CLI use the choice list.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16-mixed", "bf16-pure")

FP16_REJECTED = (
    "train.precision: fp16 is not supported: its range (max 65504) overflows in Qwen3-TTS training and the public "
    "fp16 recipes diverge; use bf16-mixed (bf16 autocast over fp32 weights), bf16-pure, or fp32"
)
BF16_PURE_UNDER_DEEPSPEED = (
    "train.precision: bf16-pure casts the weights itself; under DeepSpeed the config's bf16 section decides "
    "precision (fp32 master weights); use train.precision=fp32"
)

# Modules whose output is only ever scored (loss, sampling): under bf16-pure their fp32 logits are kept as fp32.
OUTPUT_HEADS = re.compile(r"(^|\.)(codec_head|lm_head)(\.\d+)?$")


@dataclass(frozen=True)
class Precision:
    """What one run's precision means. `mode` is one of PRECISIONS (see the module doc for DeepSpeed's)."""

    mode: str
    deepspeed: bool = False

    @property
    def weights(self) -> str:
        """The dtype the forward and backward run the weights in."""
        return "bf16" if self.mode == "bf16-pure" or (self.deepspeed and self.mode == "bf16-mixed") else "fp32"

    @property
    def autocast(self) -> Optional[str]:
        return "bf16" if self.mode == "bf16-mixed" and not self.deepspeed else None

    @property
    def accelerate_mixed_precision(self) -> Optional[str]:
        """Accelerator(mixed_precision=...): None under DeepSpeed, which takes precision from its own config."""
        if self.deepspeed:
            return None
        return "bf16" if self.autocast else "no"

    @property
    def casts_weights(self) -> bool:
        """True when `apply_precision` itself casts weights to bf16 (never under DeepSpeed)."""
        return self.mode == "bf16-pure"

    @property
    def uses_bf16(self) -> bool:
        """bf16 somewhere in the step: the device must support it, and bf16-only kernels (flash-attn) may be used."""
        return self.mode != "fp32"

    @property
    def label(self) -> str:
        """How the run manifest, the model card and the start-up line name it."""
        if self.deepspeed:
            return f"deepspeed-{'bf16' if self.mode == 'bf16-mixed' else 'fp32'} (fp32 master weights)"
        return self.mode


FP32 = Precision("fp32")  # export and diagnosis work in full precision whatever the run trained in


def resolve_precision(train_precision: str, deepspeed_config: Optional[Mapping[str, Any]] = None) -> Precision:
    """The run's precision from `train.precision` and the active DeepSpeed config (None: DeepSpeed not in use)."""
    if deepspeed_config is None:
        if train_precision == "fp16":
            raise ConfigError(FP16_REJECTED)
        if train_precision not in PRECISIONS:
            raise ConfigError(f"train.precision: must be one of {', '.join(PRECISIONS)}, got {train_precision!r}")
        return Precision(train_precision)
    if train_precision == "bf16-pure":
        raise ConfigError(BF16_PURE_UNDER_DEEPSPEED)
    return Precision("bf16-mixed" if deepspeed_bf16(deepspeed_config) else "fp32", deepspeed=True)


def mixed_precision_for_accelerator(train_precision: str) -> Optional[str]:
    """Accelerator(mixed_precision=...), needed before the Accelerator (and so its DeepSpeed plugin) exists: None
    when `accelerate launch` runs DeepSpeed, which takes precision from its own config."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return None
    return resolve_precision(train_precision).accelerate_mixed_precision


def deepspeed_bf16(deepspeed_config: Mapping[str, Any]) -> bool:
    return bool(deepspeed_config.get("bf16", {}).get("enabled"))


# ------------------------------------------------------------------------------------------ weights
def apply_precision(model: Any, precision: Precision, keep_fp32: list[str], device_type: str) -> dict[str, Any]:
    """Cast parameters (never buffers: RoPE's inv_freq stays fp32 as in a bf16-loaded inference model)."""
    import torch

    from .model_setup import is_partitioned

    if precision.uses_bf16:
        check_bf16_supported(device_type)
    if not precision.casts_weights:
        for parameter in model.parameters():
            if is_partitioned(parameter):
                continue  # DeepSpeed owns its dtype (its config's bf16 section, fp32 master weights)
            if parameter.is_floating_point() and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()
        # DeepSpeed casts its copy itself (bf16 under a bf16 config); everyone else trains these fp32 weights
        return {"name": precision.mode, "weights": precision.weights, "autocast": precision.autocast}
    kept, used = [], set()
    for name, module in model.named_modules():
        direct = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
        if not direct:
            continue
        hits = [s for s in keep_fp32 if s in name]
        used.update(hits)
        for parameter in direct:
            parameter.data = parameter.data.to(torch.float32 if hits else torch.bfloat16)
        if hits:
            bridge_dtypes(module, keep_output_fp32=bool(OUTPUT_HEADS.search(name)))
            kept.append(name)
    unused = [s for s in keep_fp32 if s not in used]
    if unused:
        raise ConfigError(f"train.keep_fp32_modules: {unused} match no module name; names look like "
                             "'talker.model.norm', 'talker.codec_head', 'talker.code_predictor.lm_head.0'")
    return {"name": precision.mode, "weights": "bf16", "autocast": None, "fp32_modules": len(kept)}


SLOW_BF16 = 3.0  # bf16 matmuls this many times slower than fp32: the hardware has no bf16 units worth using


def bf16_slowdown(device_type: str, size: int = 256, repeats: int = 3) -> float:
    """How many times longer a bf16 matmul takes than an fp32 one here (a timed probe of a few milliseconds): about
    0.5 where bf16 has tensor cores or AMX, tens of times on CPUs without native bf16 (AVX2 only), where a bf16
    strategy makes every step that much slower."""
    import time

    import torch

    device = torch.device("cuda" if device_type in ("cuda", "rocm") else device_type)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        best = float("inf")
        for _ in range(repeats + 1):  # the first call warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(4):
                a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
        timings[dtype] = best
    return timings[torch.bfloat16] / max(timings[torch.float32], 1e-9)


def slow_bf16_warning(precision: Precision, device_type: str) -> Optional[str]:
    """A warning when the chosen precision computes in bf16 on a device where bf16 is much slower than fp32."""
    if not precision.uses_bf16:
        return None
    slowdown = bf16_slowdown(device_type)
    if slowdown < SLOW_BF16:
        return None
    return (f"train.precision {precision.label}: bf16 matmuls run {slowdown:.0f}x slower than fp32 on this "
            f"{device_type} (no native bf16 units); every step will be that much slower; use train.precision=fp32 "
            "here (bf16 pays off on GPUs and CPUs with AMX)")


def check_bf16_supported(device_type: str) -> None:
    import torch

    if device_type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU has no bf16 support; use train.precision=fp32 (fp16 is not "
                             "an option: see the README on precision)")


def bridge_dtypes(module: Any, keep_output_fp32: bool) -> None:
    """Let an fp32 module sit between bf16 modules: inputs go up to fp32, outputs back to the caller's dtype.

    Without this a kept-fp32 RMSNorm returns fp32 (`weight * x` promotes) and the next bf16 Linear fails on a
    dtype mismatch. Heads keep fp32 output: their logits only feed the loss or sampling.
    """
    import torch

    state: dict[str, Any] = {"dtype": None}

    def to_fp32(value: Any) -> Any:
        return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    def before(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        floating = [a for a in list(args) + list(kwargs.values())
                    if isinstance(a, torch.Tensor) and a.is_floating_point()]
        state["dtype"] = floating[0].dtype if floating else None
        return tuple(to_fp32(a) for a in args), {k: to_fp32(v) for k, v in kwargs.items()}

    def after(_module: Any, _args: tuple, _kwargs: dict, output: Any) -> Any:
        dtype = state["dtype"]
        if keep_output_fp32 or dtype is None or dtype == torch.float32:
            return output
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.to(dtype)
        return output

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)


# ------------------------------------------------------------------------------------------ attention
def resolve_attn_implementation(requested: str, device_type: str,
                                precision: Optional[str] = None) -> tuple[str, Optional[str]]:
    """(implementation to load the model with, warning or None); `precision` is a Precision's mode.

    auto: flash_attention_2 on NVIDIA CUDA when flash-attn imports (and the run is not fp32: the kernels take
    bf16/fp16 only), otherwise sdpa. ROCm reports device type "cuda" too; flash-attn does not build for the
    R9700 (gfx1201), so auto never picks it there.
    """
    import torch

    rocm = bool(getattr(torch.version, "hip", None))
    if requested == "auto":
        if device_type != "cuda" or rocm or precision == "fp32":
            return "sdpa", None
        error = _flash_attn_import_error()
        if error:
            return "sdpa", f"flash-attn is not importable ({error}); using sdpa"
        return "flash_attention_2", None
    if requested == "flash_attention_2":
        if device_type != "cuda":
            return "sdpa", (f"model.attn_implementation=flash_attention_2 needs a GPU, device is {device_type}; "
                            "using sdpa")
        error = _flash_attn_import_error()
        if error:
            return "sdpa", (f"model.attn_implementation=flash_attention_2 but flash-attn is not importable "
                            f"({error}); using sdpa")
        if rocm:
            return "flash_attention_2", ("flash-attn on ROCm fails on RDNA4 (gfx1201) and is hard-coded upstream; "
                                         "set model.attn_implementation=sdpa if attention errors")
        return "flash_attention_2", None
    return requested, None


def _flash_attn_import_error() -> Optional[str]:
    try:
        importlib.import_module("flash_attn")
        return None
    except Exception as error:  # ImportError, or a broken build raising anything at import
        return f"{type(error).__name__}: {error}".splitlines()[0][:160]
