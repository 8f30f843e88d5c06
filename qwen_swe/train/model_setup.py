"""Turning a loaded `Qwen3TTSForConditionalGeneration` into the network a run trains, before TalkerObjective wraps it.

`prepare_model` does, in this order:

1. registers the run's language (Swedish) at a free codec row if the model lacks it;
2. sets the weight dtypes: fp32 weights for `fp32` and `bf16-mixed` (the trainer's autocast does the bf16 part),
   bf16 weights for `bf16-pure` except the modules named in `train.keep_fp32_modules`, which stay fp32 and are
   bridged with hooks (inputs up to fp32, outputs back to the caller's dtype; output heads keep fp32 logits);
3. LoRA through peft (mode `lora`): adapters on the talker's decoder layers only (a regex: bare names such as
   "q_proj" would also hit the code predictor), `train.lora.trainable_extra` and the talker's codec embedding
   (codes, specials, language rows) trained fully as peft `modules_to_save`. peft wraps the WHOLE model: wrapping
   `model.talker` would make `talker.model` resolve to peft's own `.model` attribute (the talker itself) and break
   every `talker.model(...)` call. Adapters are created after the bf16 cast, so peft keeps them fp32;
4. freezes the speaker encoder (always) and every parameter matching `train.freeze`;
5. gradient checkpointing, non-reentrant (the reentrant variant drops gradients when the checkpointed block's
   inputs come from frozen embeddings), on the talker's and the code predictor's decoders.

It returns the module to wrap (a `peft.PeftModel` in LoRA mode: `save_pretrained` writes the adapter,
`merge_and_unload()` gives back a plain model for export) and a summary for the run manifest.
"""

from __future__ import annotations

import importlib
import logging
import re
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..language import add_language
from .config import ConfigError, LoraSection, RunConfig

log = logging.getLogger(__name__)

CODEC_ROWS_MODULE = "talker.model.codec_embedding"
SPEAKER_ENCODER = re.compile(r"(^|\.)speaker_encoder\.")
# Modules whose output is only ever scored (loss, sampling): under bf16-pure their fp32 logits are kept as fp32.
OUTPUT_HEADS = re.compile(r"(^|\.)(codec_head|lm_head)(\.\d+)?$")


# ------------------------------------------------------------------------------------------ attention
def resolve_attn_implementation(requested: str, device_type: str,
                                precision: Optional[str] = None) -> tuple[str, Optional[str]]:
    """(implementation to load the model with, warning or None).

    auto: flash_attention_2 on NVIDIA CUDA when flash-attn imports (and the run is not fp32: the kernels take
    bf16/fp16 only), otherwise sdpa. ROCm reports device type "cuda" too; flash-attn does not build for the
    R9700 (gfx1201), so auto never picks it there.
    """
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
    except Exception as error:  # ImportError, or an ABI mismatch surfacing as OSError/RuntimeError
        return f"{type(error).__name__}: {error}"
    return None


# ------------------------------------------------------------------------------------------ prepare
def prepare_model(model: nn.Module, config: RunConfig, device_type: str) -> tuple[nn.Module, dict[str, Any]]:
    """Language row, dtypes, LoRA, freezing and gradient checkpointing, as the config says (see module doc)."""
    train = config.train
    summary: dict[str, Any] = {"device_type": device_type, "mode": train.mode}
    summary["language"] = ensure_language(model, config.model.language, config.model.language_init)
    check_data_language(model, config.data.language)
    model.requires_grad_(True)  # trainability is decided here, not by whatever loaded the model
    summary["precision"] = apply_precision(model, train.precision, train.keep_fp32_modules, device_type)
    if train.mode == "lora":
        model, summary["lora"] = apply_lora(model, train.lora)
    summary["frozen"] = freeze(model, train.freeze)
    summary["gradient_checkpointing"] = False
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
        summary["gradient_checkpointing"] = "non-reentrant"
    summary.update(count_parameters(model))
    return model, summary


def base_model(model: nn.Module) -> nn.Module:
    """The Qwen3TTSForConditionalGeneration inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def ensure_language(model: nn.Module, name: str, init: str) -> dict[str, Any]:
    languages = {k.lower(): int(v) for k, v in dict(model.config.talker_config.codec_language_id or {}).items()}
    if name in languages:
        return {"name": name, "row": languages[name], "registered_now": False}
    try:
        with gathered(model.talker.get_input_embeddings().weight):
            record = add_language(model, name, init=init)
    except ValueError as error:
        raise ConfigError(f"model.language_init: cannot register {name!r}: {error}") from error
    log.info("registered language %s at codec row %d (init %s)", record.name, record.row, record.init)
    return {"name": record.name, "row": record.row, "init": record.init, "source_rows": record.source_rows,
            "registered_now": True}


def is_partitioned(parameter: torch.Tensor) -> bool:
    """True for a ZeRO-3 parameter: transformers loads under zero.Init whenever accelerate selected a ZeRO-3 plugin
    (whatever zero3_init_flag says), and such a parameter holds an empty tensor outside a gather."""
    return hasattr(parameter, "ds_id")


@contextmanager
def gathered(parameter: torch.Tensor) -> Iterator[None]:
    """Materialise a ZeRO-3 parameter for an in-place edit (rank 0's values win); a no-op otherwise."""
    if not is_partitioned(parameter):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([parameter], modifier_rank=0):
        yield


def check_data_language(model: nn.Module, name: str) -> None:
    """Samples that name no language get data.language: it must be one the layout can put in the prompt."""
    known = {k.lower() for k in dict(model.config.talker_config.codec_language_id or {})}
    if name != "auto" and name not in known:
        raise ConfigError(f"data.language: {name!r} is not a language of this model (known: auto, "
                          f"{', '.join(sorted(known))}); set it to model.language")


# ------------------------------------------------------------------------------------------ precision
def apply_precision(model: nn.Module, precision: str, keep_fp32: list[str], device_type: str) -> dict[str, Any]:
    """Cast parameters (never buffers: RoPE's inv_freq stays fp32 as in a bf16-loaded inference model)."""
    if precision in ("bf16-mixed", "bf16-pure"):
        check_bf16_supported(device_type)
    if precision != "bf16-pure":
        for parameter in model.parameters():
            if is_partitioned(parameter):
                continue  # DeepSpeed owns its dtype (its config's bf16 section, fp32 master weights)
            if parameter.is_floating_point() and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()
        return {"name": precision, "weights": "fp32", "autocast": "bf16" if precision == "bf16-mixed" else None}
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
    return {"name": precision, "weights": "bf16", "autocast": None, "fp32_modules": len(kept)}


def check_bf16_supported(device_type: str) -> None:
    if device_type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU has no bf16 support; use train.precision=fp32 (fp16 is not "
                          "an option: see the README on precision)")


def bridge_dtypes(module: nn.Module, keep_output_fp32: bool) -> None:
    """Let an fp32 module sit between bf16 modules: inputs go up to fp32, outputs back to the caller's dtype.

    Without this a kept-fp32 RMSNorm returns fp32 (`weight * x` promotes) and the next bf16 Linear fails on a
    dtype mismatch. Heads keep fp32 output: their logits only feed the loss or sampling.
    """
    state: dict[str, Optional[torch.dtype]] = {"dtype": None}

    def to_fp32(value: Any) -> Any:
        return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    def before(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        floating = [a for a in list(args) + list(kwargs.values())
                    if isinstance(a, torch.Tensor) and a.is_floating_point()]
        state["dtype"] = floating[0].dtype if floating else None
        return tuple(to_fp32(a) for a in args), {k: to_fp32(v) for k, v in kwargs.items()}

    def after(_module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> Any:
        dtype = state["dtype"]
        if keep_output_fp32 or dtype is None or dtype == torch.float32:
            return output
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.to(dtype)
        return output

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)


# ------------------------------------------------------------------------------------------ LoRA
def apply_lora(model: nn.Module, lora: LoraSection) -> tuple[nn.Module, dict[str, Any]]:
    from peft import LoraConfig, get_peft_model

    names = [name for name, _ in model.named_modules()]
    targets = [name for name in names if re.fullmatch(lora.target_modules, name)]  # peft matches with fullmatch
    if not targets:
        raise ConfigError(f"train.lora.target_modules: {lora.target_modules!r} matches no module; names look like "
                          "'talker.model.layers.0.self_attn.q_proj'")
    to_save = list(dict.fromkeys(list(lora.trainable_extra) + ([CODEC_ROWS_MODULE] if lora.train_codec_rows else [])))
    for i, extra in enumerate(lora.trainable_extra):
        if not any(name == extra or name.endswith("." + extra) for name in names):
            raise ConfigError(f"train.lora.trainable_extra[{i}]: no module named {extra!r}; "
                              "use a module name such as 'talker.text_projection'")
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, modules_to_save=to_save or None, bias="none")
    peft_model = get_peft_model(model, peft_config)
    return peft_model, {
        "r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": lora.target_modules,
        "wrapped_modules": len(targets),
        "wrapped_in_code_predictor": sum(".code_predictor." in f".{t}" for t in targets),
        "modules_to_save": to_save,
    }


# ------------------------------------------------------------------------------------------ freezing
def freeze(model: nn.Module, patterns: list[str]) -> dict[str, Any]:
    """Freeze the speaker encoder and every parameter whose name matches one of `patterns` (re.search)."""
    compiled = [re.compile(p) for p in patterns]
    hits = [0] * len(compiled)
    speaker = 0
    for name, parameter in model.named_parameters():
        if SPEAKER_ENCODER.search(name):
            parameter.requires_grad_(False)
            speaker += 1
            continue
        for i, pattern in enumerate(compiled):
            if pattern.search(name):
                parameter.requires_grad_(False)
                hits[i] += 1
    for i, (pattern, count) in enumerate(zip(patterns, hits)):
        if count == 0:
            raise ConfigError(f"train.freeze[{i}]: {pattern!r} matches no parameter; names look like "
                              "'talker.model.text_embedding.weight'")
    return {"speaker_encoder_tensors": speaker, "by_pattern": dict(zip(patterns, hits))}


# ------------------------------------------------------------------------------------------ checkpointing
def enable_gradient_checkpointing(model: nn.Module) -> None:
    base = base_model(model)
    kwargs = {"use_reentrant": False}
    base.talker.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.talker.code_predictor.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# ------------------------------------------------------------------------------------------ summary
def count_parameters(model: nn.Module) -> dict[str, Any]:
    trainable = total = frozen_tensors = trainable_tensors = 0
    dtypes: dict[str, int] = {}
    for _, parameter in model.named_parameters():
        count = int(getattr(parameter, "ds_numel", parameter.numel()))  # ZeRO-3 parameters are empty locally
        total += count
        key = str(parameter.dtype).replace("torch.", "")
        dtypes[key] = dtypes.get(key, 0) + count
        if parameter.requires_grad:
            trainable += count
            trainable_tensors += 1
        else:
            frozen_tensors += 1
    return {"trainable_params": trainable, "total_params": total, "trainable_tensors": trainable_tensors,
            "frozen_tensors": frozen_tensors, "param_dtypes": dtypes}
