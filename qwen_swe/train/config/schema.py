"""The run config's shape: nested dataclasses with their defaults, the choices a field takes, and the presets.

A run is described by one `RunConfig`. `loader.py` builds it from layers (defaults -> preset -> YAML -> overrides),
`validation.py` checks it. All step counts are optimizer steps.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

DEFAULT_LORA_TARGETS = r"talker\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
TRAIN_MODES = ("full", "lora")
OPTIMIZERS = ("adamw", "adamw_8bit", "deepspeed")
SCHEDULES = ("cosine", "linear", "constant")
# The metrics a quality gate, its patience or the tuner's objective can name, and which way is better: the headline
# metrics of `qwen-swe eval` (quality/evaluation.py; a test keeps the two in step) plus the trainer's held-out loss.
# duration_ratio is not here: 1.0 is best from both sides; duration_error (|log ratio|) is its gate-able form.
QUALITY_METRICS = {"heldout_loss": "lower", "wer": "lower", "cer": "lower", "speaker_similarity": "higher",
                   "duration_error": "lower", "silence_rate": "lower", "eos_runaway_rate": "lower"}
QUALITY_VOICE_MODES = ("xvector", "icl")  # a Base model in training clones held-out voices
# A corpus name (data.sources keys, `qwen-swe eval --source NAME=...`): it names metrics (source/NAME/loss, METRIC@NAME).
SOURCE_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"
# train.precision takes qwen_swe.train.precision.PRECISIONS; data.on_bad_sample takes data.stream.BAD_SAMPLE_POLICIES;
# data.layouts keys are model_shapes.LAYOUTS.


def raise_errors(errors: list[str]) -> None:
    """One ConfigError listing every problem found, or nothing."""
    if errors:
        raise ConfigError("\n".join(errors))


def suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close:  # "lr" should still find "optim.lr": compare the last part too
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        hit = difflib.get_close_matches(name.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.8)
        close = [tails[hit[0]]] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    # With on_bad_sample=skip, the most unreadable or invalid samples a run tolerates before it stops (exit 4): a
    # count (>= 1) or a share of the samples read so far (< 1, judged once 100 samples were read); 0: no limit.
    max_bad_samples: float = 0.01
    language: str = "swedish"  # used when a sample names none
    # Shards store prompt ids made by the tokenizer they were built with; true: tokenize every text again with this
    # model's tokenizer instead of refusing shards built with another one (slower).
    retokenize: bool = False
    # Several corpora in one run, instead of `shards`: name -> shard folder (each built by `qwen-swe shards build`
    # with the same model). Each batch is drawn from one source; data/mixture.py says how.
    sources: dict[str, str] = field(default_factory=dict)
    # Each source's share of the frames trained on; a source left out weighs 1 (none given: equal shares); 0: the
    # source is only evaluated (its eval split is scored at every eval; it needs no train split).
    weights: dict[str, float] = field(default_factory=dict)
    # Weights by optimizer step instead of fixed ones, moving linearly between points, e.g. a curriculum
    # {0: {nst: 1.0}, 2000: {nst: 0.3, rixvox: 0.7}}; a source a point leaves out weighs 0 there.
    schedule: dict[int, dict[str, float]] = field(default_factory=dict)

    def mixture(self) -> Any:
        """The sources' `data.mixture.MixtureSchedule`, or None when the run reads one shard folder."""
        if not self.sources:
            return None
        from ...data.mixture import MixtureSchedule  # imported late: the data package imports torch

        if self.schedule:
            return MixtureSchedule(list(self.sources), self.schedule)
        return MixtureSchedule.constant(list(self.sources), self.weights)

    def folders(self) -> dict[str, str]:
        """Every shard folder the run reads, by source name ("" for a single `data.shards`)."""
        return dict(self.sources) if self.sources else {"": self.shards}


@dataclass
class ObjectiveSection:
    sub_talker_weight: float = 0.3
    mask_suppressed_logits: bool = True
    # share of each micro-batch's target frames whose sub-talker loss a training step computes (drawn per step;
    # 1: every frame). The codebook-0 loss always covers every position; held-out eval always scores every frame.
    sub_talker_frames: float = 1.0


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
class QualitySection:
    """The quality loop (`run.quality`): every `every_evals` held-out evals the main process synthesises the
    evaluation sentences in held-out voices with the current weights, scores them like `qwen-swe eval`, keeps the
    best round's checkpoint as `best` and stops the run when the thresholds are met or the metric stopped improving.
    """

    every_evals: int = 0  # 0: no quality loop
    sentences: str = "v1"  # a built-in set name or a text file, one sentence per line
    max_sentences: int = 0  # 0: every sentence of the set
    speakers: int = 2  # held-out speakers whose voices are cloned (0: all)
    mode: str = "xvector"
    asr: str = ""  # an ASR model folder (e.g. KBLab kb-whisper): WER and CER; empty: none
    speaker_model: str = ""  # a speaker-verification folder for speaker similarity; empty: the model's own encoder
    max_new_tokens: int = 600  # frames: the max-length guard of every synthesis (48 s)
    batch_size: int = 4
    seed: int = 0  # sampling seed: every round draws the same way, so rounds differ by the weights alone
    # Stop when every threshold holds, e.g. {wer: 0.15, speaker_similarity: 0.75}: lower-is-better metrics must be
    # <= their threshold, higher-is-better ones >= (QUALITY_METRICS says which). Empty: no threshold stop.
    thresholds: dict[str, float] = field(default_factory=dict)
    metric: str = ""  # the metric rounds are ranked by (best, patience); empty: wer with an ASR folder, else
    #                   speaker_similarity
    patience: int = 0  # stop after this many rounds without a better metric; 0: never
    min_delta: float = 0.0  # how much better than the best a round must be to count as better

    def ranking_metric(self) -> str:
        return self.metric or ("wer" if self.asr else "speaker_similarity")


@dataclass
class RunSection:
    output_dir: str = ""  # required
    seed: int = 0
    max_steps: int = 0  # 0: schedule.total_steps (resolved by load_config)
    eval_every: int = 100  # 0: no held-out eval
    eval_batches: int = 20
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 1  # write a metrics.jsonl line and TensorBoard scalars every N steps (non-finite steps always)
    activation_stats_every: int = 50  # 0: never
    non_finite_patience: int = 3
    tensorboard: bool = True
    # Every K held-out evals, synthesise `synth_sentences` built-in Swedish sentences with the current weights in a
    # held-out speaker's voice and log the audio to TensorBoard (0: never). Not under ZeRO-3 (weights partitioned).
    synth_every_evals: int = 0
    synth_sentences: int = 2
    quality: QualitySection = field(default_factory=QualitySection)


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

    def validate(self) -> None:
        from .validation import validate

        validate(self)

    def check_paths(self) -> None:
        """Fail before loading anything if the model folder or the shard index is missing."""
        errors: list[str] = []
        if not Path(self.model.path).is_dir():
            errors.append(f"model.path: {self.model.path!r} is not a directory; point it at a Qwen3-TTS model folder")
        for name, folder in self.data.folders().items():
            field_name = f"data.sources.{name}" if name else "data.shards"
            if not (Path(folder) / "index.json").is_file():
                errors.append(f"{field_name}: no index.json in {folder!r}; build shards with `qwen-swe shards`")
        raise_errors(errors)


# ------------------------------------------------------------------------------------------ presets
# GPU runs train in full, in bf16 autocast over fp32 weights with activations recomputed. The text embedding (a third
# of the parameters, the one whose gradients went non-finite first in earlier runs) stays frozen: Swedish text
# already tokenizes with Qwen's BPE.
_GPU_TRAIN = {"mode": "full", "precision": "bf16-mixed", "gradient_checkpointing": True,
              "freeze": [r"talker\.model\.text_embedding\."]}

# The GPU presets' objective.sub_talker_frames. Measured (README, "Sub-talker frame sampling"): at the released widths
# a quarter of the frames makes the whole step 1.4x (1.7B) to 1.7x (0.6B) faster and drops three quarters of the
# sub-talker's activations, and on the demo corpus neither 1/4 nor 1/16 changed the best held-out losses reached per
# step. A quarter keeps four times the sub-talker signal of 1/16 for most of the speed at the 1.7B; the library
# default stays 1 (every frame: the exact objective, as runs before the knob computed).
SAMPLED_SUB_TALKER_FRAMES = 0.25

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
        "objective": {"sub_talker_frames": SAMPLED_SUB_TALKER_FRAMES},
        "optim": {"name": "adamw_8bit", "lr": 2e-5, "accumulation": 4},
        "schedule": {"name": "cosine", "warmup_steps": 100, "total_steps": 2000},
        "run": {"eval_every": 100, "eval_batches": 20, "checkpoint_every": 500, "keep_last": 3,
                "activation_stats_every": 100},
    },
    # The long run on H100 hosts (one to eight GPUs each): the GPU training setup with plain AdamW.
    "full": {
        "data": {"frame_budget": 4096, "num_workers": 4},
        "train": _GPU_TRAIN,
        "objective": {"sub_talker_frames": SAMPLED_SUB_TALKER_FRAMES},
        "optim": {"name": "adamw", "lr": 2e-5, "accumulation": 1},
        "schedule": {"name": "cosine", "warmup_steps": 1000, "total_steps": 50000},
        "run": {"eval_every": 100, "eval_batches": 50, "checkpoint_every": 500, "keep_last": 3,
                "activation_stats_every": 200},
    },
}
