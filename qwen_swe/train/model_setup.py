"""Turning a loaded `Qwen3TTSForConditionalGeneration` into the network a run trains, before TalkerObjective wraps it.

`prepare_model` does, in this order:

1. registers the run's language (Swedish) at a free codec row if the model lacks it;
2. sets the weight dtypes as the run's precision says (`precision.apply_precision`);
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

import logging
import re
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..language import add_language
from .config import ConfigError, LoraSection, RunConfig
from .precision import Precision, apply_precision, resolve_precision

log = logging.getLogger(__name__)

CODEC_ROWS_MODULE = "talker.model.codec_embedding"
SPEAKER_ENCODER = re.compile(r"(^|\.)speaker_encoder\.")


# ------------------------------------------------------------------------------------------ prepare
def prepare_model(model: nn.Module, config: RunConfig, device_type: str,
                  precision: Optional[Precision] = None) -> tuple[nn.Module, dict[str, Any]]:
    """Language row, dtypes, LoRA, freezing and gradient checkpointing, as the config says (see module doc).

    `precision`: what the trainer resolved (DeepSpeed's config included); by default `train.precision` alone."""
    train = config.train
    precision = precision or resolve_precision(train.precision)
    summary: dict[str, Any] = {"device_type": device_type, "mode": train.mode}
    summary["language"] = ensure_language(model, config.model.language, config.model.language_init)
    check_data_language(model, config.data.language)
    model.requires_grad_(True)  # trainability is decided here, not by whatever loaded the model
    summary["precision"] = apply_precision(model, precision, train.keep_fp32_modules, device_type)
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
