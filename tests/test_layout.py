"""The whole-array layout and collate equal the position-by-position reference exactly, on every layout, language
and kind of speaker conditioning; stored prompt ids are used only under the tokenizer that made them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qwen_swe.layout import LAYOUTS, Sample, SequenceLayout, prompt_ids, target_prompt

from .helpers import SWEDISH_TEXTS, load_swedish_model, random_samples
from .layout_reference import reference_build, reference_collate

LAID_OUT_TENSORS = ("text_ids", "codec_ids", "frame_ids", "frames", "labels", "sub_positions", "sub_frames")


@pytest.fixture(scope="module")
def layout(tiny_06b):
    wrapper = load_swedish_model(tiny_06b)
    return SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)


def varied_samples(layout: SequenceLayout) -> list[Sample]:
    """Random samples plus the edge cases of the text/frame overlap: text longer than the frames (trailing text is
    cut), one frame, a reference longer than the prompt text, a one-frame reference; x-vector and no speaker."""
    generator = torch.Generator().manual_seed(7)
    samples = random_samples(_Model(layout), 8, seed=3)
    long_text = " ".join(SWEDISH_TEXTS)
    samples += [
        dataclasses.replace(samples[0], key="long-text", text=long_text, codes=samples[0].codes[:2]),
        dataclasses.replace(samples[1], key="one-frame", codes=samples[1].codes[:1], ref_codes=samples[1].ref_codes[:1]),
        dataclasses.replace(samples[2], key="long-reference", ref_text="Ja.",
                            ref_codes=torch.randint(0, 2048, (40, 16), generator=generator)),
        dataclasses.replace(samples[4], key="no-speaker", xvector=None, language="auto"),
        dataclasses.replace(samples[5], key="int16-codes", codes=samples[5].codes.short(), language="swedish"),
    ]
    return samples


class _Model:
    """The slice of a model `random_samples` reads (the talker's hidden size)."""

    def __init__(self, layout: SequenceLayout):
        talker = type("Talker", (), {"hidden_size": layout.hidden_size})
        self.config = type("Config", (), {"talker_config": talker})


def assert_same_laid_out(ours, theirs):
    """Our laid-out sample (numpy arrays) against another (the reference's tensors, or ours): same shapes and values;
    int64 indices (the frames keep the codes' integer type until collate widens them)."""
    for name in LAID_OUT_TENSORS:
        a, b = getattr(ours, name), np.asarray(getattr(theirs, name))
        assert a.shape == b.shape and np.array_equal(a, b), (ours.key, name)
        assert a.dtype == b.dtype or (name == "frames" and a.dtype.kind == "i"), (ours.key, name, a.dtype)
    assert ours.speaker_position == theirs.speaker_position
    assert (ours.xvector is None) == (theirs.xvector is None)
    if ours.xvector is not None:
        assert ours.xvector.dtype == np.float32 and np.array_equal(ours.xvector, np.asarray(theirs.xvector))


def assert_same_batch(ours, theirs):
    for name, value in vars(theirs).items():
        mine = getattr(ours, name)
        if isinstance(value, torch.Tensor):
            assert mine.dtype == value.dtype and mine.shape == value.shape and torch.equal(mine, value), name
        else:
            assert mine == value, name


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_equals_the_position_by_position_reference(layout, name):
    samples = varied_samples(layout)
    ours = [layout.build(s, name) for s in samples]
    theirs = [reference_build(layout, s, name) for s in samples]
    for a, b in zip(ours, theirs):
        assert_same_laid_out(a, b)
    assert_same_batch(layout.collate(ours), reference_collate(theirs, layout.tts_pad, layout.hidden_size))
    assert_same_batch(layout.collate(ours[3:5]), reference_collate(theirs[3:5], layout.tts_pad, layout.hidden_size))


def test_named_speakers_equal_the_reference(tiny_custom, layout):
    from qwen_swe.modeling import load_model_config

    custom = SequenceLayout(load_model_config(tiny_custom), layout.tokenizer)  # the same Qwen BPE tokenizer
    samples = [dataclasses.replace(s, xvector=None, speaker=speaker, language=language)
               for s, speaker, language in zip(random_samples(_Model(custom), 3, seed=5),
                                               sorted(custom.speaker_ids) * 2, ("auto", "chinese", "german"))]
    for name in LAYOUTS:
        ours = [custom.build(s, name) for s in samples]
        theirs = [reference_build(custom, s, name) for s in samples]
        for a, b in zip(ours, theirs):
            assert_same_laid_out(a, b)
            assert a.speaker_position == -1 and set(a.codec_ids.tolist()) & set(custom.speaker_ids.values())


def test_stored_prompt_ids_are_used_only_under_the_same_tokenizer(layout):
    sample = random_samples(_Model(layout), 1, seed=11)[0]
    stored = prompt_ids(layout.tokenizer, target_prompt(sample.text))
    fingerprint = layout.tokenizer_fingerprint
    same = dataclasses.replace(sample, prompt_ids=stored, tokenizer_fingerprint=fingerprint)
    assert_same_laid_out(layout.build(same, "streaming"), layout.build(sample, "streaming"))
    # ids that differ from the text's tokenization show which source was used
    marked = stored[:3] + [42] * (len(stored) - 8) + stored[-5:]
    used = layout.build(dataclasses.replace(same, prompt_ids=marked), "non_streaming")
    assert 42 in used.text_ids.tolist()
    ignored = layout.build(dataclasses.replace(same, prompt_ids=marked, tokenizer_fingerprint="another"),
                           "non_streaming")
    assert_same_laid_out(ignored, layout.build(sample, "non_streaming"))


def test_a_batch_pickles_by_value_and_comes_back_equal(layout):
    import pickle

    samples = varied_samples(layout)
    batch = layout.collate([layout.build(s, "icl") for s in samples])
    batch.extra["layout"] = "icl"
    copy = pickle.loads(pickle.dumps(batch))
    assert_same_batch(copy, batch)
    assert copy.text_ids.data_ptr() != batch.text_ids.data_ptr()
