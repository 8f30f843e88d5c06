"""ingest/segment.py: clips from timed words and pauses; cut only in pauses, never above max_seconds, every word in
exactly one clip or rejection, confidence and its reasons."""

from __future__ import annotations

import numpy as np

from qwen_swe.ingest.align import SentenceResult, TimedWord
from qwen_swe.ingest.features import FRAME_RATE
from qwen_swe.ingest.pauses import Pause, pauses_of
from qwen_swe.ingest.segment import SegmentSettings, score_clips, segment
from qwen_swe.ingest.transcript import Sentence


def sentence_results(spans: list[list[tuple[float, float]]], texts: list[str] | None = None):
    """One aligned sentence per list of word spans; word k of sentence s reads 'sSwK'."""
    results = []
    for s, words in enumerate(spans):
        text = texts[s] if texts else " ".join(f"s{s}w{k}" for k in range(len(words)))
        sentence = Sentence(index=s, paragraph=0, text=text, words=text.split())
        timed = [TimedWord(w, s, 0, a, b, 1.0) for w, (a, b) in zip(sentence.words, words)]
        timed[-1].last_in_sentence = True
        results.append(SentenceResult(sentence, "aligned", cost=1.0, start=timed[0].start, end=timed[-1].end,
                                      words=timed))
    return results


def speech_mask(spans, duration):
    speech = np.zeros(int(duration * FRAME_RATE), bool)
    for a, b in spans:
        speech[int(a * FRAME_RATE):int(b * FRAME_RATE)] = True
    return speech


def test_sentences_merge_up_to_max_and_cuts_sit_in_pauses():
    # six 2-second sentences, 0.5 s apart, each made of four 0.5 s words without pauses between them
    spans = [[(1.0 + 2.5 * s + 0.5 * k, 1.5 + 2.5 * s + 0.5 * k) for k in range(4)] for s in range(6)]
    duration = 17.0
    speech = speech_mask([(w[0][0], w[-1][1]) for w in spans], duration)
    clips = segment(sentence_results(spans), pauses_of(speech, 0.15), duration,
                    SegmentSettings(min_seconds=1.0, max_seconds=5.5))
    assert all(c.reason is None for c in clips)
    assert [len(c.words) for c in clips] == [8, 8, 8]  # two sentences each: a third would exceed 5.5 s
    for clip in clips:
        assert clip.seconds <= 5.5
        assert not speech[int(round(clip.start * FRAME_RATE))] and not speech[int(round(clip.end * FRAME_RATE)) - 1]
    assert [w.text for c in clips for w in c.words] == [f"s{s}w{k}" for s in range(6) for k in range(4)]


def test_what_cannot_be_cut_is_rejected_with_its_reason():
    # a 9 s sentence with no pause inside, then a lone 0.6 s sentence after a long pause
    spans = [[(0.5 + 0.5 * k, 1.0 + 0.5 * k) for k in range(18)], [(14.0, 14.3), (14.3, 14.6)]]
    duration = 16.0
    speech = speech_mask([(0.5, 9.5), (14.0, 14.6)], duration)
    clips = segment(sentence_results(spans), pauses_of(speech, 0.15), duration,
                    SegmentSettings(min_seconds=1.0, max_seconds=6.0))
    assert [(c.reason, len(c.words)) for c in clips] == [("no_pause_to_cut", 18), ("too_short", 2)]


def test_comma_pauses_split_a_long_sentence_and_confidence_names_the_worst_score():
    words = [(0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.6, 3.1), (3.1, 3.6), (3.6, 4.1), (4.7, 5.2), (5.2, 5.7)]
    text = "Ett två tre, fyra fem sex, sju åtta."
    duration = 6.5
    speech = speech_mask([(0.5, 2.0), (2.6, 4.1), (4.7, 5.7)], duration)
    results = sentence_results([words], [text])
    settings = SegmentSettings(min_seconds=0.5, max_seconds=3.0)
    clips = segment(results, pauses_of(speech, 0.15), duration, settings)
    assert [c.text for c in clips] == ["Ett två tre,", "fyra fem sex,", "sju åtta."]
    score_clips(clips, results, speech, settings)
    assert all(c.reason is None and c.confidence > 0.8 for c in clips)
    vad = speech.copy()
    vad[int(2.6 * FRAME_RATE):int(4.1 * FRAME_RATE)] = False  # the VAD hears nothing where the middle words are
    clips = segment(results, pauses_of(speech, 0.15), duration, settings)
    score_clips(clips, results, vad, settings)
    assert clips[1].reason == "vad_disagreement" and clips[1].confidence < 0.5
    assert "not speech to the VAD" in clips[1].detail
    assert [c.reason for c in clips if c is not clips[1]] == [None, None]


def test_the_recording_edges_count_as_pauses():
    pauses = pauses_of(np.array([False] * 3 + [True] * 10 + [False] * 2), 1.0)
    assert pauses == [Pause(0.0, 3 / FRAME_RATE), Pause(13 / FRAME_RATE, 15 / FRAME_RATE)]
