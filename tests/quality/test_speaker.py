"""quality/speaker.py: cosine similarity, the model's own speaker encoder and an x-vector verifier folder."""

from __future__ import annotations

import pytest

from qwen_swe.quality.speaker import cosine_similarity


def test_cosine_similarity_values():
    assert cosine_similarity([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine_similarity([1.0, 0.0], [0.0, 3.0]) == pytest.approx(0.0)
    assert cosine_similarity([1.0, -1.0], [-1.0, 1.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in size"):
        cosine_similarity([1.0], [1.0, 2.0])


def test_speaker_similarity_of_a_voice_with_itself_is_one_and_with_another_voice_lower(swedish_wrapper):
    from qwen_swe.quality.speaker import load_speaker_embedder, speaker_similarity
    from qwen_swe.tiny import calibration_audio

    embedder = load_speaker_embedder(swedish_wrapper)  # the model's own speaker encoder
    voice = calibration_audio(seed=123, seconds=2.0)
    # another voice: other prosody, and every second sample kept, which doubles pitch and formants
    other = calibration_audio(seed=5, seconds=4.0)[::2]
    same = speaker_similarity(embedder, (voice, 24000), (voice.copy(), 24000))
    different = speaker_similarity(embedder, (voice, 24000), (other, 24000))
    assert same == pytest.approx(1.0, abs=1e-6)
    assert different < same - 1e-3


def test_speaker_model_folder_can_be_an_xvector_verifier(tmp_path):
    """--speaker-model: a transformers AudioXVector folder (random tiny WavLM here) instead of the model's encoder."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    from qwen_swe.quality.speaker import XVectorEmbedder, load_speaker_embedder, speaker_similarity
    from qwen_swe.tiny import calibration_audio

    torch.manual_seed(0)
    WavLMForXVector(WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                                num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1),
                                tdnn_dilation=(1, 1), xvector_output_dim=8)).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0).save_pretrained(tmp_path)
    embedder = load_speaker_embedder(tmp_path)
    assert isinstance(embedder, XVectorEmbedder)
    voice = calibration_audio(seed=123, seconds=2.0)
    assert speaker_similarity(embedder, (voice, 24000), (voice.copy(), 24000)) == pytest.approx(1.0, abs=1e-6)
    assert speaker_similarity(embedder, (voice, 24000), (calibration_audio(seed=5, seconds=4.0)[::2], 24000)) < 0.999
    with pytest.raises(ValueError, match="no config.json"):
        load_speaker_embedder(tmp_path / "missing")
