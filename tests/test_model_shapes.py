"""model_shapes.py: light at import, and the released shapes build real Qwen3-TTS configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qwen_swe import model_shapes


def test_model_shapes_imports_no_torch():
    code = "import sys, qwen_swe.model_shapes; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("shape", model_shapes.SHAPES)
def test_released_shape_config_builds(shape):
    from qwen_tts.core.models import Qwen3TTSConfig

    config = Qwen3TTSConfig(**model_shapes.model_config_dict(shape, tiny=False))
    talker = config.talker_config
    assert talker.rope_scaling["mrope_section"] == [24, 20, 20] and talker.rope_scaling["interleaved"] is True
    assert talker.head_dim == 128 and talker.num_hidden_layers == 28
    assert (talker.hidden_size, talker.text_hidden_size) == {"0.6b": (1024, 2048), "1.7b": (2048, 2048)}[shape]
    assert talker.code_predictor_config.hidden_size == 1024
    assert config.speaker_encoder_config.enc_dim == talker.hidden_size
    assert config.tts_model_size == {"0.6b": "0b6", "1.7b": "1b7"}[shape]
