"""Shard-test fixtures: the tiny model's encoder, a demo-corpus subset and its reference build (once per file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_swe.data.build import build_shards
from qwen_swe.data.encode import Encoder
from qwen_swe.data.sources import SourceSpec

from .building import DEMO, make_config


@pytest.fixture(scope="module")
def encoder(tiny_06b):
    """The tiny model's codec and speaker encoder, loaded once; torch on one thread (2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Encoder(tiny_06b, device="cpu", precision="auto")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_subset(tmp_path_factory) -> Path:
    """8 demo utterances, 2 of each of the 4 speakers, as a manifest next to the demo audio."""
    lines = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = [entry for speaker in ("spk0", "spk1", "spk2", "spk3")
              for entry in [e for e in lines if e["speaker"] == speaker][:2]]
    folder = tmp_path_factory.mktemp("demo-subset")
    for entry in chosen:
        entry["audio"] = str(DEMO / entry["audio"])
        entry["domain"] = "demo"  # an extra field: kept as metadata
    manifest = folder / "subset.jsonl"
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in chosen), encoding="utf-8")
    return manifest


@pytest.fixture(scope="module")
def reference_build(tmp_path_factory, tiny_06b, encoder, demo_subset) -> Path:
    """The demo subset built uninterrupted with one worker: the build the others are compared with."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    build_shards(make_config(out, tiny_06b, [SourceSpec("manifest", str(demo_subset))]), encoder=encoder,
                 say=lambda _: None)
    return out


@pytest.fixture(scope="module")
def layout(tiny_06b):
    """The sequence layout of the tiny model with Swedish registered (what the stream lays samples out with)."""
    from qwen_swe.layout import SequenceLayout

    from ..helpers import load_swedish_model

    wrapper = load_swedish_model(tiny_06b)
    return SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
