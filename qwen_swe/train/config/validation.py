"""Checking a `RunConfig` up front: every wrong field at once, each error naming the field and what would fix it
("optim.lr: must be > 0, got -1"). Runs on every config the loader builds; `RunConfig.validate()` runs it again
after code changes a config in place.
"""

from __future__ import annotations

import re
from typing import Any

from ...model_shapes import LAYOUTS
from ..precision import BF16_PURE_UNDER_DEEPSPEED, FP16_REJECTED, PRECISIONS
from .schema import (ATTN_IMPLEMENTATIONS, OPTIMIZERS, QUALITY_METRICS, QUALITY_VOICE_MODES, SCHEDULES, SOURCE_NAME,
                     TRAIN_MODES, RunConfig, raise_errors, suggest)


def validate(config: RunConfig) -> None:
    """Raise one ConfigError listing every wrong field."""
    errors: list[str] = []
    for check in (_check_model, _check_data, _check_objective, _check_train, _check_optim, _check_schedule,
                  _check_run, _check_quality):
        check(config, errors)
    raise_errors(errors)


def _choice(errors: list[str], name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"{name}: must be one of {', '.join(choices)}, got {value!r}{suggest(value, list(choices))}")


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
    from ...data.stream import BAD_SAMPLE_POLICIES  # the stream applies the policy; imported late (torch)

    data = config.data
    if data.sources:
        _check_sources(data, errors)
    else:
        _required(errors, "data.shards", data.shards, "a shard folder with index.json, or several in data.sources")
        for name in ("weights", "schedule"):
            if getattr(data, name):
                errors.append(f"data.{name}: weighs the sources of data.sources, which names none; add them, e.g. "
                              "data.sources.nst=shards/nst, or drop the weights")
    _required(errors, "data.train_split", data.train_split, "the split to train on")
    _positive(errors, "data.frame_budget", data.frame_budget)
    _positive(errors, "data.pool_size", data.pool_size)
    _non_negative(errors, "data.max_samples", data.max_samples)
    _non_negative(errors, "data.num_workers", data.num_workers)
    _choice(errors, "data.on_bad_sample", data.on_bad_sample, BAD_SAMPLE_POLICIES)
    _non_negative(errors, "data.max_bad_samples", data.max_bad_samples)
    if data.max_bad_samples >= 1 and not float(data.max_bad_samples).is_integer():
        errors.append(f"data.max_bad_samples: a count (>= 1) must be whole, got {data.max_bad_samples:g}; a share is "
                      "written below 1, e.g. 0.01")
    _required(errors, "data.language", data.language, "the language of samples that name none")
    for name, weight in data.layouts.items():
        if name not in LAYOUTS:
            errors.append(f"data.layouts: unknown layout {name!r}{suggest(name, list(LAYOUTS))}; "
                          f"known layouts: {', '.join(LAYOUTS)}")
        elif weight < 0:
            errors.append(f"data.layouts.{name}: must be >= 0, got {weight:g}")
    if not any(weight > 0 for weight in data.layouts.values()):
        errors.append("data.layouts: give at least one layout a weight > 0, e.g. data.layouts.streaming=1")


def _check_sources(data: Any, errors: list[str]) -> None:
    """data.sources with its weights or schedule (the mixture reader checks the sources' shards themselves)."""
    if data.shards:
        errors.append(f"data.shards and data.sources: give one shard folder or several sources, not both (data.shards "
                      f"is {data.shards!r})")
    for name in data.sources:
        if not re.fullmatch(SOURCE_NAME, name):
            errors.append(f"data.sources: name sources with letters, digits, - and _ (they name metrics), got {name!r}")
    if data.weights and data.schedule:
        errors.append("data.weights and data.schedule: give fixed weights or a schedule, not both (a schedule with "
                      "one point is fixed weights)")
    unknown = sorted(set(data.weights) - set(data.sources))
    if unknown:
        errors.append(f"data.weights: unknown source(s) {', '.join(unknown)}; data.sources names "
                      f"{', '.join(data.sources)}")
        return
    try:
        data.mixture()
    except ValueError as error:
        errors.append(f"data.{'schedule' if data.schedule else 'weights'}: {error}")


def _check_objective(config: RunConfig, errors: list[str]) -> None:
    _non_negative(errors, "objective.sub_talker_weight", config.objective.sub_talker_weight)
    share = config.objective.sub_talker_frames
    if not 0.0 < share <= 1.0:
        errors.append(f"objective.sub_talker_frames: must be in (0, 1] (the share of frames whose sub-talker loss a "
                      f"step computes, e.g. 0.25), got {share}")


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
    if train.precision == "bf16-pure" and config.optim.name == "deepspeed":  # optim.name=deepspeed means DeepSpeed
        errors.append(BF16_PURE_UNDER_DEEPSPEED)


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


def _check_quality(config: RunConfig, errors: list[str]) -> None:
    quality = config.run.quality
    _non_negative(errors, "run.quality.every_evals", quality.every_evals)
    _non_negative(errors, "run.quality.max_sentences", quality.max_sentences)
    _non_negative(errors, "run.quality.speakers", quality.speakers)
    _choice(errors, "run.quality.mode", quality.mode, QUALITY_VOICE_MODES)
    _positive(errors, "run.quality.max_new_tokens", quality.max_new_tokens)
    _positive(errors, "run.quality.batch_size", quality.batch_size)
    _non_negative(errors, "run.quality.seed", quality.seed)
    _non_negative(errors, "run.quality.patience", quality.patience)
    _non_negative(errors, "run.quality.min_delta", quality.min_delta)
    known = list(QUALITY_METRICS)
    named = [(f"run.quality.thresholds.{name}", name) for name in quality.thresholds]
    if quality.metric:
        named.append(("run.quality.metric", quality.metric))
    for field_name, metric in named:
        if metric not in QUALITY_METRICS:
            errors.append(f"{field_name}: unknown metric {metric!r}{suggest(metric, known)}; known: {', '.join(known)}")
        elif metric in ("wer", "cer") and not quality.asr:
            errors.append(f"{field_name}: {metric} needs run.quality.asr (an ASR model folder, e.g. kb-whisper); set "
                          "it, or use speaker_similarity, duration_error, silence_rate or eos_runaway_rate")
    if not quality.every_evals:
        if quality.thresholds or quality.patience:
            errors.append("run.quality.thresholds / run.quality.patience: the quality loop is off; set "
                          "run.quality.every_evals (score every K held-out evals)")
        return
    if not config.run.eval_every:
        errors.append("run.quality.every_evals: quality rounds run after held-out evals; set run.eval_every too")
