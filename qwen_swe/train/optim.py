"""Parameter groups, the optimizer and the learning-rate schedule of a run.

- `param_groups`: trainable parameters only; no weight decay on norms, biases and embeddings (decaying them pulls
  RMSNorm gains and codec rows toward zero for no regularisation benefit); learning-rate multipliers by regex on
  parameter names (first matching pattern wins). Every group carries a "name" for per-group learning-rate logs.
- `build_optimizer`: torch AdamW (fused on CUDA when every parameter already lives there), bitsandbytes
  AdamW8bit, or accelerate's DummyOptim when the DeepSpeed config names the optimizer (ZeRO-Offload's CPU Adam).
- `build_scheduler`: transformers' warmup + cosine/linear/constant schedules; under DeepSpeed a DummyScheduler that
  either lets the DeepSpeed config's scheduler run or hands DeepSpeed the same transformers schedule.

Under DeepSpeed (launched through accelerate with a DeepSpeed config), `build_optimizer` also fills the config's
"auto" entries that accelerate cannot: the micro batch size (batches are frame-budget sized, so "1 batch"),
gradient clipping from optim.grad_clip (accelerate would put 1.0), and the optimizer's betas/eps from the run
config. It refuses combinations that cannot work (8-bit AdamW under ZeRO, a config optimizer with optim.name adamw).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Optional

import torch
from torch import nn

from .config import ConfigError, RunConfig
from .precision import resolve_precision

log = logging.getLogger(__name__)

SCHEDULE_NAMES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
NO_DECAY_NAME = re.compile(r"(norm|embedding|embed_tokens)")


# ------------------------------------------------------------------------------------------ groups
def param_groups(model: nn.Module, config: RunConfig) -> list[dict[str, Any]]:
    """[{"name", "params", "lr", "weight_decay"}, ...] over the trainable parameters; empty groups dropped."""
    multipliers = [(pattern, re.compile(pattern), float(m)) for pattern, m in config.optim.lr_multipliers.items()]
    no_decay = _no_decay_ids(model)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    matched: set[str] = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        pattern, multiplier = next(((p, m) for p, rx, m in multipliers if rx.search(name)), (None, 1.0))
        if pattern is not None:
            matched.add(pattern)
        decay = id(parameter) not in no_decay
        key = (pattern or "", decay)
        if key not in groups:
            label = _readable(pattern) if pattern else "default"
            groups[key] = {
                "name": f"{label}/{'decay' if decay else 'no_decay'}",
                "params": [],
                "lr": config.optim.lr * multiplier,
                "weight_decay": config.optim.weight_decay if decay else 0.0,
                "lr_multiplier": multiplier,
            }
        groups[key]["params"].append(parameter)
    for pattern, _, _ in multipliers:
        if pattern not in matched:
            log.warning("optim.lr_multipliers: %r matches no trainable parameter", pattern)
    if not groups:
        raise ConfigError("train.freeze: no parameter is left to train; loosen train.freeze or check train.mode")
    return [group for group in groups.values() if group["params"]]


def _readable(pattern: str) -> str:
    """A log-friendly label for a regex: 'talker\\.text_projection' -> 'talker.text_projection'."""
    return re.sub(r"\\(.)", r"\1", pattern)


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Norm gains, biases (anything below 2-D) and embedding tables."""
    ids: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            shape = getattr(parameter, "ds_shape", parameter.shape)  # ZeRO-3 flattens partitioned parameters
            full = f"{module_name}.{name}" if module_name else name
            if len(shape) < 2 or isinstance(module, nn.Embedding) or NO_DECAY_NAME.search(full):
                ids.add(id(parameter))
    return ids


# ------------------------------------------------------------------------------------------ DeepSpeed
def active_deepspeed_config() -> Optional[dict[str, Any]]:
    """The DeepSpeed config dict of the current accelerate run, or None when DeepSpeed is not in use."""
    from accelerate.state import AcceleratorState, is_initialized

    if not is_initialized():  # no Accelerator created yet, so nothing runs under DeepSpeed
        return None
    plugin = getattr(AcceleratorState(), "deepspeed_plugin", None)
    return plugin.deepspeed_config if plugin is not None else None


def fill_deepspeed_config(ds: dict[str, Any], config: RunConfig) -> None:
    """Fill the "auto" entries accelerate leaves or fills wrongly, and refuse impossible combinations."""
    optim = config.optim
    if optim.name == "adamw_8bit":
        raise ConfigError("optim.name: adamw_8bit cannot run under DeepSpeed (ZeRO partitions the optimizer state "
                          "itself); use optim.name=adamw, or optim.name=deepspeed with an offload config")
    resolve_precision(config.train.precision, ds)  # refuses what cannot run under DeepSpeed (bf16-pure)
    named = "optimizer" in ds
    if named and optim.name != "deepspeed":
        raise ConfigError(f"optim.name: the DeepSpeed config names an optimizer ({ds['optimizer'].get('type')}); "
                          "set optim.name=deepspeed, or use a DeepSpeed config without an optimizer section")
    if optim.name == "deepspeed" and not named:
        raise ConfigError("optim.name: deepspeed needs a DeepSpeed config with an optimizer section (e.g. "
                          "ds_configs/zero2_offload.json); with ds_configs/zero2.json use optim.name=adamw")
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = 1  # one frame-budget batch per micro step
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = float(optim.grad_clip)
    if named:
        params = ds["optimizer"].setdefault("params", {})
        _fill_or_match(params, "betas", list(optim.betas), "optim.betas")
        _fill_or_match(params, "eps", optim.eps, "optim.eps")
    if "scheduler" in ds and any(m != 1.0 for m in optim.lr_multipliers.values()):
        log.warning("the DeepSpeed config's scheduler sets one learning rate for every group: "
                    "optim.lr_multipliers are ignored; remove the scheduler section to keep them")


def _fill_or_match(params: dict[str, Any], key: str, value: Any, field: str) -> None:
    current = params.get(key, "auto")
    if current == "auto":
        params[key] = value
    elif current != value:
        raise ConfigError(f"{field}: the DeepSpeed config sets optimizer.params.{key}={current}, the run config "
                          f"{value}; make them equal or set it to \"auto\" in the DeepSpeed config")


# ------------------------------------------------------------------------------------------ optimizer
def build_optimizer(groups: list[dict[str, Any]], config: RunConfig, device_type: str,
                    ds_config: Optional[dict[str, Any]] = None) -> Any:
    """AdamW / AdamW8bit / DummyOptim over `groups` (ds_config: default, the active accelerate DeepSpeed config)."""
    optim = config.optim
    ds = ds_config if ds_config is not None else active_deepspeed_config()
    if ds is not None:
        fill_deepspeed_config(ds, config)
    elif optim.name == "deepspeed":
        raise ConfigError("optim.name: deepspeed needs `accelerate launch` with a DeepSpeed config "
                          "(e.g. accelerate_configs/cpu_zero2.yaml); otherwise use adamw or adamw_8bit")
    kwargs = {"lr": optim.lr, "betas": tuple(optim.betas), "eps": optim.eps, "weight_decay": optim.weight_decay}
    if optim.name == "deepspeed":
        from accelerate.utils import DummyOptim

        return DummyOptim(groups, **kwargs)
    if optim.name == "adamw_8bit":
        return _adamw_8bit(groups, kwargs)
    return torch.optim.AdamW(groups, **kwargs, **({"fused": True} if _can_fuse(groups, device_type) else {}))


def _can_fuse(groups: list[dict[str, Any]], device_type: str) -> bool:
    """Fused AdamW: CUDA only (never on CPU), and only if every parameter is a float tensor already there."""
    if device_type != "cuda":
        return False
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)


def _adamw_8bit(groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> Any:
    try:
        import bitsandbytes as bnb
    except Exception as error:  # ImportError, or a missing native library on an unsupported platform
        raise ConfigError(f"optim.name: adamw_8bit needs bitsandbytes ({type(error).__name__}: {error}); on ROCm "
                          "install a ROCm 7.2.3+ build, or use optim.name=adamw") from error
    # bitsandbytes 0.50 removed the block_wise and percentile_clipping arguments: pass only the AdamW ones.
    return bnb.optim.AdamW8bit(groups, **kwargs)


# ------------------------------------------------------------------------------------------ schedule
def build_scheduler(optimizer: Any, config: RunConfig, ds_config: Optional[dict[str, Any]] = None) -> Any:
    """Warmup then cosine/linear decay to 0 or constant, over schedule.total_steps optimizer steps."""
    from transformers import get_scheduler

    schedule = config.schedule
    name = SCHEDULE_NAMES[schedule.name]

    def make(real_optimizer: Any) -> Any:
        return get_scheduler(name, real_optimizer, num_warmup_steps=schedule.warmup_steps,
                             num_training_steps=schedule.total_steps)

    ds = ds_config if ds_config is not None else active_deepspeed_config()
    from accelerate.utils import DummyOptim, DummyScheduler

    if ds is not None and "scheduler" in ds:
        return DummyScheduler(optimizer, total_num_steps=schedule.total_steps,
                              warmup_num_steps=schedule.warmup_steps)
    if isinstance(optimizer, DummyOptim):
        return DummyScheduler(optimizer, lr_scheduler_callable=make)  # DeepSpeed builds it on its own optimizer
    return make(optimizer)
