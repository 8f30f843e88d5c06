"""data/encode.py: batched codec encoding equals one-by-one, the batch planner, device and precision names."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_swe.data.encode import pad_to_frames, plan_batches
from qwen_swe.tiny import calibration_audio


def test_batched_codes_equal_one_by_one(encoder):
    wavs = [calibration_audio(seed, seconds) for seed, seconds in enumerate((1.07, 2.31, 1.5, 0.96, 1.92))]
    batched = encoder.encode_codes(wavs)
    for wav, codes in zip(wavs, batched):
        alone = encoder.tokenizer.encode(pad_to_frames(wav, 1920), sr=24000).audio_codes[0].numpy()
        assert codes.dtype == np.int16 and codes.shape == (-(-len(wav) // 1920), 16)
        assert np.array_equal(codes, alone)
    # the budgeted batch planner changes nothing either
    assert all(np.array_equal(a, b) for a, b in zip(encoder.encode_batches(wavs, max_batch_seconds=3.0), batched))
    assert plan_batches([10, 30, 20, 30], 60) == [[1, 3], [2, 0]]


def test_device_names():
    from qwen_swe.data.encode import resolve_device, resolve_precision

    assert resolve_device("cpu") == "cpu"
    assert resolve_precision("auto", "cpu") == "float64" and resolve_precision("auto", "cuda:1") == "float32"
    with pytest.raises(ValueError, match="choose cpu, cuda or rocm"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU visible"):
            resolve_device("rocm")


def test_the_encoder_loads_only_the_codec_and_speaker_encoder_and_computes_what_the_full_model_does(encoder,
                                                                                                      tiny_06b):
    """Shard builds need the codec and the speaker encoder, not the talker (11 GB of the 1.7B in fp32)."""
    import torch

    from qwen_swe.modeling import load_model

    full = load_model(tiny_06b).model.eval()
    wav = calibration_audio(3, 1.7)
    with torch.inference_mode():
        expected = full.extract_speaker_embedding(wav, 24000).float().numpy()
    np.testing.assert_allclose(encoder.xvector(wav), expected, rtol=1e-6, atol=1e-7)
    full.speech_tokenizer.model.double()
    reference = full.speech_tokenizer.encode([pad_to_frames(wav, encoder.frame_samples)], sr=24000).audio_codes[0]
    assert np.array_equal(encoder.encode_codes([wav])[0], reference.numpy().astype(np.int16))
    loaded = sum(p.numel() for module in (encoder.speaker_encoder, encoder.tokenizer.model) for p in module.parameters())
    everything = sum(p.numel() for p in full.parameters()) + sum(p.numel() for p in full.speech_tokenizer.model.parameters())
    talker = sum(p.numel() for p in full.talker.parameters())
    assert loaded == everything - talker  # all but the talker
    assert not any(isinstance(value, torch.nn.Module) and hasattr(value, "talker") for value in vars(encoder).values())
