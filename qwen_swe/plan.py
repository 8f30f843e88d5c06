"""Memory planner: per-GPU and host memory of a training setup, before renting the machine.

Pure functions over a model shape (read from a preset or a model folder's config.json) and the run's settings:

- `parameter_counts`: exact parameter counts per component, from the layer shapes (checked against instantiated
  models in tests/test_plan.py);
- `estimate`: per-GPU bytes (weights, gradients, optimizer states, activations, communication buckets, device
  context) and host bytes (offloaded states, model loading, processes), whether both fit with headroom;
- `recommend`: the cheapest combination of memory savers that fits, cheapest meaning: changes what trains least,
  then slows steps least (see `SAVERS`).

The settings mirror the trainer's (`qwen_swe.train.config`): `train.precision` fp32 / bf16-mixed / bf16-pure,
`optim.name` adamw / adamw_8bit, `train.mode` full / lora, `train.gradient_checkpointing`, `data.frame_budget`,
and the DeepSpeed configs in ds_configs/ (ZeRO-2/3, offload of optimizer state and of weights).

Activation sizes come from byte counts per token and per decoder layer (`LAYER_ACTIVATION_BYTES`), counted with
`torch.autograd.graph.saved_tensors_hooks` on one released-shape layer under each precision. The peak is followed
through the backward pass: activations are freed layer by layer while gradients arrive, and the embedding tables'
gradients (the text embedding is a third of the 0.6B) arrive last, when the activations are gone.

No torch here: `qwen-swe plan` answers in well under a second.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .train.config.schema import SAMPLED_SUB_TALKER_FRAMES
from .train.precision import PRECISIONS
from .units import GIB, parse_bytes

GB = GIB  # the planner counts memory in binary gigabytes, as GPUs are sold and nvidia-smi reports

OPTIMIZERS = ("adamw", "adamw_8bit")
MODES = ("full", "lora")
ZERO_STAGES = (0, 2, 3)
OFFLOADS = ("none", "optimizer", "optimizer+params")

# ---------------------------------------------------------------------------------------- documented constants
# Bytes saved for backward per token by one decoder layer, as a*hidden + b*(q_width + kv_width) + c*intermediate
# (q_width = heads*head_dim, kv_width = kv_heads*head_dim), counted with saved_tensors_hooks on a released 0.6B talker
# layer (sdpa attention, which keeps q, k, v, output and log-sum-exp, never the L x L weights):
#   fp32 124072 B/token (formula 122880); bf16 autocast 83232 (82744); bf16 weights 72360 (71680).
# fp32: each RMSNorm keeps its input, normalised and scaled output; q/k pass a head-dim norm and rope; the SwiGLU
# MLP keeps gate, silu(gate), up and their product. bf16 halves the linear outputs but the norms compute in fp32.
LAYER_ACTIVATION_BYTES: dict[str, tuple[float, float, float]] = {
    "fp32": (24.0, 16.0, 16.0),
    "bf16-mixed": (20.0, 12.5, 8.0),
    "bf16": (16.0, 10.0, 8.0),
}
# Residual-stream bytes per element: what gradient checkpointing keeps per layer and token (the layer input).
RESIDUAL_BYTES = {"fp32": 4, "bf16-mixed": 4, "bf16": 2}
# Bytes per element of linear outputs (autocast gives bf16 from fp32 weights).
LINEAR_OUTPUT_BYTES = {"fp32": 4, "bf16-mixed": 2, "bf16": 2}
# Loss transients: the gradient of each log-softmax input (fp32) exists next to the saved output in backward.
LOSS_GRADIENT_COPIES = 2
# Code-predictor positions per target frame: [talker hidden, codebook 0, codebooks 1..14].
SUB_TALKER_POSITIONS = 16
# Talker prompt positions per sample before the text (role tokens, codec prefix with language, speaker, pad, bos).
PROMPT_POSITIONS = 10
# Typical batch contents when only a frame budget is given: Swedish speech tokenizes to about 3.5 BPE tokens a
# second, i.e. 0.28 per 12.5 Hz frame (non-streaming layouts add them as positions; counted always, to be safe),
# and RixVox-like clips average about 8 s = 100 frames.
TEXT_TOKENS_PER_FRAME = 0.3
FRAMES_PER_SAMPLE = 100
# bitsandbytes 8-bit AdamW: two 1-byte states per element plus an fp32 absmax per 256-element block per state.
ADAMW_8BIT_BYTES = 2 + 2 * 4 / 256
# DeepSpeed ZeRO bucket sizes of ds_configs/zero2.json and zero3.json (elements, bf16 on the wire).
ZERO2_REDUCE_BUCKET = 200_000_000
ZERO2_ALLGATHER_BUCKET = 200_000_000
ZERO3_REDUCE_BUCKET = 50_000_000
ZERO3_PREFETCH_BUCKET = 50_000_000
# DeepSpeed's own estimators (estimate_zero2/3_model_states_mem_needs) add 50% to host-side state for pinned
# buffers and fragmentation; the planner does the same.
HOST_OFFLOAD_BUFFER_FACTOR = 1.5
# Per training process on the host: Python, torch, CUDA/ROCm libraries, the shard reader; per loader worker.
HOST_PROCESS_BYTES = 3.0 * GB
HOST_LOADER_WORKER_BYTES = 0.5 * GB
# A GPU loses this much to the runtime before any tensor: CUDA/ROCm context, kernels, cuBLAS/hipBLAS workspaces
# and NCCL/RCCL buffers.
GPU_CONTEXT_BYTES = 1.0 * GB
# The caching allocator rounds blocks and cannot always reuse freed ones: dynamic memory (activations, gradients in
# flight) needs this much more than the tensors themselves.
GPU_FRAGMENTATION = 1.10
# A setup fits when the estimate leaves this share of the device (and of host RAM) free.
DEFAULT_HEADROOM = 0.10


# ---------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class DecoderShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    attention_bias: bool = False

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_parameters(self) -> int:
        h, q, kv = self.hidden, self.q_width, self.kv_width
        attention = h * q + 2 * h * kv + q * h + 2 * self.head_dim  # q, k, v, o and the head-dim q/k norms
        if self.attention_bias:
            attention += q + 2 * kv + h
        return attention + 3 * h * self.intermediate + 2 * h  # SwiGLU MLP and the two RMSNorms

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear in one layer: what LoRA can wrap."""
        h, q, kv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


@dataclass(frozen=True)
class ModelShape:
    name: str
    talker: DecoderShape
    code_predictor: DecoderShape
    text_hidden: int
    text_vocab: int
    codec_vocab: int
    codebook_size: int
    code_groups: int
    speaker_encoder: Optional[dict[str, Any]] = None  # None for CustomVoice models (no speaker encoder)

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str = "model") -> "ModelShape":
        """From a Qwen3TTSConfig dict (config.json of a model folder, or model_shapes.model_config_dict)."""
        talker = config["talker_config"]
        predictor = talker["code_predictor_config"]
        speaker = config.get("speaker_encoder_config") if config.get("tts_model_type", "base") == "base" else None
        return cls(
            name=name,
            talker=_decoder(talker),
            code_predictor=_decoder(predictor),
            text_hidden=int(talker["text_hidden_size"]),
            text_vocab=int(talker["text_vocab_size"]),
            codec_vocab=int(talker["vocab_size"]),
            codebook_size=int(predictor["vocab_size"]),
            code_groups=int(talker.get("num_code_groups", 16)),
            speaker_encoder=dict(speaker) if speaker else None,
        )


def _decoder(config: dict[str, Any]) -> DecoderShape:
    heads = int(config["num_attention_heads"])
    return DecoderShape(
        hidden=int(config["hidden_size"]),
        intermediate=int(config["intermediate_size"]),
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
        attention_bias=bool(config.get("attention_bias", False)),
    )


def preset_shape(name: str) -> ModelShape:
    """The released 12 Hz Base model of that size ("0.6b" or "1.7b")."""
    from .model_shapes import SHAPES, model_config_dict

    if name not in SHAPES:
        raise ValueError(f"unknown model preset {name!r}; use one of {', '.join(SHAPES)} or a model folder")
    return ModelShape.from_config(model_config_dict(name), name=f"released {name} Base")


def folder_shape(model_dir: str | Path) -> ModelShape:
    """From MODEL_DIR/config.json (read as JSON: no torch, no qwen_tts import)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir}: no config.json; pass a Qwen3-TTS model folder or a preset (0.6b, 1.7b)")
    try:
        return ModelShape.from_config(json.loads(path.read_text(encoding="utf-8")), name=str(model_dir))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a Qwen3-TTS config ({type(error).__name__}: {error}); expected "
                         "talker_config with code_predictor_config") from error


def resolve_shape(model: str) -> ModelShape:
    """A preset name or a model folder."""
    if Path(model).is_dir():
        return folder_shape(model)
    return preset_shape(model)


# ---------------------------------------------------------------------------------------- parameters
def speaker_encoder_parameters(config: dict[str, Any], talker_hidden: int) -> int:
    """ECAPA-TDNN of qwen_tts: TDNN, SE-Res2Net blocks, multi-layer aggregation, attentive pooling, projection."""
    channels = list(config["enc_channels"])
    kernels = list(config["enc_kernel_sizes"])
    scale = int(config.get("enc_res2net_scale", 8))
    se = int(config.get("enc_se_channels", 128))
    attention = int(config.get("enc_attention_channels", 128))
    mel = int(config.get("mel_dim", 128))
    out = int(config.get("enc_dim", talker_hidden))

    def conv(c_in: int, c_out: int, kernel: int = 1) -> int:
        return c_in * c_out * kernel + c_out

    total = conv(mel, channels[0], kernels[0])
    for i in range(1, len(channels) - 1):
        c_in, c = channels[i - 1], channels[i]
        part = c // scale
        total += conv(c_in, c) + (scale - 1) * conv(part, part, kernels[i]) + conv(c, c)
        total += conv(c, se) + conv(se, c)
    last = channels[-1]
    total += conv(last, last, kernels[-1])  # multi-layer feature aggregation
    total += conv(3 * last, attention) + conv(attention, last)  # attentive statistics pooling
    total += conv(2 * last, out)
    return total


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Exact parameter counts of `Qwen3TTSForConditionalGeneration`, per component, plus "total"."""
    t, c = shape.talker, shape.code_predictor
    predictor_rows = shape.code_groups - 1
    counts = {
        "text_embedding": shape.text_vocab * shape.text_hidden,
        "text_projection": shape.text_hidden * shape.text_hidden + shape.text_hidden
        + shape.text_hidden * t.hidden + t.hidden,
        "codec_embedding": shape.codec_vocab * t.hidden,
        "talker_layers": t.layers * t.layer_parameters() + t.hidden,  # + final norm
        "codec_head": t.hidden * shape.codec_vocab,
        "code_predictor_layers": c.layers * c.layer_parameters() + c.hidden,
        # the predictor's codebook 1..15 rows are as wide as the talker: they feed the talker's frame embedding
        "code_predictor_embeddings": predictor_rows * shape.codebook_size * t.hidden,
        "code_predictor_heads": predictor_rows * c.hidden * shape.codebook_size,
        "code_predictor_projection": (t.hidden * c.hidden + c.hidden) if c.hidden != t.hidden else 0,
        "speaker_encoder": speaker_encoder_parameters(shape.speaker_encoder, t.hidden) if shape.speaker_encoder else 0,
    }
    counts["total"] = sum(counts.values())
    return counts


def lora_parameters(shape: ModelShape, rank: int) -> int:
    """Adapters (A: in x r, B: r x out) on every attention and MLP linear of the talker's decoder layers."""
    return shape.talker.layers * sum(rank * (i + o) for i, o in shape.talker.linear_shapes())


def largest_parameter(counts: dict[str, int], shape: ModelShape) -> int:
    """Elements of the largest single tensor (what ZeRO-3 gathers at once, at least)."""
    t = shape.talker
    return max(counts["text_embedding"], counts["codec_embedding"], t.hidden * t.intermediate,
               shape.text_hidden * shape.text_hidden)


# ---------------------------------------------------------------------------------------- compute
def step_flops(shape: ModelShape, batch: "BatchShape", sequence: int) -> dict[str, float]:
    """Matmul FLOPs of one forward + backward (3x the forward's 2 x multiply-adds) over a batch, by part: the text
    projection, the talker layers (projections, MLP, causal attention over `sequence` positions per sample), the
    codebook-0 head at the supervised positions, the code predictor (16 positions per scored frame) and its heads.
    Embedding lookups, norms and softmaxes are left out (a few percent)."""
    t, c = shape.talker, shape.code_predictor
    train = 6.0  # 2 FLOPs per multiply-add, forward + backward (2x the forward)

    def decoder(d: DecoderShape, positions: float, context: float) -> float:
        weights = d.hidden * (2 * d.q_width + 2 * d.kv_width) + 3 * d.hidden * d.intermediate
        attention = 2 * d.q_width * context / 2  # QK^T and AV, causal: half the context on average
        return train * d.layers * positions * (weights + attention)

    scored = batch.sub_talker_frames
    text = batch.positions  # every talker position carries a text channel (tts_pad when the text has run out)
    flops = {
        "text_projection": train * text * (shape.text_hidden * shape.text_hidden + shape.text_hidden * t.hidden),
        "talker": decoder(t, batch.positions, sequence),
        "codec_head": train * batch.supervised * t.hidden * shape.codec_vocab,
        "code_predictor": decoder(c, scored * SUB_TALKER_POSITIONS, SUB_TALKER_POSITIONS)
        + (train * scored * SUB_TALKER_POSITIONS * t.hidden * c.hidden if c.hidden != t.hidden else 0.0),
        "code_predictor_heads": train * scored * (shape.code_groups - 1) * c.hidden * shape.codebook_size,
    }
    flops["total"] = sum(flops.values())
    return flops


# ---------------------------------------------------------------------------------------- settings and hosts
@dataclass
class Settings:
    gpus_per_host: int = 1
    hosts: int = 1
    zero: int = 0  # 0: no DeepSpeed (plain / DDP); 2 or 3: DeepSpeed ZeRO stage
    offload: str = "none"  # none | optimizer | optimizer+params (ZeRO-3 only)
    precision: str = "bf16-mixed"
    optimizer: str = "adamw"
    mode: str = "full"
    lora_rank: int = 16
    gradient_checkpointing: bool = False
    freeze_text_embedding: bool = False
    frame_budget: int = 2048
    sub_talker_frames: float = 1.0  # objective.sub_talker_frames: the share of frames the sub-talker is trained on
    text_tokens_per_frame: float = TEXT_TOKENS_PER_FRAME
    frames_per_sample: int = FRAMES_PER_SAMPLE
    loader_workers: int = 2

    @property
    def world_size(self) -> int:
        return self.gpus_per_host * self.hosts

    def check(self) -> None:
        errors = []
        if self.precision not in PRECISIONS:
            errors.append(f"--precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.optimizer not in OPTIMIZERS:
            errors.append(f"--optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.mode not in MODES:
            errors.append(f"--mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.zero not in ZERO_STAGES:
            errors.append(f"--zero: {self.zero} is not one of 0 (no DeepSpeed), 2, 3")
        if self.offload not in OFFLOADS:
            errors.append(f"--offload: {self.offload!r} is not one of {', '.join(OFFLOADS)}")
        if self.offload != "none" and self.zero == 0:
            errors.append("--offload needs DeepSpeed: add --zero 2 or --zero 3")
        if self.offload == "optimizer+params" and self.zero != 3:
            errors.append("--offload optimizer+params needs --zero 3 (ZeRO-2 keeps the weights on every GPU)")
        if not 0.0 < self.sub_talker_frames <= 1.0:
            errors.append(f"--sub-talker-frames: must be in (0, 1], got {self.sub_talker_frames}")
        if self.zero and self.optimizer == "adamw_8bit":
            errors.append("--optimizer adamw_8bit cannot run under DeepSpeed (ZeRO partitions the optimizer state "
                          "itself); use --zero 0 or --optimizer adamw")
        if self.zero and self.precision == "bf16-pure":
            errors.append("--precision bf16-pure is refused under DeepSpeed (its config's bf16 keeps fp32 master "
                          "weights); use bf16-mixed or fp32 with --zero")
        if self.gpus_per_host < 1 or self.hosts < 1:
            errors.append("--gpus and --hosts must be at least 1")
        if self.frame_budget < 1:
            errors.append("--frame-budget must be at least 1")
        if errors:
            raise ValueError("\n".join(errors))


@dataclass(frozen=True)
class Host:
    name: str
    gpu_memory: float  # bytes per device
    host_ram: float  # bytes per host
    device_context: float = GPU_CONTEXT_BYTES
    fragmentation: float = GPU_FRAGMENTATION
    device_is_host: bool = False  # CPU training: the "device" is the host's RAM


HOSTS: dict[str, Host] = {
    # Hemma: one AMD Radeon AI PRO R9700 (32 GB); a typical workstation host around it has 64 GB of RAM.
    "r9700-32gb": Host("r9700-32gb", gpu_memory=32 * GB, host_ram=64 * GB),
    # Cloud H100 80 GB hosts (1-8 GPUs); 8-GPU nodes usually carry 1-2 TB of RAM.
    "h100-80gb": Host("h100-80gb", gpu_memory=80 * GB, host_ram=1024 * GB),
}


def cpu_host(ram_bytes: float) -> Host:
    """Training on the CPU: no device context, no caching allocator, the model lives in host RAM."""
    return Host("cpu", gpu_memory=ram_bytes, host_ram=ram_bytes, device_context=0.0, fragmentation=1.0,
                device_is_host=True)


def machine_ram() -> int:
    """This machine's physical RAM in bytes (what `--host cpu` trains in)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _memory_size(text: str, option: str) -> int:
    size = parse_bytes(text, option)
    if size <= 0:
        raise ValueError(f"{option}: {text!r}: a memory size must be positive, e.g. 24GB")
    if size < GIB:  # no machine trains in less; a bare "24" is 24 bytes, almost surely meant as 24GB
        raise ValueError(f"{option}: {text!r} is {size} bytes, less than 1 GiB; give a unit, e.g. 24GB")
    return size


def resolve_host(name: str, gpu_memory: Optional[str] = None, host_ram: Optional[str] = None) -> Host:
    """The machine of `qwen-swe plan --host NAME [--gpu-memory SIZE] [--host-ram SIZE]`.

    A preset of `HOSTS` with the given sizes replacing its card and RAM, or "cpu": training in RAM, of the size
    given by either option, else this machine's. Sizes are read by `qwen_swe.units.parse_bytes` (binary units).
    """
    if name == "cpu":
        if gpu_memory or host_ram:
            return cpu_host(_memory_size(gpu_memory or host_ram, "--gpu-memory" if gpu_memory else "--host-ram"))
        return cpu_host(machine_ram())
    if name not in HOSTS:
        raise ValueError(f"--host: unknown host {name!r}; use r9700-32gb, h100-80gb or cpu "
                         "(and --gpu-memory/--host-ram for other machines)")
    base = HOSTS[name]
    return Host(base.name if not gpu_memory else f"{base.name} ({gpu_memory} cards)",
                gpu_memory=_memory_size(gpu_memory, "--gpu-memory") if gpu_memory else base.gpu_memory,
                host_ram=_memory_size(host_ram, "--host-ram") if host_ram else base.host_ram)


# ---------------------------------------------------------------------------------------- batch contents
@dataclass(frozen=True)
class BatchShape:
    positions: int  # talker positions in the padded batch (samples x longest sequence)
    target_frames: int  # frames of the batch
    supervised: int  # talker positions with a codebook-0 label (target frames + one EOS per sample)
    scored_frames: Optional[int] = None  # frames the sub-talker is trained on (16 code-predictor positions each);
    # None: every target frame (objective.sub_talker_frames = 1)

    @property
    def sub_talker_frames(self) -> int:
        return self.target_frames if self.scored_frames is None else self.scored_frames


def batch_shape(settings: Settings) -> BatchShape:
    """A frame-budget batch: frames plus text tokens plus prompt positions per sample."""
    frames = settings.frame_budget
    samples = max(1, math.ceil(frames / max(1, settings.frames_per_sample)))
    text = math.ceil(frames * settings.text_tokens_per_frame)
    scored = max(1, round(settings.sub_talker_frames * frames))
    return BatchShape(positions=frames + text + samples * PROMPT_POSITIONS, target_frames=frames,
                      supervised=frames + samples, scored_frames=scored)


# ---------------------------------------------------------------------------------------- the estimate
@dataclass
class Estimate:
    model: str
    settings: dict[str, Any]
    host: str
    parameters: dict[str, int]
    trainable_parameters: int
    batch: dict[str, int]
    gpu: dict[str, float]  # bytes per device, by component
    gpu_total: float
    gpu_capacity: float
    host_ram: dict[str, float]  # bytes per host, by component
    host_total: float
    host_capacity: float
    headroom: float
    fits_gpu: bool
    fits_host: bool
    notes: list[str] = field(default_factory=list)
    forward_backward_peak: float = 0.0  # activations + gradients at the peak of forward and backward alone

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fits"] = self.fits
        for key in ("gpu", "host_ram"):
            out[key + "_gb"] = {name: round(value / GB, 3) for name, value in out.pop(key).items()}
        for key in ("gpu_total", "gpu_capacity", "host_total", "host_capacity"):
            out[key + "_gb"] = round(out.pop(key) / GB, 3)
        return out


def _activation_kind(settings: Settings) -> str:
    """Under DeepSpeed bf16 the model runs in bf16 weights (fp32 master copies live in the optimizer)."""
    if settings.precision == "fp32":
        return "fp32"
    if settings.zero or settings.precision == "bf16-pure":
        return "bf16"
    return "bf16-mixed"


def layer_activation_bytes(decoder: DecoderShape, kind: str) -> float:
    """Bytes one decoder layer keeps for backward, per token."""
    a, b, c = LAYER_ACTIVATION_BYTES[kind]
    return a * decoder.hidden + b * (decoder.q_width + decoder.kv_width) + c * decoder.intermediate


def activation_parts(shape: ModelShape, batch: BatchShape, kind: str, checkpointing: bool) -> dict[str, Any]:
    """Saved-for-backward bytes by part, plus the one layer a checkpointed backward recomputes at a time."""
    t, c = shape.talker, shape.code_predictor
    linear = LINEAR_OUTPUT_BYTES[kind]
    residual = RESIDUAL_BYTES[kind]
    norm = LAYER_ACTIVATION_BYTES[kind][0] / 2  # one RMSNorm's share of the per-layer hidden term
    predictor_positions = batch.sub_talker_frames * SUB_TALKER_POSITIONS
    talker_layer = layer_activation_bytes(t, kind) * batch.positions
    predictor_layer = layer_activation_bytes(c, kind) * predictor_positions
    if checkpointing:  # non-reentrant checkpointing keeps each layer's input; backward recomputes one layer at a time
        talker_kept = t.layers * residual * t.hidden * batch.positions
        predictor_kept = c.layers * residual * c.hidden * predictor_positions
    else:
        talker_kept = t.layers * talker_layer
        predictor_kept = c.layers * predictor_layer
    embeddings = batch.positions * (3 * shape.text_hidden * linear + 2 * t.hidden * residual)
    talker_head = batch.positions * norm * t.hidden + batch.supervised * 4 * shape.codec_vocab
    predictor_inputs = predictor_positions * t.hidden * residual * (2 if c.hidden != t.hidden else 1)
    predictor_heads = predictor_positions * norm * c.hidden \
        + batch.sub_talker_frames * (shape.code_groups - 1) * shape.codebook_size * 4
    loss_logits = batch.supervised * 4 * shape.codec_vocab \
        + batch.sub_talker_frames * (shape.code_groups - 1) * shape.codebook_size * 4
    return {
        "embeddings": embeddings, "talker_layers": talker_kept, "talker_head": talker_head,
        "predictor_inputs": predictor_inputs, "predictor_layers": predictor_kept, "predictor_heads": predictor_heads,
        "loss_transient": LOSS_GRADIENT_COPIES * loss_logits,
        "recompute": (max(talker_layer, predictor_layer) if checkpointing else 0.0),
    }


def _trainable(counts: dict[str, int], shape: ModelShape, settings: Settings) -> dict[str, int]:
    """Trainable parameters per component (the speaker encoder is always frozen)."""
    if settings.mode == "lora":
        # model_setup.apply_lora: adapters on the talker layers; text_projection and the talker's codec rows are
        # trained fully as peft modules_to_save (a trainable copy next to the frozen original).
        return {"lora_adapters": lora_parameters(shape, settings.lora_rank),
                "text_projection": counts["text_projection"], "codec_embedding": counts["codec_embedding"]}
    trainable = {name: n for name, n in counts.items() if name not in ("total", "speaker_encoder")}
    if settings.freeze_text_embedding:
        trainable.pop("text_embedding")
    return trainable


def _weight_bytes(counts: dict[str, int], shape: ModelShape, settings: Settings, trainable: dict[str, int]) -> float:
    """Resident weights (before ZeRO partitioning), in the dtype the run keeps them in."""
    total = counts["total"]
    if settings.mode == "lora":
        total += trainable["lora_adapters"] + counts["text_projection"] + counts["codec_embedding"]
    if settings.zero:
        return 2.0 * total if settings.precision != "fp32" else 4.0 * total
    if settings.precision != "bf16-pure":
        return 4.0 * total
    # bf16-pure: keep_fp32_modules (norms, codec_head, the predictor's lm_head) and LoRA adapters stay fp32
    t, c = shape.talker, shape.code_predictor
    fp32 = counts["codec_head"] + counts["code_predictor_heads"] + 2 * (t.layers * t.hidden + c.layers * c.hidden)
    if settings.mode == "lora":
        fp32 += trainable["lora_adapters"]
    return 2.0 * (total - fp32) + 4.0 * fp32


def estimate(shape: ModelShape, settings: Settings, host: Host, headroom: float = DEFAULT_HEADROOM,
             batch: Optional[BatchShape] = None) -> Estimate:
    """Per-device and per-host memory of one training step at steady state (optimizer state allocated)."""
    settings.check()
    if host.device_is_host and settings.optimizer == "adamw_8bit":
        raise ValueError("the planner models bitsandbytes' 8-bit AdamW on GPUs only: its CPU path keeps fp32 copies "
                         "of each tensor's state and gradient while it steps (a 0.6B full fine-tune peaked at 1.8x "
                         "the GPU figure here); plan a CPU run with --optimizer adamw")
    counts = parameter_counts(shape)
    trainable_parts = _trainable(counts, shape, settings)
    trainable = sum(trainable_parts.values())
    batch = batch or batch_shape(settings)
    n = settings.world_size
    kind = _activation_kind(settings)
    acts = activation_parts(shape, batch, kind, settings.gradient_checkpointing)
    notes: list[str] = []
    gpu: dict[str, float] = {}
    hostram: dict[str, float] = {}
    weights = _weight_bytes(counts, shape, settings, trainable_parts)
    ds = settings.zero > 0
    master = 4 if settings.precision == "fp32" else 2  # bytes per weight / gradient element under DeepSpeed

    # ---- model states
    if not ds:
        gpu["weights"] = weights
        grad_bytes = 2 if settings.precision == "bf16-pure" and settings.mode == "full" else 4
        grads_total = grad_bytes * trainable
        state_bytes = ADAMW_8BIT_BYTES if settings.optimizer == "adamw_8bit" else 2 * grad_bytes
        gpu["optimizer_states"] = state_bytes * trainable
        if n > 1:
            gpu["ddp_buckets"] = grads_total  # DDP reduces through its own bucket copy of every gradient
    else:
        offload_params = settings.offload == "optimizer+params"
        offload_optimizer = settings.offload != "none"
        largest = largest_parameter(counts, shape)
        if settings.zero == 3:
            gpu["weights"] = 0.0 if offload_params else weights / n
            gpu["zero3_working_set"] = master * (2 * largest + ZERO3_PREFETCH_BUCKET)
            gpu["comm_buckets"] = 2 * master * ZERO3_REDUCE_BUCKET
        else:
            gpu["weights"] = weights
            gpu["comm_buckets"] = master * (2 * ZERO2_REDUCE_BUCKET + ZERO2_ALLGATHER_BUCKET)
        grads_total = master * trainable / n  # reduced gradients live in the owning rank's partition
        # fp32 master weights + Adam m and v (12 B) and the fp32 gradient of the partition at step time (4 B)
        # (fp32 runs need no master copy: Adam m and v only)
        optimizer_partition = (8 if settings.precision == "fp32" else 16) * trainable / n
        if offload_optimizer:
            hostram["offloaded_optimizer"] = HOST_OFFLOAD_BUFFER_FACTOR * optimizer_partition * settings.gpus_per_host
            gpu["optimizer_states"] = 0.0
        else:
            gpu["optimizer_states"] = optimizer_partition
        if offload_params:
            hostram["offloaded_weights"] = HOST_OFFLOAD_BUFFER_FACTOR * weights / n * settings.gpus_per_host

    # ---- the backward timeline: activations leave layer by layer while gradients arrive
    if settings.precision == "bf16-mixed" and not ds:
        linears = counts["talker_layers"] + counts["code_predictor_layers"] + counts["text_projection"] \
            + counts["codec_head"] + counts["code_predictor_heads"] + counts["code_predictor_projection"]
        acts["autocast_weight_cache"] = 2.0 * linears  # bf16 copies of every fp32 weight a matmul used
    else:
        acts["autocast_weight_cache"] = 0.0
    saved = sum(acts[k] for k in ("embeddings", "talker_layers", "talker_head", "predictor_inputs",
                                  "predictor_layers", "predictor_heads"))
    peak, forward_backward = _backward_peak(shape, counts, trainable_parts, settings, acts, saved, grads_total)
    gpu.update(peak)  # what is live at the step's peak; the full gradient size is `gradients_total` below
    dynamic = sum(peak.values())
    if not host.device_is_host:
        gpu["allocator_fragmentation"] = (host.fragmentation - 1.0) * dynamic
        gpu["device_context"] = host.device_context
    gpu_total = sum(gpu.values())
    notes.append(f"saved activations {saved / GB:.2f} GB, all gradients {grads_total / GB:.2f} GB per device; the "
                 "peak is when their live sum is largest")
    notes.append("optimizer modelled: " + (
        "DeepSpeed's partitioned AdamW (fp32 master weights, m and v)" if ds else
        "bitsandbytes 8-bit AdamW, its GPU path (2 bytes of state a parameter)" if settings.optimizer == "adamw_8bit"
        else "torch AdamW (m and v like the gradients)"))

    # ---- host RAM
    processes = settings.gpus_per_host
    if not host.device_is_host:
        hostram["processes"] = processes * (HOST_PROCESS_BYTES + settings.loader_workers * HOST_LOADER_WORKER_BYTES)
        if settings.zero == 3:
            load = 4.0 * largest_parameter(counts, shape) * processes  # zero.Init builds the model partitioned
        else:
            load = 4.0 * counts["total"] * processes  # every process materialises the fp32 model before moving it
        # loading happens before the optimizer exists: count whichever phase is larger
        steady = sum(hostram.values())
        hostram["model_loading"] = max(0.0, load - (steady - hostram["processes"]))
        if hostram["model_loading"] == 0.0:
            hostram.pop("model_loading")
    host_total = sum(hostram.values())

    if settings.precision == "bf16-pure" and settings.optimizer == "adamw":
        notes.append("bf16-pure with adamw keeps Adam states in bf16; pair it with adamw_8bit as the README says")
    if settings.mode == "lora" and settings.freeze_text_embedding:
        notes.append("--freeze-text-embedding changes nothing in LoRA mode (the text embedding is frozen anyway)")
    fits_gpu = gpu_total <= (1.0 - headroom) * host.gpu_memory
    fits_host = True if host.device_is_host else host_total <= (1.0 - headroom) * host.host_ram
    return Estimate(
        model=shape.name, settings=dataclasses.asdict(settings), host=host.name, parameters=counts,
        trainable_parameters=trainable, batch=dataclasses.asdict(batch), gpu=gpu, gpu_total=gpu_total,
        gpu_capacity=host.gpu_memory, host_ram=hostram, host_total=host_total, host_capacity=host.host_ram,
        headroom=headroom, fits_gpu=fits_gpu, fits_host=fits_host, notes=notes,
        forward_backward_peak=forward_backward,
    )


def _backward_peak(shape: ModelShape, counts: dict[str, int], trainable: dict[str, int], settings: Settings,
                   acts: dict[str, float], saved: float, grads_total: float) -> dict[str, float]:
    """What is live at the peak of forward end, backward and the optimizer step: {"activations", "gradients",
    "optimizer_step_temporaries"}; and the peak of forward and backward alone (activations + gradients).

    Backward runs loss -> code predictor -> talker layers (last first) -> text projection -> embedding tables.
    Each stage frees its saved activations and adds its parameters' gradients; ZeRO reduces gradients into
    partitions as they arrive (its buckets are counted apart).
    """
    total_trainable = max(1, sum(trainable.values()))
    per_param_grad = grads_total / total_trainable

    def grads_of(*names: str) -> float:
        return per_param_grad * sum(trainable.get(name, 0) for name in names)

    t, c = shape.talker, shape.code_predictor
    lora = settings.mode == "lora"
    talker_layer_grad = per_param_grad * (trainable.get("lora_adapters", 0) / t.layers if lora
                                          else t.layer_parameters() * ("talker_layers" in trainable))
    stages: list[tuple[float, float]] = [  # (gradient bytes added, activation bytes freed)
        (grads_of("code_predictor_heads"), acts["predictor_heads"]),
    ]
    stages += [(per_param_grad * c.layer_parameters() * ("code_predictor_layers" in trainable),
                acts["predictor_layers"] / c.layers)] * c.layers
    stages.append((grads_of("code_predictor_projection"), acts["predictor_inputs"]))
    stages.append((grads_of("codec_head"), acts["talker_head"]))
    stages += [(talker_layer_grad, acts["talker_layers"] / t.layers)] * t.layers
    stages.append((grads_of("text_projection"), acts["embeddings"]))
    stages.append((grads_of("text_embedding", "codec_embedding", "code_predictor_embeddings"), 0.0))

    transient = acts["loss_transient"] + acts["recompute"] + acts["autocast_weight_cache"]
    live_acts, live_grads = saved + transient, 0.0
    best = {"activations": live_acts, "gradients": live_grads, "optimizer_step_temporaries": 0.0}
    for i, (added, freed) in enumerate(stages):
        live_grads += added
        if i == 0:
            live_acts -= acts["loss_transient"]  # the loss gradients are consumed by the heads
        live_acts = max(0.0, live_acts - freed)
        if live_acts + live_grads > sum(best.values()):
            best = {"activations": live_acts, "gradients": live_grads, "optimizer_step_temporaries": 0.0}
    forward_backward = sum(best.values())
    # the optimizer step: all gradients plus its temporaries (torch's per-tensor AdamW: two of the largest tensor)
    step_temp = 0.0
    if settings.zero == 0 and settings.optimizer == "adamw":
        largest_trainable = max(trainable.values())
        step_temp = 2 * per_param_grad * min(largest_trainable, largest_parameter(counts, shape))
    if grads_total + step_temp > sum(best.values()):
        best = {"activations": 0.0, "gradients": grads_total, "optimizer_step_temporaries": step_temp}
    return best, forward_backward


# ---------------------------------------------------------------------------------------- recommendations
@dataclass(frozen=True)
class Saver:
    name: str
    changes_training: int  # 0: same math; 1: numerics or what is frozen change a little; 2: a different method
    slowdown: float  # step time factor, a rough GPU figure (documented, not measured here)
    why: str


# Ordered by what they cost. Slowdowns are typical published figures for transformer training on GPUs.
SAVERS: dict[str, Saver] = {
    # Faster, not slower: the step time at the 1.7B shape with a quarter of the frames (tools/bench_real_shape.py)
    "sub_talker_frames": Saver("sub_talker_frames", 0, 1 / 1.41,
                               f"score the sub-talker on {SAMPLED_SUB_TALKER_FRAMES:g} of the frames per step "
                               f"(objective.sub_talker_frames={SAMPLED_SUB_TALKER_FRAMES:g}, as the GPU presets "
                               "do): an unbiased estimate that drops most of its activations and time"),
    "adamw_8bit": Saver("adamw_8bit", 0, 1.02, "8-bit Adam states: 2 instead of 8 bytes a parameter, near-free"),
    "gradient_checkpointing": Saver("gradient_checkpointing", 0, 1.33,
                                    "recompute each layer in backward: one more forward pass"),
    "zero2": Saver("zero2", 0, 1.05, "ZeRO-2 partitions gradients and optimizer state over the GPUs (needs >1)"),
    "zero3": Saver("zero3", 0, 1.15, "ZeRO-3 partitions the weights too: more all-gathers every step"),
    "offload_optimizer": Saver("offload_optimizer", 0, 1.6,
                               "optimizer state and step on the CPU (DeepSpeed CPU Adam), PCIe traffic each step"),
    "offload_params": Saver("offload_params", 0, 2.5, "weights on the CPU too: every layer crosses PCIe twice a step"),
    "half_frames": Saver("half_frames", 0, 1.15,
                         "halve data.frame_budget and double optim.accumulation (same batch, smaller kernels)"),
    "quarter_frames": Saver("quarter_frames", 0, 1.35, "quarter data.frame_budget, accumulation x4"),
    "freeze_text_embedding": Saver("freeze_text_embedding", 1, 1.0,
                                   "freeze the 151936-row text embedding (the pilot/full presets do)"),
    "bf16_pure": Saver("bf16_pure", 1, 0.95, "bf16 weights (norms and heads fp32); no fp32 master copy"),
    "lora": Saver("lora", 2, 0.85, "LoRA adapters instead of a full fine-tune"),
}


def _apply(settings: Settings, savers: tuple[str, ...]) -> Optional[Settings]:
    """The settings with `savers` applied, or None when the combination is impossible."""
    s = dataclasses.replace(settings)
    for name in savers:
        if name == "sub_talker_frames":
            s.sub_talker_frames = min(s.sub_talker_frames, SAMPLED_SUB_TALKER_FRAMES)
        elif name == "adamw_8bit":
            s.optimizer = "adamw_8bit"
        elif name == "gradient_checkpointing":
            s.gradient_checkpointing = True
        elif name == "zero2":
            s.zero = max(s.zero, 2)
        elif name == "zero3":
            s.zero = 3
        elif name == "offload_optimizer":
            s.offload = "optimizer" if s.offload == "none" else s.offload
        elif name == "offload_params":
            s.offload = "optimizer+params"
        elif name == "half_frames":
            s.frame_budget = max(1, settings.frame_budget // 2)
        elif name == "quarter_frames":
            s.frame_budget = max(1, settings.frame_budget // 4)
        elif name == "freeze_text_embedding":
            s.freeze_text_embedding = True
        elif name == "bf16_pure":
            s.precision = "bf16-pure"
        elif name == "lora":
            s.mode = "lora"
    if "offload_optimizer" in savers and s.zero == 0:
        return None
    if "offload_params" in savers and s.zero != 3:
        return None
    if "zero2" in savers and ("zero3" in savers or settings.world_size == 1 and "offload_optimizer" not in savers):
        return None  # ZeRO-2 on one GPU only helps as the vehicle for offload
    if "half_frames" in savers and "quarter_frames" in savers:
        return None
    try:
        s.check()
    except ValueError:
        return None
    return s


@dataclass
class Recommendation:
    fits_as_given: bool
    savers: list[str]
    settings: Optional[dict[str, Any]]
    estimate: Optional[Estimate]
    slowdown: float
    changes_training: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"fits_as_given": self.fits_as_given, "savers": self.savers, "settings": self.settings,
                "slowdown": round(self.slowdown, 3), "changes_training": self.changes_training,
                "reason": self.reason, "estimate": self.estimate.to_dict() if self.estimate else None}


def recommend(shape: ModelShape, settings: Settings, host: Host, headroom: float = DEFAULT_HEADROOM,
              max_savers: int = 4) -> Recommendation:
    """The combination of savers that fits with headroom and costs least: first what changes training least,
    then the smallest slowdown (product of the savers' factors), then the fewest savers."""
    given = estimate(shape, settings, host, headroom)
    if given.fits:
        return Recommendation(True, [], dataclasses.asdict(settings), given, 1.0, 0, "fits as given")
    candidates = []
    names = list(SAVERS)
    for size in range(1, max_savers + 1):
        for combo in itertools.combinations(names, size):
            applied = _apply(settings, combo)
            if applied is None:
                continue
            cost = (max(SAVERS[n].changes_training for n in combo),
                    math.prod(SAVERS[n].slowdown for n in combo), len(combo))
            candidates.append((cost, combo, applied))
    candidates.sort(key=lambda item: item[0])
    for cost, combo, applied in candidates:
        try:
            result = estimate(shape, applied, host, headroom)
        except ValueError:  # a combination the planner does not model on this host
            continue
        if result.fits:
            why = "; ".join(SAVERS[n].why for n in combo)
            return Recommendation(False, list(combo), dataclasses.asdict(applied), result, cost[1], cost[0], why)
    return Recommendation(False, [], None, None, 0.0, 0,
                          f"nothing up to {max_savers} savers fits {host.name}: use more GPUs or hosts (--gpus, "
                          "--hosts) or a larger device")


# ---------------------------------------------------------------------------------------- rendering
def render(result: Estimate, recommendation: Optional[Recommendation] = None) -> str:
    """A plain-text table of the breakdown, the verdict and the recommendation."""
    s = result.settings
    p = result.parameters
    lines = [
        f"model     {result.model}: {p['total'] / 1e6:,.1f}M parameters, {result.trainable_parameters / 1e6:,.1f}M "
        f"trainable ({s['mode']}{', text embedding frozen' if s['freeze_text_embedding'] else ''})",
        f"setup     {result.host}, {s['hosts']} host(s) x {s['gpus_per_host']} device(s), "
        + (f"DeepSpeed ZeRO-{s['zero']}" + (f" offload {s['offload']}" if s['offload'] != 'none' else '')
           if s["zero"] else "no DeepSpeed")
        + f", {s['precision'] if not s['zero'] else ('bf16 + fp32 master' if s['precision'] != 'fp32' else 'fp32')}"
        + f", {s['optimizer']}, checkpointing {'on' if s['gradient_checkpointing'] else 'off'}",
        f"batch     frame budget {s['frame_budget']}: {result.batch['positions']} talker positions, "
        f"{(result.batch['scored_frames'] or result.batch['target_frames']) * SUB_TALKER_POSITIONS} code-predictor "
        f"positions" + (f" (sub-talker on {s['sub_talker_frames']:g} of the frames)" if s['sub_talker_frames'] < 1
                        else ""),
        "",
        f"{'per device':<28}{'GB':>10}",
    ]
    for name, value in result.gpu.items():
        lines.append(f"  {name:<26}{value / GB:>10.2f}")
    verdict = "fits" if result.fits_gpu else "does NOT fit"
    lines.append(f"  {'total':<26}{result.gpu_total / GB:>10.2f}   of {result.gpu_capacity / GB:.0f} GB: {verdict} "
                 f"(with {result.headroom:.0%} headroom)")
    if result.host_ram:
        lines += ["", f"{'per host (RAM)':<28}{'GB':>10}"]
        for name, value in result.host_ram.items():
            lines.append(f"  {name:<26}{value / GB:>10.2f}")
        verdict = "fits" if result.fits_host else "does NOT fit"
        lines.append(f"  {'total':<26}{result.host_total / GB:>10.2f}   of {result.host_capacity / GB:.0f} GB: "
                     f"{verdict}")
    for note in result.notes:
        lines.append(f"note: {note}")
    if recommendation is not None and not recommendation.fits_as_given:
        lines.append("")
        if recommendation.estimate is None:
            lines.append(f"recommendation: {recommendation.reason}")
        else:
            r = recommendation.estimate
            lines.append(f"recommendation: add {', '.join(recommendation.savers)} -> {r.gpu_total / GB:.2f} GB per "
                         f"device, {r.host_total / GB:.1f} GB host RAM, about x{recommendation.slowdown:.2f} step "
                         "time")
            lines.append(f"  why: {recommendation.reason}")
            lines.append("  as flags: " + settings_flags(recommendation.settings))
    return "\n".join(lines)


def settings_flags(settings: dict[str, Any]) -> str:
    """The `qwen-swe plan` flags that reproduce `settings` (and name the trainer knobs to set)."""
    flags = [f"--zero {settings['zero']}"] if settings["zero"] else []
    if settings["offload"] != "none":
        flags.append(f"--offload {settings['offload']}")
    flags += [f"--precision {settings['precision']}", f"--optimizer {settings['optimizer']}",
              f"--mode {settings['mode']}", f"--frame-budget {settings['frame_budget']}"]
    if settings["gradient_checkpointing"]:
        flags.append("--gradient-checkpointing")
    if settings["freeze_text_embedding"]:
        flags.append("--freeze-text-embedding")
    if settings["sub_talker_frames"] < 1:
        flags.append(f"--sub-talker-frames {settings['sub_talker_frames']:g}")
    return " ".join(flags)


def plan_dict(result: Estimate, recommendation: Optional[Recommendation]) -> dict[str, Any]:
    out = result.to_dict()
    out["recommendation"] = recommendation.to_dict() if recommendation is not None else None
    return out


__all__ = [
    "BatchShape", "DecoderShape", "Estimate", "Host", "HOSTS", "ModelShape", "Recommendation", "SAVERS", "Settings",
    "batch_shape", "cpu_host", "estimate", "folder_shape", "machine_ram", "parameter_counts", "plan_dict",
    "preset_shape", "recommend", "render", "resolve_host", "resolve_shape", "step_flops",
]
