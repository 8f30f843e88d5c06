"""Numerics: per-layer activation/gradient maxima, the non-finite guard, the replay that names the culprit, and the
fault injection that tests and drills use to poison a batch on purpose."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

LAYER_PATTERN = re.compile(r"(talker\.model\.layers\.\d+|talker\.code_predictor\.model\.layers\.\d+)")


def _layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Decoder layers of the talker and the code predictor, by a short name (peft/DDP prefixes removed)."""
    found = {}
    for name, module in model.named_modules():
        match = LAYER_PATTERN.search(name)
        if match and name.endswith(match.group(1)):
            found[match.group(1).replace("talker.model.layers.", "talker.").replace(
                "talker.code_predictor.model.layers.", "sub_talker.")] = module
    return found


class ActivationStats:
    """Max |output| of every decoder layer during the forwards where it is armed, and max |grad| per layer."""

    def __init__(self, model: nn.Module):
        self.layers = _layer_modules(model)
        self.armed = False
        self.activations: dict[str, float] = {}
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in self.layers.items()]

    def _hook(self, name: str):
        def record(_module, _inputs, output):
            if not self.armed:
                return
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(hidden, torch.Tensor) and hidden.numel():
                value = float(hidden.detach().abs().max())
                self.activations[name] = max(self.activations.get(name, 0.0), value)
        return record

    def gradient_maxima(self) -> dict[str, float]:
        maxima = {}
        for name, module in self.layers.items():
            grads = [p.grad.detach().abs().max() for p in module.parameters() if p.grad is not None and p.grad.numel()]
            if grads:
                maxima[name] = float(torch.stack(grads).max())
        return maxima

    def take(self) -> dict[str, float]:
        stats = {f"activation_max/{k}": v for k, v in self.activations.items()}
        stats.update({f"grad_max/{k}": v for k, v in self.gradient_maxima().items()})
        self.activations = {}
        return stats


@dataclass
class NonFiniteGuard:
    """Counts non-finite steps; `patience` in a row means stop."""

    patience: int = 3
    consecutive: int = 0
    total: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, step: int, finite: bool, loss: float, grad_norm: Optional[float], keys: list[str]) -> bool:
        """Record one step; returns True when the run must stop."""
        if finite:
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.total += 1
        self.events.append({"step": step, "loss": _jsonable(loss), "grad_norm": _jsonable(grad_norm), "keys": keys})
        self.events = self.events[-50:]
        return self.consecutive >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "total": self.total}


def write_diagnostic_bundle(run_dir: Path, step: int, rank: int, guard: NonFiniteGuard, keys: list[str],
                            batches: list[dict[str, Any]], checkpoint: Optional[Path], loss: Any,
                            grad_norm: Any) -> Path:
    """What `qwen-swe diagnose-non-finite` replays: each rank's batches of the step that stopped the run, and the
    checkpoint whose weights were in force. The main process adds the config (the caller saves it)."""
    from ..files import write_json_atomic

    folder = run_dir / "diagnostics" / f"non_finite_step{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"rank{rank}.json", {
        "step": step, "rank": rank, "keys": keys, "batches": batches, "events": guard.events,
        "checkpoint": str(checkpoint) if checkpoint else None, "loss": str(loss), "grad_norm": str(grad_norm),
    })
    return folder


def _jsonable(value: Optional[float]) -> Any:
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


def tensor_stats(tensor: torch.Tensor) -> dict[str, Any]:
    data = tensor.detach().float()
    finite = torch.isfinite(data)
    stats = {"shape": list(data.shape), "dtype": str(tensor.dtype), "nan": int(torch.isnan(data).sum()),
             "inf": int(torch.isinf(data).sum())}
    if finite.any():
        values = data[finite]
        stats.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()),
                     abs_max=float(values.abs().max()))
    return stats


def first_non_finite(objective: nn.Module, batch: Any) -> dict[str, Any]:
    """Forward and backward with hooks on every module; the first module whose output (forward order) or whose
    gradient w.r.t. its input/output (backward order) is non-finite, with tensor stats."""
    forward_hits: list[dict] = []
    backward_hits: list[dict] = []
    handles = []

    def tensors(value: Any) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        if isinstance(value, (tuple, list)):
            return [t for v in value for t in tensors(v)]
        if hasattr(value, "values") and callable(value.values):
            return [t for v in value.values() for t in tensors(v)]
        return []

    def forward_hook(name):
        def hook(_module, _inputs, output):
            for tensor in tensors(output):
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    forward_hits.append({"module": name, "output": tensor_stats(tensor)})
                    return
        return hook

    def backward_hook(name):
        def hook(_module, grad_input, grad_output):
            for kind, grads in (("grad_output", grad_output), ("grad_input", grad_input)):
                for tensor in tensors(grads):
                    if tensor is not None and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                        backward_hits.append({"module": name, kind: tensor_stats(tensor)})
                        return
        return hook

    for name, module in objective.named_modules():
        if name:
            handles.append(module.register_forward_hook(forward_hook(name)))
            handles.append(module.register_full_backward_hook(backward_hook(name)))
    try:
        out = objective(batch)
        loss = out["loss"]
        report: dict[str, Any] = {"loss": _jsonable(float(loss)),
                                  "codebook0_loss": _jsonable(float(out["codebook0_loss"])),
                                  "sub_talker_loss": _jsonable(float(out["sub_talker_loss"]))}
        if loss.requires_grad:
            loss.backward()
        bad_params = [
            {"parameter": n, "grad": tensor_stats(p.grad)} for n, p in objective.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
    finally:
        for handle in handles:
            handle.remove()
    report["first_forward"] = forward_hits[0] if forward_hits else None
    report["first_backward"] = backward_hits[0] if backward_hits else None
    report["forward_non_finite_modules"] = [h["module"] for h in forward_hits][:20]
    report["non_finite_parameter_grads"] = bad_params[:20]
    return report


# ------------------------------------------------------------------------------------------ fault injection
FAULT_ENV = "QWEN_SWE_INJECT_NONFINITE"  # "module=<name>;keys=<k1,k2>": see FaultInjector


class FaultInjector:
    """Makes one module's output infinite whenever the current batch holds one of the poisoned sample keys.

    Stands in for a poisoned sample in tests and drills; replaying the same batch reproduces it, which is what
    `qwen-swe diagnose-non-finite` relies on. Whoever runs batches sets `.keys` before each forward.
    """

    def __init__(self, objective: nn.Module, spec: str):
        fields = dict(part.split("=", 1) for part in spec.split(";") if "=" in part)
        self.poisoned = set(fields.get("keys", "").split(","))
        self.keys: list[str] = []
        dict(objective.named_modules())[fields["module"]].register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not self.poisoned & set(self.keys):
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        poisoned = hidden * float("inf")
        return (poisoned, *output[1:]) if isinstance(output, tuple) else poisoned


def fault_injection_from_env(objective: nn.Module) -> Optional[FaultInjector]:
    """The injector QWEN_SWE_INJECT_NONFINITE asks for, or None (the normal case)."""
    spec = os.environ.get(FAULT_ENV)
    return FaultInjector(objective, spec) if spec else None
