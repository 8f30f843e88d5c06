"""Shared fixtures: tiny random-weight Qwen3-TTS model folders, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from qwen_swe.model_shapes import SAMPLE_RATE

TinyBuilder = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> TinyBuilder:
    """`tiny_model_dir(shape="0.6b", seed=0, model_type="base")` -> folder, built once per argument set.

    The folders are shared by every test in the session: treat them as read-only (copy one before changing it).
    """
    from qwen_swe.tiny import build_tiny_model

    built: dict[tuple[str, int, str], Path] = {}

    def build(shape: str = "0.6b", seed: int = 0, model_type: str = "base") -> Path:
        key = (shape, seed, model_type)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{model_type}-{shape.replace('.', '')}-seed{seed}")
            built[key] = build_tiny_model(folder, shape=shape, seed=seed, model_type=model_type)
        return built[key]

    return build


@pytest.fixture(scope="session")
def tiny_06b(tiny_model_dir: TinyBuilder) -> Path:
    """Tiny Base model shaped like the 0.6B: text_hidden_size (96) != hidden_size (64)."""
    return tiny_model_dir("0.6b")


@pytest.fixture(scope="session")
def tiny_17b(tiny_model_dir: TinyBuilder) -> Path:
    """Tiny Base model shaped like the 1.7B: text_hidden_size == hidden_size (64)."""
    return tiny_model_dir("1.7b")


@pytest.fixture(scope="session")
def tiny_custom(tiny_model_dir: TinyBuilder) -> Path:
    """Tiny CustomVoice model (0.6B shape) with speakers "alva" and "bertil" and no speaker encoder."""
    return tiny_model_dir("0.6b", model_type="custom_voice")


@pytest.fixture(scope="session")
def speechlike_wav() -> tuple[np.ndarray, int]:
    """Two seconds of deterministic speech-like audio at 24 kHz, as (waveform, sample_rate)."""
    from qwen_swe.tiny import calibration_audio

    return calibration_audio(seed=123, seconds=2.0), SAMPLE_RATE


# Files whose tests launch training processes, longest first, by path under tests/. `make test` runs the suite on two
# pytest workers, one file per worker at a time (`--dist loadfile`), in collection order: starting the long files first
# keeps one worker from being left with a long file at the end while the other sits idle.
LONGEST_FIRST = ("e2e/test_trainer.py", "e2e/test_accumulation.py", "e2e/test_multinode.py",
                 "e2e/test_trainer_health.py", "e2e/test_tune_launched.py", "e2e/test_stopping.py", "tune/test_study.py",
                 "test_export.py", "e2e/test_mixture.py", "ingest/test_pipeline.py", "test_parity.py")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = Path(os.path.relpath(item.path.resolve(), TESTS)).as_posix()
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: collection order within and after the listed files
