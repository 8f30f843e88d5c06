"""The run config: nested dataclasses, YAML in and out, dotted command-line overrides, validated up front.

A run is described by one `RunConfig`. It is built in layers, each one replacing what the previous set:

    defaults (the dataclasses below) -> preset (smoke | pilot | full) -> YAML file -> overrides ("optim.lr=1e-4")

Every error names the field and what would fix it ("optim.lr: must be > 0, got -1"); an unknown key names the
closest known one ("unknown field 'optim.lrr' (did you mean 'optim.lr'?)"). All step counts are optimizer steps.

Overrides are `dotted.path=value`; the value is read as YAML, so numbers, booleans, lists (`train.freeze=[a,b]`)
and mappings work. A path may end inside a mapping field: `data.layouts.icl=0.5` sets one layout's weight,
`optim.lr_multipliers.talker\\.text_projection=3` one multiplier (everything after the field name is the key).
Values for string fields are taken verbatim, so `data.language=no` stays the string "no".

`math_fingerprint` lists every knob that changes what the optimizer computes; a resumed run compares it with the
one saved in the checkpoint and refuses to continue with different math.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ..layout import LAYOUTS

DEFAULT_LORA_TARGETS = r"talker\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
TRAIN_MODES = ("full", "lora")
PRECISIONS = ("fp32", "bf16-mixed", "bf16-pure")
OPTIMIZERS = ("adamw", "adamw_8bit", "deepspeed")
SCHEDULES = ("cosine", "linear", "constant")
BAD_SAMPLE_POLICIES = ("skip", "fail")

FP16_REJECTED = (
    "train.precision: fp16 is not supported: its range (max 65504) overflows in Qwen3-TTS training and the public "
    "fp16 recipes diverge; use bf16-mixed (bf16 autocast over fp32 weights), bf16-pure, or fp32"
)


class ConfigError(ValueError):
    """One or more config fields are wrong; the message has one line per field."""


# ------------------------------------------------------------------------------------------ the dataclasses
@dataclass
class ModelSection:
    path: str = ""  # required: a Qwen3-TTS model folder
    attn_implementation: str = "auto"  # auto: sdpa on ROCm/CPU, flash_attention_2 on CUDA when importable
    language: str = "swedish"  # registered at a free codec row if the model lacks it
    language_init: str = "mean"  # "mean" of the released language rows or "copy:<language>"


@dataclass
class DataSection:
    shards: str = ""  # required: a shard folder holding index.json
    train_split: str = "train"
    eval_split: str = "eval"
    frame_budget: int = 2048  # padded frames per batch (longest sample x samples)
    pool_size: int = 2048
    max_samples: int = 0  # 0: no cap besides the frame budget
    num_workers: int = 2
    layouts: dict[str, float] = field(
        default_factory=lambda: {"streaming": 1.0, "non_streaming": 1.0, "icl": 1.0}
    )
    on_bad_sample: str = "skip"
    language: str = "swedish"  # used when a sample names none


@dataclass
class ObjectiveSection:
    sub_talker_weight: float = 0.3
    mask_suppressed_logits: bool = True


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = DEFAULT_LORA_TARGETS  # a regex on module names: bare names would hit the code predictor
    trainable_extra: list[str] = field(default_factory=lambda: ["talker.text_projection"])  # trained fully
    train_codec_rows: bool = True  # the talker's codec embedding (codes, specials, language rows) stays trainable


@dataclass
class TrainSection:
    mode: str = "full"
    lora: LoraSection = field(default_factory=LoraSection)
    freeze: list[str] = field(default_factory=list)  # regexes on parameter names; the speaker encoder always is
    precision: str = "fp32"
    keep_fp32_modules: list[str] = field(default_factory=lambda: ["norm", "codec_head", "lm_head"])
    gradient_checkpointing: bool = False


@dataclass
class OptimSection:
    name: str = "adamw"
    lr: float = 2e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    lr_multipliers: dict[str, float] = field(default_factory=lambda: {r"talker\.text_projection": 5.0})
    grad_clip: float = 1.0  # 0: no clipping
    accumulation: int = 1


@dataclass
class ScheduleSection:
    name: str = "cosine"
    warmup_steps: int = 100
    total_steps: int = 10000


@dataclass
class RunSection:
    output_dir: str = ""  # required
    seed: int = 0
    max_steps: int = 0  # 0: schedule.total_steps (resolved by load_config)
    eval_every: int = 100  # 0: no held-out eval
    eval_batches: int = 20
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 1
    activation_stats_every: int = 50  # 0: never
    non_finite_patience: int = 3
    tensorboard: bool = True
    # Every K held-out evals, synthesise `synth_sentences` built-in Swedish sentences with the current weights in a
    # held-out speaker's voice and log the audio to TensorBoard (0: never). Not under ZeRO-3 (weights partitioned).
    synth_every_evals: int = 0
    synth_sentences: int = 2


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """A validated config from a (possibly partial) mapping over the defaults."""
        config = cls()
        errors: list[str] = []
        _merge(config, data, "", errors)
        _raise(errors)
        validate(config)
        return config

    def validate(self) -> None:
        validate(self)

    @property
    def effective_max_steps(self) -> int:
        return self.run.max_steps or self.schedule.total_steps

    def check_paths(self) -> None:
        """Fail before loading anything if the model folder or the shard index is missing."""
        errors = []
        if not Path(self.model.path).is_dir():
            errors.append(f"model.path: {self.model.path!r} is not a directory; point it at a Qwen3-TTS model folder")
        if not (Path(self.data.shards) / "index.json").is_file():
            errors.append(f"data.shards: no index.json in {self.data.shards!r}; build shards with `qwen-swe shards`")
        _raise(errors)


# ------------------------------------------------------------------------------------------ presets
# GPU runs train in full, in bf16 autocast over fp32 weights with activations recomputed. The text embedding (a third
# of the parameters, the one whose gradients went non-finite first in earlier runs) stays frozen: Swedish text
# already tokenizes with Qwen's BPE.
_GPU_TRAIN = {"mode": "full", "precision": "bf16-mixed", "gradient_checkpointing": True,
              "freeze": [r"talker\.model\.text_embedding\."]}

# Partial configs over the defaults. model.path, data.shards and run.output_dir stay required.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on CPU with a tiny model: every code path (eval, checkpoint, activation stats) runs within 12 steps.
    "smoke": {
        "data": {"frame_budget": 256, "pool_size": 16, "num_workers": 0},
        "optim": {"lr": 1e-3},
        "schedule": {"warmup_steps": 2, "total_steps": 12},
        "run": {"eval_every": 4, "eval_batches": 2, "checkpoint_every": 6, "activation_stats_every": 4},
    },
    # A bounded run of the 1.7B on Hemma (one 32 GB R9700): the GPU training setup with 8-bit optimizer state.
    "pilot": {
        "data": {"frame_budget": 2048, "num_workers": 4},
        "train": _GPU_TRAIN,
        "optim": {"name": "adamw_8bit", "lr": 2e-5, "accumulation": 4},
        "schedule": {"name": "cosine", "warmup_steps": 100, "total_steps": 2000},
        "run": {"eval_every": 100, "eval_batches": 20, "checkpoint_every": 500, "keep_last": 3,
                "activation_stats_every": 100},
    },
    # The long run on H100 hosts (one to eight GPUs each): the GPU training setup with plain AdamW.
    "full": {
        "data": {"frame_budget": 4096, "num_workers": 4},
        "train": _GPU_TRAIN,
        "optim": {"name": "adamw", "lr": 2e-5, "accumulation": 1},
        "schedule": {"name": "cosine", "warmup_steps": 1000, "total_steps": 50000},
        "run": {"eval_every": 100, "eval_batches": 50, "checkpoint_every": 500, "keep_last": 3,
                "activation_stats_every": 200},
    },
}


# ------------------------------------------------------------------------------------------ loading
def load_config(path: Optional[str | Path] = None, preset: Optional[str] = None,
                overrides: Optional[list[str]] = None) -> RunConfig:
    """defaults -> preset -> YAML file -> overrides, validated; run.max_steps 0 becomes schedule.total_steps."""
    config = RunConfig()
    errors: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}{_suggest(preset, list(PRESETS))}; "
                              f"choose one of {', '.join(PRESETS)}")
        _merge(config, PRESETS[preset], "", errors)
    if path is not None:
        _merge(config, _read_yaml(Path(path)), "", errors)
    for item in overrides or []:
        apply_override(config, item, errors)
    _raise(errors)
    validate(config)
    if config.run.max_steps == 0:
        config.run.max_steps = config.schedule.total_steps
    return config


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(data).__name__}")
    return data


def _raise(errors: list[str]) -> None:
    if errors:
        raise ConfigError("\n".join(errors))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_field_names(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted field name (sections too), for suggestions."""
    names = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        names.append(name)
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            names.extend(_all_field_names(hint, name + "."))
    return names


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close:  # "lr" should still find "optim.lr": compare the last part too
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        hit = difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.8)
        close = [tails[hit[0]]] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(name: str) -> str:
    return f"unknown field {name!r}{_suggest(name, _all_field_names())}"


def _merge(target: Any, data: Mapping[str, Any], prefix: str, errors: list[str]) -> None:
    """Set the fields of dataclass `target` from `data`; sections merge, values (lists, mappings) replace."""
    if not isinstance(data, Mapping):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        return
    hints = _hints(type(target))
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in hints:
            errors.append(_unknown(name))
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _merge(getattr(target, key), value if value is not None else {}, name + ".", errors)
            continue
        try:
            setattr(target, key, coerce(value, hint, name))
        except ConfigError as error:
            errors.append(str(error))


# ------------------------------------------------------------------------------------------ types
def coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` as type `hint`, or a ConfigError naming the field. YAML reads `1e-4` as a string: accept it."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        return _as_int(value, name)
    if hint is float:
        return _as_float(value, name)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r} (quote it in YAML)")
    if origin is list:
        (item,) = typing.get_args(hint)
        if value is None:
            return []
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single item is a one-item list: train.freeze=talker\.x
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {coerce(k, key_hint, f"{name} key"): coerce(v, value_hint, f"{name}.{k}") for k, v in value.items()}
    raise TypeError(f"{name}: unsupported config type {hint!r}")


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{name}: expected a number, got {value!r}")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    number = None
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)  # "1e4" steps
        except ValueError:
            pass
    if number is not None and number.is_integer():
        return int(number)
    raise ConfigError(f"{name}: expected an integer, got {value!r}")


# ------------------------------------------------------------------------------------------ overrides
def apply_override(config: RunConfig, item: str, errors: Optional[list[str]] = None) -> None:
    """Apply one `dotted.path=value` to `config` in place (errors are appended, or raised if no list is given)."""
    collect = errors if errors is not None else []
    _apply_override(config, item, collect)
    if errors is None:
        _raise(collect)


def _apply_override(config: RunConfig, item: str, errors: list[str]) -> None:
    if "=" not in item:
        errors.append(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        return
    path, raw = item.split("=", 1)
    parts = path.strip().split(".")
    target: Any = config
    for depth, part in enumerate(parts):
        name = ".".join(parts[:depth + 1])
        hints = _hints(type(target))
        if part not in hints:
            errors.append(_unknown(name))
            return
        hint = hints[part]
        rest = parts[depth + 1:]
        if dataclasses.is_dataclass(hint):
            if not rest:
                value = _parse_value(raw, dict)
                _merge(getattr(target, part), value if value is not None else {}, name + ".", errors)
                return
            target = getattr(target, part)
            continue
        try:
            if rest and typing.get_origin(hint) is dict:  # data.layouts.icl=0.5: the rest of the path is the key
                key = ".".join(rest)
                value_hint = typing.get_args(hint)[1]
                value = coerce(_parse_value(raw, value_hint), value_hint, f"{name}.{key}")
                updated = dict(getattr(target, part))
                updated[key] = value
                setattr(target, part, updated)
            elif rest:
                errors.append(_unknown(path.strip()))
            else:
                setattr(target, part, coerce(_parse_value(raw, hint), hint, name))
        except ConfigError as error:
            errors.append(str(error))
        return


def _parse_value(raw: str, hint: Any) -> Any:
    """Read an override value as YAML, except for string fields, which take the text as written."""
    if hint is str:
        text = raw.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # coerce() will name the field and the expected type


# ------------------------------------------------------------------------------------------ validation
def validate(config: RunConfig) -> None:
    """Raise one ConfigError listing every wrong field."""
    errors: list[str] = []
    for check in (_check_model, _check_data, _check_objective, _check_train, _check_optim, _check_schedule,
                  _check_run):
        check(config, errors)
    _raise(errors)


def _choice(errors: list[str], name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"{name}: must be one of {', '.join(choices)}, got {value!r}{_suggest(value, list(choices))}")


def _positive(errors: list[str], name: str, value: float) -> None:
    if not value > 0:
        errors.append(f"{name}: must be > 0, got {value:g}")


def _non_negative(errors: list[str], name: str, value: float) -> None:
    if not value >= 0:
        errors.append(f"{name}: must be >= 0, got {value:g}")


def _required(errors: list[str], name: str, value: str, what: str) -> None:
    if not value.strip():
        errors.append(f"{name}: required ({what}); set it in the YAML or with {name}=...")


def _regex(errors: list[str], name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        errors.append(f"{name}: not a valid regular expression {pattern!r} ({error})")


def _check_model(config: RunConfig, errors: list[str]) -> None:
    model = config.model
    _required(errors, "model.path", model.path, "a Qwen3-TTS model folder")
    _choice(errors, "model.attn_implementation", model.attn_implementation, ATTN_IMPLEMENTATIONS)
    _required(errors, "model.language", model.language, "the language to train, e.g. swedish")
    if model.language != model.language.strip().lower():
        errors.append(f"model.language: use lower case without spaces, got {model.language!r}")
    if model.language_init != "mean" and not re.fullmatch(r"copy:\w+", model.language_init):
        errors.append(f"model.language_init: must be 'mean' or 'copy:<language>', got {model.language_init!r}")


def _check_data(config: RunConfig, errors: list[str]) -> None:
    data = config.data
    _required(errors, "data.shards", data.shards, "a shard folder with index.json")
    _required(errors, "data.train_split", data.train_split, "the split to train on")
    _positive(errors, "data.frame_budget", data.frame_budget)
    _positive(errors, "data.pool_size", data.pool_size)
    _non_negative(errors, "data.max_samples", data.max_samples)
    _non_negative(errors, "data.num_workers", data.num_workers)
    _choice(errors, "data.on_bad_sample", data.on_bad_sample, BAD_SAMPLE_POLICIES)
    _required(errors, "data.language", data.language, "the language of samples that name none")
    for name, weight in data.layouts.items():
        if name not in LAYOUTS:
            errors.append(f"data.layouts: unknown layout {name!r}{_suggest(name, list(LAYOUTS))}; "
                          f"known layouts: {', '.join(LAYOUTS)}")
        elif weight < 0:
            errors.append(f"data.layouts.{name}: must be >= 0, got {weight:g}")
    if not any(weight > 0 for weight in data.layouts.values()):
        errors.append("data.layouts: give at least one layout a weight > 0, e.g. data.layouts.streaming=1")


def _check_objective(config: RunConfig, errors: list[str]) -> None:
    _non_negative(errors, "objective.sub_talker_weight", config.objective.sub_talker_weight)


def _check_train(config: RunConfig, errors: list[str]) -> None:
    train, lora = config.train, config.train.lora
    _choice(errors, "train.mode", train.mode, TRAIN_MODES)
    if train.precision == "fp16":
        errors.append(FP16_REJECTED)
    else:
        _choice(errors, "train.precision", train.precision, PRECISIONS)
    _positive(errors, "train.lora.r", lora.r)
    _positive(errors, "train.lora.alpha", lora.alpha)
    if not 0 <= lora.dropout < 1:
        errors.append(f"train.lora.dropout: must be in [0, 1), got {lora.dropout:g}")
    _regex(errors, "train.lora.target_modules", lora.target_modules)
    for i, pattern in enumerate(train.freeze):
        _regex(errors, f"train.freeze[{i}]", pattern)
    for i, name in enumerate(train.keep_fp32_modules):
        if not name.strip():
            errors.append(f"train.keep_fp32_modules[{i}]: empty name would match every module")
    if train.precision == "bf16-pure" and config.optim.name == "deepspeed":
        errors.append("train.precision: bf16-pure casts the weights itself, but under optim.name=deepspeed the "
                      "DeepSpeed config's bf16 section decides precision; use train.precision=fp32 with DeepSpeed")


def _check_optim(config: RunConfig, errors: list[str]) -> None:
    optim = config.optim
    _choice(errors, "optim.name", optim.name, OPTIMIZERS)
    _positive(errors, "optim.lr", optim.lr)
    _non_negative(errors, "optim.weight_decay", optim.weight_decay)
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        errors.append(f"optim.betas: must be two numbers in [0, 1), got {optim.betas}")
    _positive(errors, "optim.eps", optim.eps)
    for pattern, multiplier in optim.lr_multipliers.items():
        _regex(errors, f"optim.lr_multipliers[{pattern!r}]", pattern)
        if not multiplier > 0:
            errors.append(f"optim.lr_multipliers.{pattern}: must be > 0, got {multiplier:g}")
    _non_negative(errors, "optim.grad_clip", optim.grad_clip)
    _positive(errors, "optim.accumulation", optim.accumulation)


def _check_schedule(config: RunConfig, errors: list[str]) -> None:
    schedule = config.schedule
    _choice(errors, "schedule.name", schedule.name, SCHEDULES)
    _positive(errors, "schedule.total_steps", schedule.total_steps)
    _non_negative(errors, "schedule.warmup_steps", schedule.warmup_steps)
    if schedule.total_steps > 0 and schedule.warmup_steps >= schedule.total_steps:
        errors.append(f"schedule.warmup_steps: must be < schedule.total_steps ({schedule.total_steps}), "
                      f"got {schedule.warmup_steps}")


def _check_run(config: RunConfig, errors: list[str]) -> None:
    run = config.run
    _required(errors, "run.output_dir", run.output_dir, "where checkpoints, logs and status go")
    _non_negative(errors, "run.seed", run.seed)
    _non_negative(errors, "run.max_steps", run.max_steps)
    if run.max_steps > config.schedule.total_steps > 0:
        errors.append(f"run.max_steps: must be <= schedule.total_steps ({config.schedule.total_steps}), the step "
                      f"where the learning-rate schedule ends, got {run.max_steps}; raise schedule.total_steps")
    _non_negative(errors, "run.eval_every", run.eval_every)
    _positive(errors, "run.eval_batches", run.eval_batches)
    _positive(errors, "run.checkpoint_every", run.checkpoint_every)
    _positive(errors, "run.keep_last", run.keep_last)
    _positive(errors, "run.log_every", run.log_every)
    _non_negative(errors, "run.activation_stats_every", run.activation_stats_every)
    _positive(errors, "run.non_finite_patience", run.non_finite_patience)
    _non_negative(errors, "run.synth_every_evals", run.synth_every_evals)
    _positive(errors, "run.synth_sentences", run.synth_sentences)
    if run.synth_every_evals and not run.eval_every:
        errors.append("run.synth_every_evals: synthesis runs after held-out evals; set run.eval_every too")


# ------------------------------------------------------------------------------------------ fingerprint
# Fields that do not change what the optimizer computes: where things live (the model and shard contents are
# fingerprinted separately), how often things are logged/evaluated/saved, when to stop, how many loader workers,
# and implementation choices proven equivalent (gradient checkpointing recomputes the same activations; the
# attention kernels compute the same function).
NOT_MATH = frozenset({
    "model.path", "model.attn_implementation",
    "data.shards", "data.eval_split", "data.num_workers",
    "train.gradient_checkpointing",
    "run.output_dir", "run.max_steps", "run.eval_every", "run.eval_batches", "run.checkpoint_every",
    "run.keep_last", "run.log_every", "run.activation_stats_every", "run.non_finite_patience", "run.tensorboard",
    "run.synth_every_evals", "run.synth_sentences",
})


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and dataclasses.is_dataclass(_section_type(name)):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _section_type(name: str) -> Any:
    cls: Any = RunConfig
    for part in name.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        cls = _hints(cls).get(part)
    return cls


def math_fingerprint(config: RunConfig) -> dict[str, Any]:
    """Every knob that changes the math, flat: {"optim.lr": 2e-05, "data.layouts": {...}, ...}.

    Knobs that are inert under the chosen settings are left out too: LoRA settings in full mode,
    keep_fp32_modules unless the weights are bf16.
    """
    flat = {k: v for k, v in _flatten(config.to_dict()).items() if k not in NOT_MATH}
    if config.train.mode != "lora":
        flat = {k: v for k, v in flat.items() if not k.startswith("train.lora.")}
    if config.train.precision != "bf16-pure":
        flat.pop("train.keep_fp32_modules", None)
    return flat


def fingerprint_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two math fingerprints, one line per field."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key, "<absent>") != current.get(key, "<absent>"):
            changes.append(f"{key}: {saved.get(key, '<absent>')!r} -> {current.get(key, '<absent>')!r}")
    return changes
