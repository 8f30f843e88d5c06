"""The search space file: which run-config fields a study varies, over what, and the trial's run config they make.

A YAML mapping of dotted run-config fields (any field `qwen-swe train` takes as an override) to a range:

    optim.lr: {low: 1.0e-6, high: 1.0e-3, log: true}          # a float field: uniform, or log-uniform
    schedule.warmup_steps: {low: 0, high: 200, step: 10}        # an int field: integers (step optional)
    optim.weight_decay: {low: 0.0, high: 0.1}
    train.lora.r: {choices: [8, 16, 32]}                        # any field: one of the choices
    train.lora.alpha: {choices: [16, 32, 64]}
    optim.lr_multipliers.talker\\.text_projection: {low: 1, high: 10, log: true}   # one entry of a mapping field
    objective.sub_talker_weight: {low: 0.1, high: 1.0}
    objective.sub_talker_frames: {choices: [0.0625, 0.25, 1.0]}
    data.frame_budget: {choices: [1024, 2048, 4096], constant_batch: 8192}

`constant_batch` (on data.frame_budget only) keeps the frames per optimizer step constant: each trial's
optim.accumulation is constant_batch / data.frame_budget, so trials that differ in memory per micro-batch compare at
the same batch. The parameter names in the study (reports, plots, best.yaml) are the field names.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ..train.config import ConfigError, RunConfig, apply_override
from ..train.config.loader import read_yaml_file
from ..train.config.schema import suggest

RANGE_KEYS = {"low", "high", "log", "step", "choices", "constant_batch"}
OPTUNA_CHOICE_TYPES = (bool, int, float, str)
# where a trial lives and what it trains on (a mixture's weights, data.weights.NAME, may be searched)
NOT_SEARCHABLE = ("run.output_dir", "model.path", "data.shards", "data.sources")


@dataclass
class Param:
    name: str  # the dotted run-config field (and the study's parameter name)
    kind: str  # float | int | choice
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple[Any, ...] = ()
    constant_batch: int = 0  # data.frame_budget only: optim.accumulation = constant_batch / frame_budget

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values that bound this parameter: checked against the run config before a study starts."""
        if self.kind == "choice":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            text = f"one of {', '.join(map(str, self.choices))}"
        else:
            text = f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "") + (
                f" step {self.step:g}" if self.step else "")
        return text + (f"; optim.accumulation = {self.constant_batch} / value" if self.constant_batch else "")


@dataclass
class SearchSpace:
    params: list[Param]
    source: dict[str, Any]  # the file as read: stored with the study so a resume can refuse a changed space

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {param.name: param.suggest(trial) for param in self.params}

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """`field=value` overrides for the trial's parameter values (plus optim.accumulation for a constant batch)."""
        items = []
        for param in self.params:
            if param.name not in values:
                continue
            value = values[param.name]
            items.append(f"{param.name}={_override_text(value)}")
            if param.constant_batch:
                items.append(f"optim.accumulation={param.constant_batch // int(value)}")
        return items

    def trial_config(self, base: RunConfig, values: Mapping[str, Any], output_dir: str | Path) -> RunConfig:
        """The base run config with the trial's values and its own run folder, validated."""
        config = copy.deepcopy(base)
        for item in [*self.overrides(values), f"run.output_dir={output_dir}"]:
            apply_override(config, item)
        config.validate()
        return config

    def check(self, base: RunConfig) -> None:
        """Every bound of every parameter applied alone to the base config must make a valid run config."""
        errors = []
        for param in self.params:
            for value in param.extremes():
                try:
                    self.trial_config(base, {param.name: value}, base.run.output_dir or "check")
                except ConfigError as error:
                    errors.append(f"{param.name}={value}: {error}")
        if errors:
            raise ConfigError("search space: these values make invalid run configs (narrow the range, or change "
                              "the run config):\n  " + "\n  ".join(errors))


def _override_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    data = read_yaml_file(path, "search space file")
    try:
        return parse_space(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def parse_space(data: Any) -> SearchSpace:
    """A SearchSpace from the mapping a space file holds; one ConfigError naming every wrong entry."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("expected a mapping of run-config fields to ranges, e.g. "
                          "'optim.lr: {low: 1.0e-6, high: 1.0e-3, log: true}'")
    errors: list[str] = []
    params = []
    for name, spec in data.items():
        param = _parse_param(str(name), spec, errors)
        if param is not None:
            params.append(param)
    if any(p.constant_batch for p in params) and "optim.accumulation" in data:
        errors.append("optim.accumulation: set by data.frame_budget's constant_batch; do not search it as well")
    if errors:
        raise ConfigError("\n".join(errors))
    return SearchSpace(params, source=json.loads(json.dumps(dict(data))))


def field_type(name: str) -> Any:
    """The type of the run-config field a dotted name ends in (a mapping field's value type for `field.key`)."""
    cls: Any = RunConfig
    parts = name.split(".")
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        hint = hints[part]
        if dataclasses.is_dataclass(hint):
            cls = hint
            continue
        rest = parts[depth + 1:]
        if not rest:
            return hint
        if typing.get_origin(hint) is dict:
            return typing.get_args(hint)[1]
        return None
    return None  # a section, not a field


def _all_fields(cls: Any = RunConfig, prefix: str = "") -> list[str]:
    names = []
    for name, hint in typing.get_type_hints(cls).items():
        names.extend(_all_fields(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [prefix + name])
    return names


def _parse_param(name: str, spec: Any, errors: list[str]) -> Optional[Param]:
    hint = field_type(name)
    if hint is None:
        errors.append(f"{name}: not a run-config field{suggest(name, _all_fields())}")
        return None
    if name in NOT_SEARCHABLE:
        errors.append(f"{name}: not searchable (the tuner sets where each trial runs; the model and shards are fixed)")
        return None
    if not isinstance(spec, Mapping):
        errors.append(f"{name}: expected a range such as {{low: 0.1, high: 1.0}} or {{choices: [a, b]}}, got {spec!r}")
        return None
    unknown = set(spec) - RANGE_KEYS
    if unknown:
        errors.append(f"{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; a range takes "
                      f"{', '.join(sorted(RANGE_KEYS))}")
        return None
    constant_batch = spec.get("constant_batch") or 0
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            errors.append(f"{name}: choices must be a non-empty list")
            return None
        if not all(isinstance(c, OPTUNA_CHOICE_TYPES) for c in choices):
            errors.append(f"{name}: choices must be numbers, strings or booleans (lists and mappings cannot be "
                          f"searched), got {choices!r}")
            return None
        param = Param(name, "choice", choices=tuple(choices), constant_batch=int(constant_batch))
    elif hint in (int, float):
        if "low" not in spec or "high" not in spec:
            errors.append(f"{name}: give low and high (or choices)")
            return None
        try:
            low, high = float(spec["low"]), float(spec["high"])
            step = float(spec["step"]) if spec.get("step") is not None else None
        except (TypeError, ValueError):
            errors.append(f"{name}: low, high and step must be numbers, got {dict(spec)!r}")
            return None
        log = bool(spec.get("log", False))
        if not low < high:
            errors.append(f"{name}: low must be below high, got {low:g} .. {high:g}")
        if log and low <= 0:
            errors.append(f"{name}: a log range needs low > 0, got {low:g}")
        if log and step:
            errors.append(f"{name}: step and log cannot be combined")
        if hint is int and not (low.is_integer() and high.is_integer()):
            errors.append(f"{name}: an integer field needs whole bounds, got {low:g} .. {high:g}")
        if not all(math.isfinite(v) for v in (low, high)):
            errors.append(f"{name}: bounds must be finite")
        param = Param(name, "int" if hint is int else "float", low=low, high=high, log=log, step=step,
                      constant_batch=int(constant_batch))
    else:
        errors.append(f"{name}: a {getattr(hint, '__name__', hint)} field is searched over choices: "
                      "{choices: [...]}")
        return None
    if constant_batch:
        values = param.choices if param.kind == "choice" else ()
        if name != "data.frame_budget":
            errors.append(f"{name}: constant_batch applies to data.frame_budget only")
        elif param.kind != "choice":
            errors.append(f"{name}: constant_batch needs choices (frame budgets that divide it)")
        elif any(not isinstance(v, int) or v <= 0 or constant_batch % v for v in values):
            errors.append(f"{name}: every choice must divide constant_batch={constant_batch}, got {list(values)}")
    return param
