"""Complete random-weight Qwen3-TTS 12 Hz model folders for tests, built offline in seconds.

A folder from `build_tiny_model` loads with `qwen_tts.Qwen3TTSModel.from_pretrained` exactly like a released
checkpoint: config.json (talker, code predictor and speaker encoder sub-configs with the released special ids),
model.safetensors, the real Qwen text tokenizer, the processor and generation configs, and `speech_tokenizer/`
holding a tiny 12 Hz codec (Mimi-style encoder + Qwen3-TTS decoder, 16 codebooks of 2048 codes, 1920 samples a
frame at 24 kHz). Sizes are tiny; every id, vocabulary size and structural 0.6B/1.7B difference is real.

Same arguments, same bytes (on one torch build and CPU type): weights come from seeded generators, the codec is
calibrated on one thread, JSON is written with sorted keys, and the text tokenizer is copied from a cache keyed
by the sha256 of the ranks it was converted from.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .model_shapes import (
    CODEBOOK_SIZE,
    FRAME_RATE,
    NUM_CODE_GROUPS,
    RELEASED_GENERATE_DEFAULTS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    model_config_dict,
)
from .text_tokenizer import build_qwen_text_tokenizer
from .modeling import import_qwen_tts

# Tiny 12 Hz codec. The encoder is transformers' Mimi (SEANet convs 8*6*5*4 = 960 samples, then a stride-2
# downsample: 1920 samples = one 12.5 Hz frame); the decoder upsamples 8*5*4*3 * 2*2 = 1920 samples a frame.
TINY_CODEC_ENCODER: dict[str, Any] = {
    "sampling_rate": SAMPLE_RATE,
    "_frame_rate": FRAME_RATE,
    "audio_channels": 1,
    "hidden_size": 32,
    "num_filters": 4,
    "num_residual_layers": 1,
    "upsampling_ratios": [8, 6, 5, 4],
    "kernel_size": 7,
    "last_kernel_size": 3,
    "residual_kernel_size": 3,
    "dilation_growth_rate": 2,
    "use_causal_conv": True,
    "pad_mode": "constant",
    "compress": 2,
    "trim_right_ratio": 1.0,
    "codebook_size": CODEBOOK_SIZE,
    "codebook_dim": 16,
    "vector_quantization_hidden_dimension": 16,
    "num_quantizers": NUM_CODE_GROUPS,
    "num_semantic_quantizers": 1,
    "upsample_groups": 32,
    "num_hidden_layers": 1,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "gelu",
    "max_position_embeddings": 8000,
    "norm_eps": 1e-5,
    "use_cache": False,
    "use_streaming": False,
    "rope_theta": 10000.0,
    "sliding_window": 250,
    "layer_scale_initial_scale": 0.01,
    "attention_bias": False,
    "use_conv_shortcut": False,
}
TINY_CODEC_DECODER: dict[str, Any] = {
    "codebook_size": CODEBOOK_SIZE,
    "codebook_dim": 32,
    "hidden_size": 32,
    "latent_dim": 32,
    "max_position_embeddings": 8000,
    "rope_theta": 10000,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "attention_bias": False,
    "sliding_window": 72,
    "intermediate_size": 64,
    "hidden_act": "silu",
    "layer_scale_initial_scale": 0.01,
    "rms_norm_eps": 1e-5,
    "num_hidden_layers": 1,
    "num_quantizers": NUM_CODE_GROUPS,
    "upsample_rates": [8, 5, 4, 3],
    "upsampling_ratios": [2, 2],
    "decoder_dim": 32,
    "attention_dropout": 0.0,
}

# speech_tokenizer/preprocessor_config.json: the padding mask it returns is what encode() trims frames with.
CODEC_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "chunk_length_s": None,
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "overlap": None,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": SAMPLE_RATE,
}
# preprocessor_config.json of the model folder, as released: it names the processor class for AutoProcessor.
PROCESSOR_CONFIG: dict[str, Any] = {
    "padding_side": "left",
    "padding_value": 0.0,
    "processor_class": "Qwen3TTSProcessor",
    "return_attention_mask": True,
}
# Released sampling defaults, but a short length cap: random weights almost never emit EOS, and a forgotten
# max_new_tokens would otherwise run 8192 steps.
TINY_GENERATE_DEFAULTS: dict[str, Any] = {**RELEASED_GENERATE_DEFAULTS, "max_new_tokens": 256}

_WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread: reductions split across threads round differently, which would make the
    calibrated codebooks (and so the bytes written) depend on the caller's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def save_state_dict(module: torch.nn.Module, path: Path, dtype: torch.dtype | None = None) -> None:
    """Write a module's state dict as safetensors (fixed metadata; safetensors orders tensors itself)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, tensor in module.state_dict().items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.detach().contiguous().clone()
    save_file(tensors, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------- the codec


def tiny_codec_config_dict() -> dict[str, Any]:
    """speech_tokenizer/config.json of the tiny codec (a `Qwen3TTSTokenizerV2Config`)."""
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": SAMPLE_RATE,
        "encode_downsample_rate": SAMPLES_PER_FRAME,
        "decode_upsample_rate": SAMPLES_PER_FRAME,
        "encoder_config": dict(TINY_CODEC_ENCODER),
        "decoder_config": dict(TINY_CODEC_DECODER),
        "transformers_version": _transformers_version(),
    }


def calibration_audio(seed: int, seconds: float = 4.0) -> np.ndarray:
    """Deterministic speech-like test signal: voiced harmonics with a moving pitch, noise bursts, pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 110 + 60 * np.sin(2 * np.pi * 0.7 * t) + 30 * np.sin(2 * np.pi * 2.3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = 0.5 * (1 + np.sign(np.sin(2 * np.pi * 3.1 * t)))  # on/off at a syllable-ish rate
    noise = rng.standard_normal(t.size) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t))
    wave = 0.25 * voiced * syllables + 0.08 * noise * (1 - syllables)
    return (0.8 * wave / np.max(np.abs(wave))).astype(np.float32)


def _encoder_latents(codec: torch.nn.Module, audio: np.ndarray) -> torch.Tensor:
    """The embeddings the Mimi encoder hands its quantizer, captured during a real encode() call."""
    encoder = codec.encoder
    quantizer = encoder.quantizer
    captured: dict[str, torch.Tensor] = {}
    original = quantizer.encode

    def capture(embeddings: torch.Tensor, num_quantizers: Any = None) -> torch.Tensor:
        captured["latents"] = embeddings.detach().clone()
        return original(embeddings, num_quantizers)

    quantizer.encode = capture  # instance attribute shadows the method for this one call
    try:
        with torch.no_grad():
            encoder.encode(torch.from_numpy(audio)[None, None, :], return_dict=True)
    finally:
        del quantizer.encode
    return captured["latents"]


def _randomise_rvq(rvq: torch.nn.Module, latents: torch.Tensor, generator: torch.Generator) -> None:
    """Give each residual codebook Gaussian entries matched to the residual it quantizes.

    Mimi's codebooks start at zero, so every frame would encode to code 0. Matching each level's spread to the
    residual left by the levels before it keeps all 16 levels' nearest-neighbour choices varied.
    """
    with torch.no_grad():
        projected = rvq.input_proj(latents) if rvq.input_proj is not None else latents
        residual = projected.transpose(1, 2).reshape(-1, projected.shape[1]).float()
        for layer in rvq.layers:
            codebook = layer.codebook
            std = residual.std(dim=0, keepdim=True).clamp(min=1e-4)
            mean = residual.mean(dim=0, keepdim=True)
            entries = mean + std * torch.randn(codebook.embed_sum.shape, generator=generator)
            codebook.embed_sum.copy_(entries * codebook.cluster_usage[:, None])
            codebook.initialized.fill_(1.0)
            codebook._embed = None  # drop the cached embed_sum / cluster_usage quotient
            residual = residual - entries[codebook.quantize(residual)]


def _randomise_decoder(decoder: torch.nn.Module, generator: torch.Generator) -> None:
    """Random decoder codebooks and fan-in scaled convs, so decoded audio is audible noise, not near-silence."""
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if name.endswith("embedding_sum"):
                param.copy_(torch.randn(param.shape, generator=generator))
            elif name.endswith(".conv.weight") and param.dim() == 3:
                fan_in = param.shape[1] * param.shape[2]
                param.copy_(torch.randn(param.shape, generator=generator) / np.sqrt(fan_in))
        # Quieten the output conv so the waveform sits well inside the decoder's [-1, 1] clamp.
        decoder.decoder[-1].conv.weight.mul_(0.1)


def build_tiny_codec(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny 12 Hz speech tokenizer folder (config, weights, feature-extractor config) and return it."""
    import_qwen_tts()
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_dict = tiny_codec_config_dict()
    with _single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**config_dict)).eval()
        generator = torch.Generator().manual_seed(seed + 7919)
        latents = _encoder_latents(codec, calibration_audio(seed))
        quantizer = codec.encoder.quantizer
        _randomise_rvq(quantizer.semantic_residual_vector_quantizer, latents, generator)
        _randomise_rvq(quantizer.acoustic_residual_vector_quantizer, latents, generator)
        _randomise_decoder(codec.decoder, generator)

    write_json(out / "config.json", config_dict)
    write_json(out / "preprocessor_config.json", CODEC_PREPROCESSOR_CONFIG)
    save_state_dict(codec, out / "model.safetensors")
    return out


# ----------------------------------------------------------------------------------------------- the model


def _full_config_dict(shape: str, model_type: str, weights_dtype: str) -> dict[str, Any]:
    config = model_config_dict(shape, tiny=True, model_type=model_type)
    config.update(
        {
            "architectures": ["Qwen3TTSForConditionalGeneration"],
            "model_type": "qwen3_tts",
            "dtype": weights_dtype,
            # Written like save_pretrained would. Under transformers 4.57.3 a version in (4.57.2, 5.0) makes
            # qwen_tts' `fix_mistral_regex=True` load swap the pre-tokenizer regex, as it does for released models.
            "transformers_version": _transformers_version(),
        }
    )
    return config


def _build_model(config_dict: dict[str, Any], seed: int) -> torch.nn.Module:
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    with _single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**config_dict)).eval()


def build_tiny_model(
    out_dir: str | os.PathLike,
    shape: str = "0.6b",
    seed: int = 0,
    model_type: str = "base",
    weights_dtype: str = "float32",
) -> Path:
    """Write a complete random-weight Qwen3-TTS 12 Hz model folder into `out_dir` and return its path.

    shape: "0.6b" (text_hidden_size 96 != hidden_size 64, like the real 0.6B) or "1.7b" (both 64).
    model_type: "base" (speaker encoder, voice cloning) or "custom_voice" (named speakers, no speaker encoder).
    weights_dtype: storage dtype of model.safetensors. float32 (default) keeps values exact through edit/save
    round trips (0.6b: ~77 MB, 1.7b: ~53 MB, nearly all of it the 151936-row text embedding); "bfloat16" stores
    like the releases do and halves that. `from_pretrained` without a dtype loads either as float32.
    """
    if weights_dtype not in _WEIGHT_DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(_WEIGHT_DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_dict = _full_config_dict(shape, model_type, weights_dtype)
    model = _build_model(config_dict, seed)

    write_json(out / "config.json", config_dict)
    write_json(out / "generation_config.json", TINY_GENERATE_DEFAULTS)
    write_json(out / "preprocessor_config.json", PROCESSOR_CONFIG)
    save_state_dict(model, out / "model.safetensors", _WEIGHT_DTYPES[weights_dtype])
    build_qwen_text_tokenizer(out)
    build_tiny_codec(out / "speech_tokenizer", seed=seed)
    return out


# ------------------------------------------------------------------------- in-memory models for the benchmarks
BENCH_TEXT = "Vi åker till Malmö med tåget i morgon bitti, och sedan vidare till Köpenhamn över bron."


def random_model(shape: str, released: bool = True, talker_layers: int | None = None, attention: str = "sdpa",
                 seed: int = 0) -> tuple[Any, torch.nn.Module]:
    """(config, a random-weight Qwen3TTSForConditionalGeneration) in memory, no folder written: the released
    widths and vocabularies of `shape` (or the tiny ones), with `talker_layers` of the talker's layers when given.
    For the benchmarks and checks under tools/ (built with every thread, unlike the byte-reproducible folders)."""
    import_qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    config_dict = model_config_dict(shape, tiny=not released)
    if talker_layers:
        config_dict["talker_config"]["num_hidden_layers"] = talker_layers
    config = Qwen3TTSConfig(**config_dict)
    for part in (config, config.talker_config, config.talker_config.code_predictor_config):
        part._attn_implementation = attention
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return config, Qwen3TTSForConditionalGeneration(config)


def random_batch(config: Any, samples: int, frames: int, text: str = BENCH_TEXT, layout_name: str = "streaming",
                 seed: int = 1) -> Any:
    """A laid-out batch of `samples` equal-length samples of `text` with random codes and x-vectors."""
    from .layout import Sample, SequenceLayout
    from .text_tokenizer import load_qwen_text_tokenizer

    layout = SequenceLayout(config, load_qwen_text_tokenizer())
    generator = torch.Generator().manual_seed(seed)
    return layout.collate([layout.build(Sample(
        key=f"s{i}", text=text, language="german",
        xvector=torch.randn(config.talker_config.hidden_size, generator=generator),
        codes=torch.randint(0, CODEBOOK_SIZE, (frames, NUM_CODE_GROUPS), generator=generator)), layout_name)
        for i in range(samples)])
