"""Quality-test fixtures: the tiny 0.6B-shaped model with Swedish registered."""

from __future__ import annotations

import pytest

from ..helpers import load_swedish_model


@pytest.fixture(scope="module")
def swedish_wrapper(tiny_06b):
    """The tiny 0.6B-shaped Base model with Swedish registered, loaded once (shared with other test files)."""
    return load_swedish_model(tiny_06b)
