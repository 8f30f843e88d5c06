"""Timed words and pauses -> clips: cut only inside pauses, never mid-word, 2-15 s by default, each with a confidence.

1. Runs: consecutive aligned sentences. A sentence the aligner rejected breaks a run, so no clip spans text that
   was not found; so does a pause longer than `max_inner_pause` (a chapter break, music), so no clip holds one.
2. Cut candidates: between two words of a run, the longest pause (pauses.py) that lies between the first word's
   start and the second word's end and reaches within `tolerance` of the gap the aligner put between them. The
   edges of a run are cut in the pause before its first word and after its last one. A word boundary without a
   pause is never cut.
3. Choosing cuts: dynamic programming over a run's candidates. A clip costs 1, plus 0.5 when it ends at a comma
   (or ; : -) and 1.5 when it ends between words that end no clause, so sentences stay whole and short sentences
   are merged up to `max_seconds`. A stretch that cannot become a clip (shorter than `min_seconds` with nothing to
   merge with, or longer than `max_seconds` with no pause to cut) costs more and goes to the rejections
   (`too_short`, `no_pause_to_cut`), so every word lands in exactly one clip or one rejection.
4. Clip edges: `pad` seconds of the pause on each side (half the pause when it is shorter than 2 x pad).
5. Confidence: the smallest of three scores, each 1.0 when ideal and 0.5 at its rejection threshold:
   alignment (the clip's mean DTW distance against the recording's median sentence distance, 0.5 at
   `max_cost_ratio`), speaking rate (letters per second against the recording's median, 0.5 at a factor of
   `max_rate_factor` either way) and VAD agreement (the share of the clip's word time the VAD calls non-speech,
   0.5 at `max_vad_disagreement`). A clip below `min_confidence` is rejected with the reason of its lowest score
   (`alignment_cost`, `speaking_rate`, `vad_disagreement`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .align import SentenceResult, TimedWord
from .features import FRAME_RATE
from .pauses import Pause

PUNCTUATION_ENDS = (",", ";", ":", "-")


@dataclass(frozen=True)
class SegmentSettings:
    min_seconds: float = 2.0
    max_seconds: float = 15.0
    pad: float = 0.15
    tolerance: float = 0.3
    min_confidence: float = 0.5
    max_cost_ratio: float = 1.6
    max_rate_factor: float = 1.8
    max_vad_disagreement: float = 0.25
    max_inner_pause: float = 2.0  # a longer pause (a chapter break, music) always ends a clip


@dataclass
class Clip:
    start: float
    end: float
    words: list[TimedWord]
    confidence: float = 1.0
    scores: dict[str, float] = field(default_factory=dict)
    reason: Optional[str] = None  # None: kept; else why it was rejected
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)


@dataclass
class _Cut:
    pause: Pause
    penalty: float  # of a clip that ends here

    def end_edge(self, pad: float) -> float:
        return min(self.pause.start + pad, (self.pause.start + self.pause.end) / 2)

    def start_edge(self, pad: float) -> float:
        return max(self.pause.end - pad, (self.pause.start + self.pause.end) / 2)


def runs_of(results: list[SentenceResult]) -> list[list[TimedWord]]:
    runs: list[list[TimedWord]] = []
    current: list[TimedWord] = []
    for result in results:
        if result.status != "aligned":
            if current:
                runs.append(current)
            current = []
            continue
        current += result.words
    if current:
        runs.append(current)
    return runs


def _pause_between(pauses: list[Pause], starts: np.ndarray, earliest: float, latest: float,
                   low: float, high: float) -> Optional[Pause]:
    """The longest pause inside [low, high] that reaches into [earliest, latest]."""
    best = None
    first = max(0, int(np.searchsorted(starts, low)) - 1)
    for pause in pauses[first:]:
        if pause.start > high:
            break
        if pause.start < low or pause.end > high or pause.end < earliest or pause.start > latest:
            continue
        if best is None or pause.seconds > best.seconds:
            best = pause
    return best


def segment(results: list[SentenceResult], pauses: list[Pause], duration: float,
            settings: SegmentSettings) -> list[Clip]:
    """Clips in recording order, kept and rejected (`reason` set) alike."""
    pauses = sorted(pauses, key=lambda p: p.start)
    if not pauses or pauses[0].start > 0:
        pauses.insert(0, Pause(0.0, 0.0))  # the recording's start is a place to cut
    if pauses[-1].end < duration:
        pauses.append(Pause(duration, duration))
    starts = np.array([p.start for p in pauses])
    tolerance = settings.tolerance
    clips: list[Clip] = []
    for run in _split_at_long_pauses(runs_of(results), pauses, starts, settings):
        # the pause before the run's first word and after its last; words outside them cannot be cut cleanly
        cuts: list[Optional[_Cut]] = []
        before = _pause_between(pauses, starts, run[0].start - tolerance, run[0].start + tolerance,
                                -1.0, run[0].end)
        cuts.append(_Cut(before, 0.0) if before else None)
        for word, following in zip(run, run[1:]):
            pause = _pause_between(pauses, starts, word.end - tolerance, following.start + tolerance,
                                   word.start, following.end)
            penalty = 0.0 if word.last_in_sentence else 0.5 if word.text.endswith(PUNCTUATION_ENDS) else 1.5
            cuts.append(_Cut(pause, penalty) if pause else None)
        after = _pause_between(pauses, starts, run[-1].end - tolerance, run[-1].end + tolerance,
                               run[-1].start, duration + 1.0)
        cuts.append(_Cut(after, 0.0) if after else None)
        clips += _choose(run, cuts, settings)
    return clips


def _split_at_long_pauses(runs: list[list[TimedWord]], pauses: list[Pause], starts: np.ndarray,
                          settings: SegmentSettings) -> list[list[TimedWord]]:
    split = []
    for run in runs:
        first = 0
        for k in range(1, len(run)):
            pause = _pause_between(pauses, starts, run[k - 1].end - settings.tolerance,
                                   run[k].start + settings.tolerance, run[k - 1].start, run[k].end)
            if pause is not None and pause.seconds > settings.max_inner_pause:
                split.append(run[first:k])
                first = k
        split.append(run[first:])
    return split


def _choose(run: list[TimedWord], cuts: list[Optional[_Cut]], settings: SegmentSettings) -> list[Clip]:
    """Dynamic programming over the cut candidates of one run; cuts[k] lies before word k (cuts[-1]: after all)."""
    places = [k for k, cut in enumerate(cuts) if cut is not None]
    if len(places) < 2:
        return [_rejected(run, run[0].start, run[-1].end, "no_pause_to_cut",
                          "no pause to cut at around these words")]
    best = {places[0]: (0.0, -1, None)}  # place -> (cost, previous place, rejection reason or None)
    for j_index, j in enumerate(places[1:], start=1):
        options = []
        for i_index in range(j_index - 1, -1, -1):  # back from the nearest candidate until clips grow too long
            i = places[i_index]
            start, end = cuts[i].start_edge(settings.pad), cuts[j].end_edge(settings.pad)
            seconds = end - start
            if seconds > settings.max_seconds and i_index != j_index - 1:
                break  # a longer stretch can only be rejected, and the shortest one does that
            if settings.min_seconds <= seconds <= settings.max_seconds:
                options.append((best[i][0] + 1.0 + cuts[j].penalty, i, None))
            else:
                reason = "too_short" if seconds < settings.min_seconds else "no_pause_to_cut"
                options.append((best[i][0] + 3.0 + 2.0 * seconds, i, reason))
        best[j] = min(options, key=lambda option: (option[0], -option[1]))
    chosen = []
    j = places[-1]
    while best[j][1] >= 0:
        cost, i, reason = best[j]
        chosen.append((i, j, reason))
        j = i
    clips = []
    leading = places[0]
    if leading > 0:  # words before the first clean cut
        clips.append(_rejected(run[:leading], run[0].start, run[leading - 1].end, "no_pause_to_cut",
                               "no pause before these words"))
    for i, j, reason in reversed(chosen):
        start, end = cuts[i].start_edge(settings.pad), cuts[j].end_edge(settings.pad)
        clip = Clip(start=start, end=end, words=run[i:j])
        if reason:
            clip.reason = reason
            clip.detail = (f"{clip.seconds:.2f} s is shorter than --min-seconds {settings.min_seconds}"
                           if reason == "too_short" else
                           f"{clip.seconds:.2f} s is longer than --max-seconds {settings.max_seconds} and no pause "
                           "inside is fit to cut")
        clips.append(clip)
    trailing = places[-1]
    if trailing < len(run):
        clips.append(_rejected(run[trailing:], run[trailing].start, run[-1].end, "no_pause_to_cut",
                               "no pause after these words"))
    return clips


def _rejected(words: list[TimedWord], start: float, end: float, reason: str, detail: str) -> Clip:
    return Clip(start=start, end=end, words=words, reason=reason, detail=detail)


def letters(text: str) -> int:
    return sum(char.isalpha() for char in text)


def score_clips(clips: list[Clip], results: list[SentenceResult], vad: np.ndarray,
                settings: SegmentSettings) -> None:
    """Confidence of every clip not yet rejected; those below `min_confidence` are rejected with the reason."""
    aligned = [r for r in results if r.status == "aligned" and r.end > r.start]
    if not aligned:
        return
    median_cost = float(np.median([r.cost for r in aligned]))
    median_rate = float(np.median([letters(r.sentence.text) / max(sum(w.end - w.start for w in r.words), 1e-3)
                                   for r in aligned]))
    for clip in clips:
        if clip.reason is not None:
            continue
        cost = float(np.mean([w.cost for w in clip.words]))
        speaking = sum(w.end - w.start for w in clip.words)
        rate = letters(clip.text) / max(speaking, 1e-3)
        silent_frames = total_frames = 0
        for word in clip.words:
            window = vad[int(word.start * FRAME_RATE):int(math.ceil(word.end * FRAME_RATE))]
            silent_frames += int((~window).sum())
            total_frames += len(window)
        silent = silent_frames / max(total_frames, 1)
        badness = {
            "alignment_cost": max(0.0, cost / median_cost - 1.0) / (settings.max_cost_ratio - 1.0),
            "speaking_rate": abs(math.log(max(rate, 1e-3) / median_rate)) / math.log(settings.max_rate_factor),
            "vad_disagreement": silent / settings.max_vad_disagreement,
        }
        clip.scores = {name: round(max(0.0, 1.0 - 0.5 * value), 4) for name, value in badness.items()}
        worst = min(clip.scores, key=lambda name: clip.scores[name])
        clip.confidence = clip.scores[worst]
        if clip.confidence < settings.min_confidence:
            clip.reason = worst
            clip.detail = (f"confidence {clip.confidence:.2f} < --min-confidence {settings.min_confidence}: "
                           f"alignment cost {cost:.2f} (median {median_cost:.2f}), {rate:.1f} letters/s (median "
                           f"{median_rate:.1f}), {100 * silent:.0f}% of the words' time not speech to the VAD")
