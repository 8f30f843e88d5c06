"""Hyper-parameters of the released Qwen3-TTS 12 Hz models and of the tiny test stand-ins, as plain data.

One set of functions turns a shape (released or tiny) into the config dicts `Qwen3TTSConfig` takes, so tiny test
models differ from the real ones only in sizes: the codec/text special ids, language rows, rope layout and the
0.6B/1.7B structural differences (text_hidden_size vs hidden_size, code-predictor projection) are the same.

Pure Python on purpose: importing this module must not pull in torch or transformers.
"""

from __future__ import annotations

import copy
from typing import Any

SHAPES = ("0.6b", "1.7b")
# The prompt layouts generate() runs (see layout.py for what each puts where); pure data so that the CLI can offer
# them as choices without importing torch.
LAYOUTS = ("non_streaming", "streaming", "icl", "icl_non_streaming")
MODEL_TYPES = ("base", "custom_voice")

TEXT_VOCAB_SIZE = 151936  # rows of the text embedding in every released Qwen3-TTS model
CODEC_VOCAB_SIZE = 3072  # talker codec rows: 0..2047 codes, the rest specials, languages and speakers
CODEBOOK_SIZE = 2048  # codes 0..2047 of every codebook; the talker's codec rows above them are specials
NUM_CODE_GROUPS = 16  # codebooks per 12 Hz codec frame: codebook 0 from the talker, 1..15 from the code predictor
SAMPLE_RATE = 24000  # Hz, of the codec's (and every shard build's) audio
FRAME_RATE = 12.5  # codec frames per second
SAMPLES_PER_FRAME = 1920
# generate() suppresses the top 1024 codec rows (vocab - 1024 .. vocab - 1) except EOS before it samples codebook
# 0; the objective masks the same rows so that its codebook-0 loss is over what inference can emit.
SUPPRESSED_CODEC_ROWS = 1024

# Text-side ids used by the prompt that `Qwen3TTSForConditionalGeneration.generate` builds (the text tokenizer maps
# the tokens <|im_start|>, <|im_end|>, <tts_pad>, <tts_text_bos>, <tts_text_eod>, "assistant" and "\n" to them).
IM_START_ID = 151644
IM_END_ID = 151645
TTS_PAD_ID = 151671
TTS_BOS_ID = 151672
TTS_EOS_ID = 151673
ASSISTANT_TOKEN_ID = 77091
NEWLINE_ID = 198
TEXT_SPECIAL_IDS: dict[str, int] = {  # as Qwen3TTSConfig names them
    "im_start_token_id": IM_START_ID,
    "im_end_token_id": IM_END_ID,
    "tts_pad_token_id": TTS_PAD_ID,
    "tts_bos_token_id": TTS_BOS_ID,
    "tts_eos_token_id": TTS_EOS_ID,
}

# Codec-side special rows of the released talkers (the qwen_tts defaults point above the vocabulary).
CODEC_SPECIAL_IDS: dict[str, int] = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}

# Language rows of the released models. The dialect rows only appear in the CustomVoice configs, where speakers
# point at them through `spk_is_dialect`; generate() never offers keys containing "dialect" as languages.
LANGUAGE_IDS: dict[str, int] = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "italian": 2070,
    "portuguese": 2071,
    "spanish": 2054,
    "japanese": 2058,
    "korean": 2064,
    "french": 2061,
    "russian": 2069,
}
DIALECT_LANGUAGE_IDS: dict[str, int] = {"sichuan_dialect": 2062, "beijing_dialect": 2074}

# Released talker rope: multimodal rope over a 128-dim head, [24, 20, 20] frequency pairs, interleaved.
RELEASED_MROPE_SECTION = (24, 20, 20)

_SPEAKER_ENCODER_LAYOUT: dict[str, Any] = {
    "mel_dim": 128,  # extract_speaker_embedding always computes 128 mel bins
    "enc_kernel_sizes": [5, 3, 3, 3, 1],
    "enc_dilations": [1, 2, 3, 4, 1],
    "enc_res2net_scale": 8,
    "sample_rate": SAMPLE_RATE,
}

# Released Base models (public config.json copies). The 0.6B keeps the 2048-wide text embedding and projects it
# to its 1024-wide talker; the 1.7B's code predictor is narrower than its talker (so it has a projection).
# Both released sizes share the code predictor and the speaker encoder's channels; they differ in the talker.
_RELEASED_CODE_PREDICTOR = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 5,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 65536,
    "rope_theta": 1000000,
}
_RELEASED_SPEAKER_ENCODER = {
    "enc_channels": [512, 512, 512, 512, 1536],
    "enc_attention_channels": 128,
    "enc_se_channels": 128,
}


def _released_talker(hidden_size: int, intermediate_size: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "text_hidden_size": 2048,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000,
    }


RELEASED_SHAPES: dict[str, dict[str, Any]] = {
    "1.7b": {
        "tts_model_size": "1b7",
        "talker": _released_talker(hidden_size=2048, intermediate_size=6144),
        "code_predictor": dict(_RELEASED_CODE_PREDICTOR),
        "speaker_encoder": dict(_RELEASED_SPEAKER_ENCODER),
    },
    "0.6b": {
        "tts_model_size": "0b6",
        "talker": _released_talker(hidden_size=1024, intermediate_size=3072),
        "code_predictor": dict(_RELEASED_CODE_PREDICTOR),
        "speaker_encoder": dict(_RELEASED_SPEAKER_ENCODER),
    },
}

# Tiny stand-ins with the same structure: text_hidden != hidden only for "0.6b"; the code predictor is as wide as
# the talker for "0.6b" and narrower for "1.7b". Vocabularies keep their real sizes so every real id exists.
_TINY_SPEAKER_ENCODER = {"enc_channels": [32, 32, 32, 32, 96], "enc_attention_channels": 16, "enc_se_channels": 16}
TINY_SHAPES: dict[str, dict[str, Any]] = {
    "1.7b": {
        "tts_model_size": "1b7",
        "talker": {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "text_hidden_size": 64,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000,
        },
        "code_predictor": {
            "hidden_size": 32,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 65536,
            "rope_theta": 1000000,
        },
        "speaker_encoder": dict(_TINY_SPEAKER_ENCODER),
    },
    "0.6b": {
        "tts_model_size": "0b6",
        "talker": {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "text_hidden_size": 96,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000,
        },
        "code_predictor": {
            "hidden_size": 64,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 65536,
            "rope_theta": 1000000,
        },
        "speaker_encoder": dict(_TINY_SPEAKER_ENCODER),
    },
}

# Speakers of the tiny CustomVoice stand-in, on rows of the band the released CustomVoice speakers use.
TINY_SPEAKERS: dict[str, int] = {"alva": 3061, "bertil": 3065}

# Sampling defaults of the released generation_config.json (qwen_tts reads it as a plain dict).
RELEASED_GENERATE_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    "max_new_tokens": 8192,
}


def shape_spec(shape: str, tiny: bool = False) -> dict[str, Any]:
    """A deep copy of the shape table entry (released or tiny) for "0.6b" or "1.7b"."""
    table = TINY_SHAPES if tiny else RELEASED_SHAPES
    if shape not in table:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return copy.deepcopy(table[shape])


def mrope_section(head_dim: int) -> list[int]:
    """The released [24, 20, 20] split scaled to `head_dim // 2` frequency pairs (time axis takes the rest)."""
    pairs = head_dim // 2
    side = pairs * RELEASED_MROPE_SECTION[1] // sum(RELEASED_MROPE_SECTION)
    if side < 1 or pairs - 2 * side < 1:
        raise ValueError(f"head_dim {head_dim} is too small for a 3-axis multimodal rope")
    return [pairs - 2 * side, side, side]


def talker_rope_scaling(head_dim: int) -> dict[str, Any]:
    """Talker `rope_scaling` as the released configs write it (qwen_tts indexes mrope_section and interleaved)."""
    return {
        "interleaved": True,
        "mrope_section": mrope_section(head_dim),
        "rope_type": "default",
        "type": "default",
    }


def code_predictor_config_dict(shape: str, tiny: bool = False) -> dict[str, Any]:
    """Kwargs of `Qwen3TTSTalkerCodePredictorConfig` for the shape."""
    spec = shape_spec(shape, tiny)["code_predictor"]
    return {
        **spec,
        "vocab_size": CODEBOOK_SIZE,
        "num_code_groups": NUM_CODE_GROUPS,  # the class default is 32
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "use_cache": True,
    }


def talker_config_dict(
    shape: str,
    tiny: bool = False,
    speakers: dict[str, int] | None = None,
    dialect_languages: bool = False,
) -> dict[str, Any]:
    """Kwargs of `Qwen3TTSTalkerConfig` for the shape, with the released special ids and language rows.

    `speakers` maps CustomVoice speaker names to codec rows (Base models have none). spk_id, spk_is_dialect and
    codec_language_id are always dicts: qwen_tts calls `.keys()` and indexes them.
    """
    spec = shape_spec(shape, tiny)["talker"]
    speakers = dict(speakers or {})
    languages = dict(LANGUAGE_IDS)
    if dialect_languages:
        languages.update(DIALECT_LANGUAGE_IDS)
    return {
        **spec,
        "vocab_size": CODEC_VOCAB_SIZE,
        "text_vocab_size": TEXT_VOCAB_SIZE,
        "num_code_groups": NUM_CODE_GROUPS,  # the class default is 32
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "position_id_per_seconds": 13,
        "rope_scaling": talker_rope_scaling(spec["head_dim"]),
        **CODEC_SPECIAL_IDS,
        "codec_language_id": languages,
        "spk_id": speakers,
        "spk_is_dialect": {name: False for name in speakers},
        "code_predictor_config": code_predictor_config_dict(shape, tiny),
    }


def speaker_encoder_config_dict(shape: str, tiny: bool = False) -> dict[str, Any]:
    """Kwargs of `Qwen3TTSSpeakerEncoderConfig`: only its constructor arguments (it takes no **kwargs)."""
    spec = shape_spec(shape, tiny)
    return {
        **_SPEAKER_ENCODER_LAYOUT,
        **spec["speaker_encoder"],
        "enc_dim": spec["talker"]["hidden_size"],  # the x-vector fills one talker input position
    }


def model_config_dict(
    shape: str,
    tiny: bool = False,
    model_type: str = "base",
    speakers: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Kwargs of `Qwen3TTSConfig` for a Base or CustomVoice model of the shape.

    CustomVoice models get `speakers` (default: the tiny stand-in speakers) and the dialect language rows, as the
    released CustomVoice configs do; Base models get no speakers.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {MODEL_TYPES}")
    custom = model_type == "custom_voice"
    if custom and speakers is None:
        speakers = dict(TINY_SPEAKERS)
    if not custom and speakers:
        raise ValueError("Base models carry no named speakers")
    spec = shape_spec(shape, tiny)
    return {
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": spec["tts_model_size"],
        "tts_model_type": model_type,
        **TEXT_SPECIAL_IDS,
        "assistant_token_id": ASSISTANT_TOKEN_ID,
        "talker_config": talker_config_dict(shape, tiny, speakers=speakers, dialect_languages=custom),
        "speaker_encoder_config": speaker_encoder_config_dict(shape, tiny),
    }
