"""Tiny random-weight Qwen3-TTS models: real ids and shapes, deterministic builds, and they run through qwen_tts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_swe import model_shapes
from qwen_swe.model_shapes import (
    ASSISTANT_TOKEN_ID,
    IM_END_ID,
    IM_START_ID,
    NEWLINE_ID,
    TTS_BOS_ID,
    TTS_EOS_ID,
    TTS_PAD_ID,
)

ROLE_TEXT = "<|im_start|>assistant\nHej, så här låter svenska: åäö.<|im_end|>\n<|im_start|>assistant\n"
SWEDISH = "Sjuksköterskan äter smörgåsar på måndagar"
TARGET_TEXT = "Hej! Det här är svenska."
MAX_FRAMES = 30


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def _load_tts(folder: Path):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(folder), dtype=torch.float32)


def _assert_audio(wavs: list, sample_rate: int) -> None:
    assert sample_rate == 24000
    assert len(wavs) == 1
    wav = wavs[0]
    assert isinstance(wav, np.ndarray) and wav.dtype == np.float32 and wav.ndim == 1
    assert wav.size > 0 and np.all(np.isfinite(wav))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny matmuls run several times faster on one thread than split across cores (and CI has two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tts_06b(tiny_06b):
    return _load_tts(tiny_06b)


# ------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("fixture, shape", [("tiny_06b", "0.6b"), ("tiny_17b", "1.7b"), ("tiny_custom", "0.6b")])
def test_tiny_config_has_released_ids(fixture, shape, request):
    config = _config(request.getfixturevalue(fixture))
    talker = config["talker_config"]
    predictor = talker["code_predictor_config"]
    if shape == "0.6b":
        assert talker["text_hidden_size"] != talker["hidden_size"]
        assert predictor["hidden_size"] == talker["hidden_size"]  # like the real 0.6B: no projection
    else:
        assert talker["text_hidden_size"] == talker["hidden_size"]
        assert predictor["hidden_size"] != talker["hidden_size"]  # like the real 1.7B: small_to_mtp_projection
    assert talker["num_code_groups"] == predictor["num_code_groups"] == 16
    assert talker["vocab_size"] == 3072 and predictor["vocab_size"] == 2048
    assert talker["text_vocab_size"] == 151936
    for name, row in model_shapes.CODEC_SPECIAL_IDS.items():
        assert talker[name] == row
    assert talker["codec_pad_id"] == 2148 and talker["codec_eos_token_id"] == 2150
    for language, row in model_shapes.LANGUAGE_IDS.items():
        assert talker["codec_language_id"][language] == row
    assert isinstance(talker["spk_id"], dict) and isinstance(talker["spk_is_dialect"], dict)
    assert talker["rope_scaling"]["interleaved"] is True
    assert sum(talker["rope_scaling"]["mrope_section"]) == talker["head_dim"] // 2
    assert "model_type" not in config["speaker_encoder_config"]  # its constructor takes no extra kwargs
    assert config["speaker_encoder_config"]["enc_dim"] == talker["hidden_size"]
    assert (config["tts_pad_token_id"], config["tts_bos_token_id"], config["tts_eos_token_id"]) == (
        TTS_PAD_ID,
        TTS_BOS_ID,
        TTS_EOS_ID,
    )
    assert config["tts_model_size"] == {"0.6b": "0b6", "1.7b": "1b7"}[shape]
    assert config["tokenizer_type"] == "qwen3_tts_tokenizer_12hz"


def test_custom_voice_config_has_speakers(tiny_custom):
    config = _config(tiny_custom)
    assert config["tts_model_type"] == "custom_voice"
    talker = config["talker_config"]
    assert talker["spk_id"] == model_shapes.TINY_SPEAKERS
    assert talker["spk_is_dialect"] == {name: False for name in model_shapes.TINY_SPEAKERS}
    assert talker["codec_language_id"]["sichuan_dialect"] == 2062
    assert talker["codec_language_id"]["beijing_dialect"] == 2074


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tiny_06b, tmp_path):
    from qwen_swe.tiny import build_tiny_model

    # Under another thread count than the fixture may have had: float reductions must not leak into the bytes.
    before = torch.get_num_threads()
    torch.set_num_threads(2 if before == 1 else 1)
    try:
        again = build_tiny_model(tmp_path / "again", shape="0.6b", seed=0)
    finally:
        torch.set_num_threads(before)
    first, second = _files(tiny_06b), _files(again)
    assert sorted(first) == sorted(second)
    assert "model.safetensors" in first and "speech_tokenizer/model.safetensors" in first
    for name in first:
        assert first[name] == second[name], name


def test_other_seed_gives_other_weights(tiny_06b, tmp_path):
    from qwen_swe.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", shape="0.6b", seed=1)
    first, second = _files(tiny_06b), _files(other)
    assert first["model.safetensors"] != second["model.safetensors"]
    assert first["speech_tokenizer/model.safetensors"] != second["speech_tokenizer/model.safetensors"]
    assert first["config.json"] == second["config.json"]


# ------------------------------------------------------------------------------------------- processor


def test_processor_tokenizes_like_inference(tts_06b):
    """Through the processor exactly as qwen_tts loads it (AutoProcessor, fix_mistral_regex=True)."""
    processor = tts_06b.processor
    ids = processor(text=ROLE_TEXT)["input_ids"][0]
    assert ids[:3] == [IM_START_ID, ASSISTANT_TOKEN_ID, NEWLINE_ID]
    assert ids[-5:] == [IM_END_ID, NEWLINE_ID, IM_START_ID, ASSISTANT_TOKEN_ID, NEWLINE_ID]
    assert processor.decode(ids) == ROLE_TEXT
    pieces = [processor.decode([i]) for i in ids[3:-5]]
    assert " svenska" in pieces and " så" in pieces  # multi-byte letters stay inside word pieces

    swedish_ids = processor(text=SWEDISH)["input_ids"][0]
    assert len(swedish_ids) < len(SWEDISH.encode("utf-8"))
    assert processor.decode(swedish_ids) == SWEDISH


# ------------------------------------------------------------------------------------------- loading, inference


@pytest.mark.parametrize("fixture", ["tiny_06b", "tiny_17b", "tiny_custom"])
def test_weights_load_without_missing_or_unexpected_keys(fixture, request):
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration
    from transformers import PreTrainedModel

    # The qwen_tts override would pass output_loading_info on to the codec loader; use the plain loader.
    model, info = PreTrainedModel.from_pretrained.__func__(
        Qwen3TTSForConditionalGeneration, str(request.getfixturevalue(fixture)), output_loading_info=True
    )
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert model.dtype == torch.float32
    talker = model.talker
    assert talker.model.text_embedding.num_embeddings == 151936
    assert talker.model.codec_embedding.num_embeddings == 3072
    assert len(talker.code_predictor.model.codec_embedding) == 15
    assert (model.speaker_encoder is None) == (fixture == "tiny_custom")


def test_voice_clone_icl_and_xvector_06b(tts_06b, speechlike_wav):
    assert tts_06b.model.talker.config.text_hidden_size != tts_06b.model.talker.config.hidden_size
    torch.manual_seed(0)
    wavs, sr = tts_06b.generate_voice_clone(
        text=TARGET_TEXT,
        language="german",
        ref_audio=speechlike_wav,
        ref_text="Det här är referensen.",
        max_new_tokens=MAX_FRAMES,
    )
    _assert_audio(wavs, sr)
    wavs, sr = tts_06b.generate_voice_clone(
        text=TARGET_TEXT, language="auto", ref_audio=speechlike_wav, x_vector_only_mode=True, max_new_tokens=MAX_FRAMES
    )
    _assert_audio(wavs, sr)
    assert wavs[0].size <= MAX_FRAMES * 1920


def test_voice_clone_17b(tiny_17b, speechlike_wav):
    tts = _load_tts(tiny_17b)
    assert tts.model.talker.config.text_hidden_size == tts.model.talker.config.hidden_size
    torch.manual_seed(0)
    wavs, sr = tts.generate_voice_clone(
        text=TARGET_TEXT,
        language="auto",
        ref_audio=speechlike_wav,
        ref_text="Det här är referensen.",
        max_new_tokens=MAX_FRAMES,
    )
    _assert_audio(wavs, sr)


def test_custom_voice(tiny_custom):
    tts = _load_tts(tiny_custom)
    assert sorted(tts.get_supported_speakers()) == sorted(model_shapes.TINY_SPEAKERS)
    torch.manual_seed(0)
    wavs, sr = tts.generate_custom_voice(text=TARGET_TEXT, speaker="alva", language="auto", max_new_tokens=MAX_FRAMES)
    _assert_audio(wavs, sr)


def test_codec_encodes_varied_codes(tiny_06b, speechlike_wav):
    from qwen_tts import Qwen3TTSTokenizer

    codec = Qwen3TTSTokenizer.from_pretrained(str(tiny_06b / "speech_tokenizer"))
    wav, sr = speechlike_wav
    codes = codec.encode(wav, sr=sr).audio_codes[0]
    seconds = wav.size / sr
    assert codes.shape == (int(np.ceil(seconds * 12.5)), 16)
    assert not codes.dtype.is_floating_point
    assert int(codes.min()) >= 0 and int(codes.max()) <= 2047
    assert codes.unique().numel() > 1
    distinct_per_codebook = [codes[:, q].unique().numel() for q in range(16)]
    assert min(distinct_per_codebook) > 1, distinct_per_codebook

    decoded, out_sr = codec.decode({"audio_codes": codes})
    assert out_sr == 24000 and decoded[0].shape == (codes.shape[0] * 1920,)
    assert 0.0 < float(np.sqrt(np.mean(decoded[0] ** 2))) < 0.9  # audible, not clamped flat


def test_bfloat16_storage_loads_as_float32(tmp_path):
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration
    from safetensors import safe_open
    from transformers import PreTrainedModel

    from qwen_swe.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "bf16", shape="1.7b", weights_dtype="bfloat16")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        key = "talker.model.text_embedding.weight"
        assert handle.get_slice(key).get_dtype() == "BF16"
    model, info = PreTrainedModel.from_pretrained.__func__(
        Qwen3TTSForConditionalGeneration, str(folder), output_loading_info=True
    )
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert model.dtype == torch.float32
