"""Subsequence dynamic time warping with a bounded slope, in numba.

`align_subsequence(query, target)` finds where in `target` (a window of the recording) the whole of `query` (the
synthesised text) fits best: open begin and open end in the target, the query used from first to last frame. The
step pattern is Sakoe-Chiba's symmetric P=1 (steps (1,1), (1,2), (2,1) with weights 2, 3, 3), so the local speed of
the recording against the synthesis stays within 1/2..2: no degenerate path can squeeze a sentence into one frame.
Silence is removed from both sequences before they get here (see align.py), which is what lets pauses of any
length pass through a slope-bounded path.

Cost is O(len(query) x len(target)) time and O(len(query) x len(target)) bytes (one step code per cell); the aligner
keeps both small by aligning a paragraph at a time inside a window that follows the previous paragraph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba comes with librosa
    numba = None


@dataclass
class Match:
    target_of_query: np.ndarray  # int32 [len(query)]: the target frame each query frame is matched with
    cost_of_query: np.ndarray  # float32 [len(query)]: that cell's distance
    start: int  # first target frame of the match
    end: int  # last target frame of the match
    cost: float  # accumulated weighted distance / (len(query) + end - start + 1)


def align_subsequence(query: np.ndarray, target: np.ndarray) -> Match | None:
    """Best open-begin/open-end match of all of `query` inside `target`; None if none fits the slope bounds."""
    query = np.ascontiguousarray(query, dtype=np.float32)
    target = np.ascontiguousarray(target, dtype=np.float32)
    n, m = len(query), len(target)
    if n == 0 or m < (n + 1) // 2:
        return None
    steps, last, starts = _forward(query, target)
    normaliser = n + np.arange(m) - starts + 1
    with np.errstate(invalid="ignore"):
        scores = np.where(np.isfinite(last), last / normaliser, np.inf)
    end = int(np.argmin(scores))
    if not np.isfinite(scores[end]):
        return None
    mapping, costs = _backtrack(steps, query, target, end)
    return Match(target_of_query=mapping, cost_of_query=costs, start=int(starts[end]), end=end,
                 cost=float(scores[end]))


def _distance(query, target, i, j):
    total = 0.0
    for k in range(query.shape[1]):
        difference = query[i, k] - target[j, k]
        total += difference * difference
    return np.sqrt(total)


def _forward_impl(query, target):
    n, m = query.shape[0], target.shape[0]
    infinity = np.inf
    steps = np.zeros((n, m), np.int8)
    # two rows back are needed for the (2,1) step
    previous2 = np.full(m, infinity)
    previous = np.full(m, infinity)
    current = np.full(m, infinity)
    start2 = np.zeros(m, np.int64)
    start1 = np.zeros(m, np.int64)
    start0 = np.zeros(m, np.int64)
    for j in range(m):  # open begin: any target frame can hold the first query frame
        previous[j] = 2.0 * _distance(query, target, 0, j)
        start1[j] = j
    for i in range(1, n):
        for j in range(m):
            here = _distance(query, target, i, j)
            best = infinity
            choice = 0
            begin = 0
            if j >= 1 and previous[j - 1] < infinity:  # (1,1)
                best = previous[j - 1] + 2.0 * here
                begin = start1[j - 1]
            if j >= 2 and previous[j - 2] < infinity:  # (1,2): through (i, j-1)
                value = previous[j - 2] + 2.0 * _distance(query, target, i, j - 1) + here
                if value < best:
                    best, choice, begin = value, 1, start1[j - 2]
            if i >= 2 and j >= 1 and previous2[j - 1] < infinity:  # (2,1): through (i-1, j)
                value = previous2[j - 1] + 2.0 * _distance(query, target, i - 1, j) + here
                if value < best:
                    best, choice, begin = value, 2, start2[j - 1]
            current[j] = best
            steps[i, j] = choice
            start0[j] = begin
        previous2, previous, current = previous, current, previous2
        start2, start1, start0 = start1, start0, start2
        for j in range(m):
            current[j] = infinity
    return steps, previous.copy(), start1.copy()


def _backtrack_impl(steps, query, target, end):
    n = query.shape[0]
    mapping = np.zeros(n, np.int32)
    costs = np.zeros(n, np.float32)
    i, j = n - 1, end
    while i >= 0:
        mapping[i] = j
        costs[i] = _distance(query, target, i, j)
        if i == 0:
            break
        choice = steps[i, j]
        if choice == 0:
            i, j = i - 1, j - 1
        elif choice == 1:
            i, j = i - 1, j - 2
        else:
            mapping[i - 1] = j
            costs[i - 1] = _distance(query, target, i - 1, j)
            i, j = i - 2, j - 1
            if i < 0:
                break
    return mapping, costs


if numba is not None:
    _distance = numba.njit(cache=True, fastmath=True)(_distance)
    _forward = numba.njit(cache=True, fastmath=True)(_forward_impl)
    _backtrack = numba.njit(cache=True)(_backtrack_impl)
else:  # pragma: no cover
    _forward, _backtrack = _forward_impl, _backtrack_impl
