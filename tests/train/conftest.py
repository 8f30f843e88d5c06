"""Fixtures for trainers built in the test process."""

from __future__ import annotations

import pytest


def fresh_accelerate_state_reset() -> None:
    """Trainers in one process share accelerate's singleton state: each starts from a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerate_state():
    fresh_accelerate_state_reset()
    yield
    fresh_accelerate_state_reset()
