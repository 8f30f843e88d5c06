"""Shared by the shard tests: the demo corpus, Swedish lines, build configs, writing clips and reading builds back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

from qwen_swe.data.build import BuildConfig
from qwen_swe.data.shard_format import INDEX_NAME, ShardReader
from qwen_swe.data.sources import SourceSpec
from qwen_swe.tiny import calibration_audio

DEMO = Path(__file__).resolve().parents[2] / "qwen_swe" / "demo_corpus"
TEXTS = ["Hej, välkommen till Göteborg!", "Vi åker till Malmö i morgon.", "Älgen stod stilla i skogen.",
         "Mormor bakade kanelbullar.", "Det regnade hela natten."]


def make_config(out: Path, model: Path, sources: list[SourceSpec], **settings) -> BuildConfig:
    defaults = dict(samples_per_shard=2, eval_speakers=1, progress=False)
    return BuildConfig(out=str(out), model=str(model), sources=sources, **{**defaults, **settings})


def read_split(folder: Path) -> dict[str, dict]:
    """key -> {meta, codes, xvector, ref_codes, split, shard} for every sample, read through the entry lists."""
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    samples = {}
    with ShardReader() as reader:
        for split, records in index["splits"].items():
            for record in records:
                entries = json.loads((folder / record["entries"]).read_text(encoding="utf-8"))
                for entry in entries:
                    sample = reader.read_sample(folder / record["path"], entry, index["xvector_dim"])
                    samples[entry["key"]] = {"meta": sample.meta, "codes": sample.codes, "xvector": sample.xvector,
                                             "ref_codes": sample.ref_codes, "split": split, "shard": record["path"]}
    return samples


def write_clip(path: Path, seconds: float = 1.3, rate: int = 24000, seed: int = 0, channels: int = 1,
               **kwargs) -> np.ndarray:
    wave = calibration_audio(seed, seconds * rate / 24000)  # speech-like; played at `rate`
    data = np.stack([wave, wave[::-1]], axis=1) if channels == 2 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate, **kwargs)
    return data


def swedish_layout(model_dir: Path):
    from qwen_swe.layout import SequenceLayout

    from ..helpers import load_swedish_model

    wrapper = load_swedish_model(model_dir)  # the same tokenizer files as the model the shards were built with
    return SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
