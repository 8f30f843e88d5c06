"""ingest/dtw.py: the slope-bounded subsequence DTW finds a stretched copy of the query inside a longer target."""

from __future__ import annotations

import numpy as np

from qwen_swe.ingest.dtw import align_subsequence


def test_a_stretched_copy_is_found_where_it_was_put():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(120, 8)).astype(np.float32)
    # the copy is played 1.5 times slower (every other frame twice), between two stretches of other frames
    stretched_index = np.repeat(np.arange(120), np.where(np.arange(120) % 2 == 0, 2, 1))
    copy = query[stretched_index] + 0.05 * rng.normal(size=(len(stretched_index), 8)).astype(np.float32)
    target = np.concatenate([rng.normal(size=(70, 8)), copy, rng.normal(size=(50, 8))]).astype(np.float32)
    match = align_subsequence(query, target)
    assert match is not None
    assert abs(match.start - 70) <= 1 and match.end == 70 + len(copy) - 1
    truth = 70 + np.array([np.flatnonzero(stretched_index == i)[0] for i in range(120)])
    assert np.abs(match.target_of_query - truth).max() <= 1
    assert np.all(np.diff(match.target_of_query) >= 0)
    assert match.cost < 0.5 < align_subsequence(query[::-1].copy(), target).cost


def test_no_match_when_the_target_is_too_short_for_the_slope():
    query = np.zeros((100, 8), np.float32)
    assert align_subsequence(query, np.zeros((40, 8), np.float32)) is None
    assert align_subsequence(query, np.zeros((60, 8), np.float32)) is not None
