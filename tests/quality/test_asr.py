"""quality/asr.py: Whisper is told the language and to transcribe (random-weight tiny Whisper, real pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    """A random-weight multilingual Whisper with a byte-level vocabulary and the special tokens Whisper's generate()
    needs to be told a language and a task (<|sv|>, <|transcribe|>, ...): garbage transcripts, real pipeline."""
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    folder = tmp_path_factory.mktemp("tiny-whisper")
    (folder / "vocab.json").write_text(json.dumps({ch: i for i, ch in enumerate(bytes_to_unicode().values())}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=end,
                                 bos_token=end, eos_token=end, pad_token=end)
    specials = ["<|startoftranscript|>", "<|en|>", "<|sv|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in [end] + specials}
    extractor = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           pad_token_id=ids[end], bos_token_id=ids[end], eos_token_id=ids[end],
                           decoder_start_token_id=ids["<|startoftranscript|>"])
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.lang_to_id = {token: ids[token] for token in ("<|en|>", "<|sv|>")}
    generation.task_to_id = {"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]}
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual = True
    generation.begin_suppress_tokens, generation.suppress_tokens = [ids[end]], []
    generation._from_model_config = False  # otherwise loading rebuilds it from config.json and drops the above
    model.save_pretrained(folder)
    return folder


def test_whisper_is_told_swedish_and_to_transcribe(tiny_whisper):
    """Whisper transcribes in the language it is given, so it neither guesses the language nor translates; a
    language Whisper does not know is an error, which shows the argument reaches generate()."""
    from qwen_swe.quality.asr import load_asr, transcribe

    asr = load_asr(tiny_whisper)
    calls = []
    generate = asr.model.generate

    def recording_generate(*args, **kwargs):
        calls.append(kwargs)
        return generate(*args, **kwargs)

    asr.model.generate = recording_generate
    clip = (np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 0.1, 24000)
    texts = transcribe(asr, [clip], language="swedish")
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert calls[0]["language"] == "swedish" and calls[0]["task"] == "transcribe"
    with pytest.raises(ValueError, match="klingon"):
        transcribe(asr, [clip], language="klingon")
