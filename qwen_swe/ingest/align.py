"""Offline alignment of a transcript to its recording: espeak-ng renders the text, DTW on MFCCs maps it onto the audio.

This is the method aeneas uses (RixVox was aligned with it), made near-linear for hours of audio:

1. Every sentence is rendered by espeak-ng (espeak.py), which also reports when each word starts in the rendering.
2. Both the rendering and the recording become 8 standardised MFCCs at 50 frames a second (features.py), and both
   lose their non-speech frames (pauses.py: level and VAD must agree on speech). With pauses gone, a slope-bounded
   DTW can follow a reader who pauses ten times longer than espeak-ng does; with music and silence gone, chapter
   breaks cost nothing.
3. Sentences are aligned a block at a time (a paragraph, with short paragraphs such as headings joined to the next,
   and long ones split to about BLOCK_SECONDS of synthetic speech) by subsequence DTW (dtw.py) inside a window of
   the recording that starts where the previous block ended and reaches 2.5 times the block's length plus
   WINDOW_SLACK_SECONDS further. Each block costs O(block x window), so the whole recording costs O(length): no
   matrix over the whole book ever exists.
4. A sentence whose frames match badly (mean distance above `max_cost_ratio` times the recording's median so far)
   is text the audio does not hold. Such text bends the whole path, so its neighbours look bad too: the block is
   aligned again leaving out each paragraph in turn (each sentence, in a one-paragraph block), the leaving-out after
   which the most of the rest matches is kept, and so on until the rest matches. One wrong paragraph neither gets clips nor
   drags its neighbours; it is reported as `text_not_in_audio`.
5. A block that does not match in its window at all is looked for once more in a window reaching
   RETRY_WINDOW_SECONDS further, so speech the transcript lacks (a preface, an announcement) longer than the usual
   window does not lose the rest of the book. Text that is not in the audio at all leaves the window where it was.
6. A word's time in the recording is where the DTW path takes the word's first and last speech frames.

The result is a list of `TimedWord`s (start, end, the word's mean frame distance) with sentence and paragraph;
segment.py turns them into clips cut inside pauses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .dtw import align_subsequence
from .espeak import Synthesiser
from .features import FRAME_RATE, N_MFCC, level_db, mfcc, standardise_sliding
from .transcript import Sentence, is_spoken_word

WARPS = (0.9, 1.0, 1.1, 1.2, 1.3)  # formant scales tried per block (espeak-ng's male voice = 1.0)
BLOCK_SECONDS = 40.0
MIN_BLOCK_SECONDS = 8.0
WINDOW_SLACK_SECONDS = 30.0
RETRY_WINDOW_SECONDS = 300.0  # a block not found in its window is looked for again this far on
NORMALISE_SECONDS = 30.0  # the recording's features are standardised over this much speech around each frame
DEFAULT_MAX_COST_RATIO = 1.6  # a sentence whose mean distance is above this multiple of the median is not spoken


@dataclass
class TimedWord:
    text: str
    sentence: int
    paragraph: int
    start: float  # seconds in the recording
    end: float
    cost: float  # mean DTW frame distance over the word
    last_in_sentence: bool = False


@dataclass
class SentenceResult:
    sentence: Sentence
    status: str  # "aligned" or a rejection reason
    cost: float = float("nan")
    start: float = float("nan")
    end: float = float("nan")
    words: list[TimedWord] = field(default_factory=list)


@dataclass
class _Rendered:
    sentence: Sentence
    features: np.ndarray  # speech frames only, standardised later
    word_of_frame: np.ndarray  # int: index into sentence.words (-1: between words)


def render_sentences(sentences: list[Sentence], voice: str = "sv") -> list[_Rendered]:
    """Every sentence rendered and measured, in a fresh process: espeak-ng carries state from one call to the next
    (the same text comes out a few samples different after other text), so only a process that renders this
    recording's sentences in order from a clean start gives the same rendering on every run. The child gets the
    sentences as JSON on stdin and answers with an .npz of frame features (no pickles, no audio)."""
    import io
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])  # the child imports this very copy of the package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    request = json.dumps({"voice": voice, "sentences": [s.words for s in sentences]}, ensure_ascii=False)
    completed = subprocess.run([sys.executable, "-m", "qwen_swe.ingest.align"], input=request.encode("utf-8"),
                               capture_output=True, env=env)
    if completed.returncode != 0:
        message = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"rendering the transcript with espeak-ng failed: {message[-1] if message else '?'}")
    with np.load(io.BytesIO(completed.stdout), allow_pickle=False) as answer:
        features, words, lengths = answer["features"], answer["word_of_frame"], answer["lengths"]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [_Rendered(sentence, features[bounds[k]:bounds[k + 1]], words[bounds[k]:bounds[k + 1]])
            for k, sentence in enumerate(sentences)]


def render_here(sentences: list[list[str]], voice: str = "sv") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features of the speech frames, word index per frame, frames per sentence) of sentences given as words."""
    synthesiser = Synthesiser(voice)
    all_features, all_words, lengths = [], [], []
    for words in sentences:
        rendering = synthesiser.render(" ".join(words))
        features = mfcc(rendering.samples, rendering.rate)[0]
        speech = level_db(rendering.samples, rendering.rate) > -45.0  # espeak-ng's pauses are digital silence
        frames = len(features)
        word_of_frame = np.full(frames, -1, np.int64)
        offsets = _word_offsets(words)
        starts = []  # (frame, word index) for each spoken word with a WORD event
        for position, seconds in rendering.word_starts:
            index = _word_at(offsets, words, position)
            if index is not None and (not starts or index > starts[-1][1]):
                starts.append((int(seconds * FRAME_RATE), index))
        for k, (frame, index) in enumerate(starts):
            end = starts[k + 1][0] if k + 1 < len(starts) else frames
            word_of_frame[frame:end] = index
        keep = speech[:frames]
        all_features.append(features[keep])
        all_words.append(word_of_frame[keep])
        lengths.append(int(keep.sum()))
    empty = np.zeros((0, N_MFCC), np.float32)
    return (np.concatenate(all_features) if all_features else empty,
            np.concatenate(all_words) if all_words else np.zeros(0, np.int64), np.array(lengths, np.int64))


def _word_offsets(words: list[str]) -> list[int]:
    offsets, position = [], 0
    for word in words:
        offsets.append(position)
        position += len(word) + 1
    return offsets


def _word_at(offsets: list[int], words: list[str], position: int) -> Optional[int]:
    """The word holding character `position` (the last word starting at or before it), if it is spoken."""
    for index in range(len(words) - 1, -1, -1):
        if offsets[index] <= position:
            return index if is_spoken_word(words[index]) else None
    return None


def plan_blocks(rendered: list[_Rendered]) -> list[list[int]]:
    """Sentence indices per block: paragraphs, short ones joined to the next, long ones split at sentences."""
    blocks: list[list[int]] = []
    current: list[int] = []
    frames = 0
    for i, item in enumerate(rendered):
        new_paragraph = i > 0 and item.sentence.paragraph != rendered[i - 1].sentence.paragraph
        if current and ((new_paragraph and frames >= MIN_BLOCK_SECONDS * FRAME_RATE)
                        or frames + len(item.features) > BLOCK_SECONDS * FRAME_RATE):
            blocks.append(current)
            current, frames = [], 0
        current.append(i)
        frames += len(item.features)
    if current:
        blocks.append(current)
    return blocks


def align_recording(sentences: list[Sentence], recording_features: np.ndarray, speech: np.ndarray,
                    voice: str = "sv", max_cost_ratio: float = DEFAULT_MAX_COST_RATIO,
                    progress: Optional[Callable[[int], None]] = None) -> list[SentenceResult]:
    """Align every sentence; `recording_features` are the recording's MFCCs per warp ([warps, frames, N_MFCC],
    features.mfcc with WARPS), `speech` its speech frames."""
    rendered = render_sentences(sentences, voice)
    synthetic = np.concatenate([r.features for r in rendered]) if rendered else np.zeros((0, N_MFCC), np.float32)
    mean, std = synthetic.mean(axis=0), synthetic.std(axis=0) + 1e-5
    for item in rendered:
        item.features = (item.features - mean) / std
    speech_frames = np.flatnonzero(speech[:recording_features.shape[1]])
    window = int(NORMALISE_SECONDS * FRAME_RATE)
    targets = [standardise_sliding(warped[speech_frames], window) for warped in recording_features]

    def align_block(indices: list[int], cursor: int, slack: Optional[float]):
        return _align_block([rendered[i] for i in indices], targets, cursor, slack)

    placements = place_blocks(plan_blocks(rendered), [r.sentence.paragraph for r in rendered],
                              [len(r.features) for r in rendered], align_block, max_cost_ratio, _ABSOLUTE_MAX_COST,
                              RETRY_WINDOW_SECONDS, progress)
    results = {i: _aligned_result(rendered[i].sentence, placement.cost, placement.payload)
               if placement.status == "aligned" else
               SentenceResult(rendered[i].sentence, placement.status, cost=placement.cost)
               for i, placement in placements.items()}
    # times back from the speech-only frame index to seconds in the recording
    for result in results.values():
        for word in result.words:
            word.start = speech_frames[int(word.start)] / FRAME_RATE
            word.end = (speech_frames[int(word.end)] + 1) / FRAME_RATE
        if result.words:
            result.start, result.end = result.words[0].start, result.words[-1].end
    return [results[i] for i in range(len(rendered))]


# (sentence indices, cursor, window slack in seconds or None for the usual) -> ([(cost, what to keep) per sentence],
# the last frame the block took) or None when it cannot be placed; frames and cursor in the aligner's own units
BlockAligner = Callable[[list[int], int, Optional[float]], Optional[tuple[list[tuple[float, Any]], int]]]


@dataclass
class Placement:
    status: str  # "aligned" or "text_not_in_audio"
    cost: float = float("nan")
    payload: Any = None  # what the aligner keeps for an aligned sentence (its word spans)


def place_blocks(blocks: list[list[int]], paragraph_of: list[int], weight_of: list[int], align_block: BlockAligner,
                 max_cost_ratio: float, absolute_max_cost: float, retry_slack: Optional[float],
                 progress: Optional[Callable[[int], None]] = None) -> dict[int, Placement]:
    """Blocks of sentences placed in order, each after the previous one (steps 3-5 of the module docstring); shared
    by the DTW aligner here and the CTC aligner. `weight_of` is a sentence's size (frames, tokens)."""
    placements: dict[int, Placement] = {}
    cursor = 0
    costs_seen: list[float] = []
    for block in blocks:
        active = list(block)
        while active:
            reference = float(np.median(costs_seen)) if len(costs_seen) >= 5 else None
            threshold = max_cost_ratio * reference if reference else absolute_max_cost
            aligned = align_block(active, cursor, None)
            bad = aligned is None or any(cost > threshold for cost, _ in aligned[0])
            if bad and active == block and retry_slack:  # once per block: perhaps it lies beyond the window
                further = align_block(active, cursor, retry_slack)
                if further is not None and all(cost <= threshold for cost, _ in further[0]):
                    aligned, bad = further, False
            if not bad:
                assert aligned is not None
                per_sentence, end = aligned
                for i, (cost, payload) in zip(active, per_sentence):
                    placements[i] = Placement("aligned", cost, payload)
                    costs_seen.append(cost)
                cursor = end + 1
                break
            costs = {i: cost for i, (cost, _) in zip(active, aligned[0])} if aligned else {}
            # Text the audio does not hold bends the whole path, so its neighbours look bad too: leave out each
            # paragraph in turn (each sentence, in a one-paragraph block), keep the leaving-out after which the most
            # of the rest matches, and align again.
            groups = _groups(active, paragraph_of)
            if len(groups) == 1:
                for i in active:
                    placements[i] = Placement("text_not_in_audio", costs.get(i, float("nan")))
                break
            scores = []
            for group in groups:
                rest = [i for i in active if i not in group]
                trial = align_block(rest, cursor, None)
                if trial is None:
                    scores.append((0, -np.inf))
                    continue
                # most text explained (sentences under the threshold), then the lowest mean distance: a short
                # remainder always matches somewhere, so the mean alone would drop the long true text
                explained = sum(weight_of[i] for i, (cost, _) in zip(rest, trial[0]) if cost <= threshold)
                scores.append((explained, -float(np.mean([cost for cost, _ in trial[0]]))))
            dropped = groups[max(range(len(groups)), key=lambda k: scores[k])]
            for i in dropped:
                placements[i] = Placement("text_not_in_audio", costs.get(i, float("nan")))
            active = [i for i in active if i not in dropped]
        if progress is not None:
            progress(len(block))
    return placements


def _groups(active: list[int], paragraph_of: list[int]) -> list[list[int]]:
    paragraphs: dict[int, list[int]] = {}
    for i in active:
        paragraphs.setdefault(paragraph_of[i], []).append(i)
    return list(paragraphs.values()) if len(paragraphs) > 1 else [[i] for i in active]


def _aligned_result(sentence: Sentence, cost: float, words: list) -> SentenceResult:
    timed = [TimedWord(sentence.words[k], sentence.index, sentence.paragraph, *span) for k, span in words]
    if timed:
        timed[-1].last_in_sentence = True
    return SentenceResult(sentence, "aligned", cost=cost, words=timed)


# Before five sentences have set the recording's own scale: two independent standardised frames lie sqrt(2 x N_MFCC)
# apart on average; text matched to the wrong speech comes to about 0.8 of that, the right text to 0.25-0.5.
_ABSOLUTE_MAX_COST = 0.65 * float(np.sqrt(2 * N_MFCC))


def _align_block(items: list[_Rendered], targets: list[np.ndarray], cursor: int,
                 slack_seconds: Optional[float] = None):
    """The block matched against each warp of the recording's features; the best match wins."""
    query = np.concatenate([item.features for item in items])
    slack = WINDOW_SLACK_SECONDS if slack_seconds is None else slack_seconds
    window_end = cursor + int(2.5 * len(query) + slack * FRAME_RATE)
    matches = [align_subsequence(query, target[cursor:window_end]) for target in targets]
    found = [m for m in matches if m is not None]
    if not found:
        return None
    match = min(found, key=lambda m: m.cost)
    per_sentence = []
    offset = 0
    for item in items:
        frames = slice(offset, offset + len(item.features))
        mapped = match.target_of_query[frames] + cursor
        costs = match.cost_of_query[frames]
        words = []
        for index in np.unique(item.word_of_frame[item.word_of_frame >= 0]):
            where = np.flatnonzero(item.word_of_frame == index)
            words.append((int(index), (int(mapped[where[0]]), int(mapped[where[-1]]), float(costs[where].mean()))))
        per_sentence.append((float(costs.mean()) if len(costs) else float("inf"), words))
        offset += len(item.features)
    return per_sentence, int(match.end + cursor)


if __name__ == "__main__":  # the rendering child of render_sentences
    import io as _io
    import json as _json
    import sys as _sys

    _request = _json.loads(_sys.stdin.buffer.read().decode("utf-8"))
    _features, _words, _lengths = render_here(_request["sentences"], _request["voice"])
    _buffer = _io.BytesIO()
    np.savez(_buffer, features=_features, word_of_frame=_words, lengths=_lengths)
    _sys.stdout.buffer.write(_buffer.getvalue())
