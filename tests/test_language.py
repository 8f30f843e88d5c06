"""Swedish as a codec language row: provably free, initialised as asked, recorded, and usable by generate()."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from qwen_swe.language import add_language, add_language_to_folder, taken_rows
from qwen_swe.modeling import load_model


@pytest.fixture()
def model_copy(tiny_06b, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_06b, out)
    return out


def test_swedish_gets_a_free_row_initialised_to_the_language_mean(model_copy):
    before = load_model(model_copy).model
    config = before.config.talker_config
    taken = taken_rows(config)
    languages = {k: v for k, v in config.codec_language_id.items() if "dialect" not in k}
    record = add_language_to_folder(model_copy, "swedish")
    assert record.row not in taken and 2048 <= record.row < config.vocab_size

    saved = json.loads((model_copy / "config.json").read_text())
    assert saved["talker_config"]["codec_language_id"]["swedish"] == record.row
    assert saved["qwen_swe"]["languages"]["swedish"]["init"] == "mean"

    wrapper = load_model(model_copy)
    rows = wrapper.model.talker.get_input_embeddings().weight
    expected = before.talker.get_input_embeddings().weight[sorted(languages.values())].mean(0)
    assert torch.allclose(rows[record.row], expected, atol=1e-6)
    # untouched elsewhere
    others = [r for r in range(rows.shape[0]) if r != record.row]
    assert torch.equal(rows[others], before.talker.get_input_embeddings().weight[others])
    assert "swedish" in wrapper.get_supported_languages()
    wavs, rate = wrapper.generate_voice_clone(
        text="Hej, hur mår du?", language="swedish", ref_audio=(np.random.default_rng(0).normal(0, 0.1, 24000)
                                                                 .astype(np.float32), 24000),
        x_vector_only_mode=True, max_new_tokens=6,
    )
    assert rate == 24000 and len(wavs[0]) > 0


def test_copy_init_and_refusals(model_copy):
    model = load_model(model_copy).model
    config = model.config.talker_config
    german = config.codec_language_id["german"]
    record = add_language(model, "swedish", init="copy:german")
    rows = model.talker.get_input_embeddings().weight
    assert torch.equal(rows[record.row], rows[german])
    assert "swedish" in model.get_supported_languages()
    with pytest.raises(ValueError, match="already registered"):
        add_language(model, "swedish")
    with pytest.raises(ValueError, match="already taken by language german"):
        add_language(model, "norwegian", row=german)
    with pytest.raises(ValueError, match="is a code"):
        add_language(model, "norwegian", row=17)
    with pytest.raises(ValueError, match="outside the codec vocabulary"):
        add_language(model, "norwegian", row=config.vocab_size)
    with pytest.raises(ValueError, match="already taken by codec_eos_token_id"):
        add_language(model, "norwegian", row=config.codec_eos_token_id)
    with pytest.raises(ValueError, match="cannot copy language 'klingon'"):
        add_language(model, "norwegian", init="copy:klingon")
