"""Quality-test fixtures: the tiny 0.6B-shaped model with Swedish registered, and a tiny random ASR model."""

from __future__ import annotations

import pytest

from ..helpers import load_swedish_model


@pytest.fixture(scope="module")
def swedish_wrapper(tiny_06b):
    """The tiny 0.6B-shaped Base model with Swedish registered, loaded once (shared with other test files)."""
    return load_swedish_model(tiny_06b)


@pytest.fixture(scope="module")
def tiny_asr(tmp_path_factory):
    """A random-weight wav2vec2 CTC model with a Swedish letter vocabulary: garbage transcripts, real pipeline."""
    import json

    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    folder = tmp_path_factory.mktemp("tiny-asr")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{ch: i + 3 for i, ch in enumerate("abcdefghijklmnopqrstuvwxyzåäö")}}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
                            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder
