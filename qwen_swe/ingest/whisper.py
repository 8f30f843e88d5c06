"""Recordings without a transcript: a user's Whisper model folder (e.g. KBLab kb-whisper) transcribes them with word
timestamps, and the words are cut into clips like aligned ones.

- The recording goes to the model in windows of about WINDOW_SECONDS, each ending in the longest pause near its
  nominal end (the speech mask of pauses.py), so no word is split between two windows and memory stays flat.
- transformers' speech-recognition pipeline runs each window (`return_timestamps="word"`, language Swedish, task
  transcribe; it chunks the window into Whisper's 30 s inputs itself); the folder loads with local_files_only.
- The words are normalised like every transcript (transcript.split_sentences: NFC, quotes, optional numbers to
  words), grouped into sentences at . ! ? and given cost 1.0: there is no alignment distance, so a clip's confidence
  rests on its speaking rate and VAD agreement.

No Whisper weights can be fetched where the tests run: tests/ingest/test_whisper.py drives this module with a
stand-in transcriber that returns known words and times, which checks everything after the model call.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..model_shapes import SAMPLE_RATE
from .align import SentenceResult, TimedWord
from .features import FRAME_RATE
from .transcript import Sentence, is_spoken_word, split_sentences

WINDOW_SECONDS = 600.0
SEARCH_SECONDS = 30.0
WHISPER_RATE = 16000

# (16 kHz samples) -> [{"text": " ord", "timestamp": (start, end)}, ...], times in seconds from the window start
Transcriber = Callable[[np.ndarray], list[dict[str, Any]]]


def whisper_transcriber(folder: str, language: str = "swedish") -> Transcriber:
    import torch
    from transformers import pipeline

    try:
        recognise = pipeline("automatic-speech-recognition", model=folder, chunk_length_s=30,
                             device="cuda" if torch.cuda.is_available() else "cpu",
                             model_kwargs={"local_files_only": True})
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: not a Whisper model folder transformers can load offline ({error})") from error

    def transcribe(samples: np.ndarray) -> list[dict[str, Any]]:
        result = recognise({"raw": samples, "sampling_rate": WHISPER_RATE}, return_timestamps="word",
                           generate_kwargs={"language": language, "task": "transcribe"})
        return list(result.get("chunks") or [])

    return transcribe


def windows(duration: float, speech: np.ndarray) -> list[tuple[float, float]]:
    """Windows of about WINDOW_SECONDS, each boundary in the middle of the longest pause within SEARCH_SECONDS."""
    bounds = [0.0]
    while duration - bounds[-1] > WINDOW_SECONDS + SEARCH_SECONDS:
        nominal = bounds[-1] + WINDOW_SECONDS
        low, high = int((nominal - SEARCH_SECONDS) * FRAME_RATE), int((nominal + SEARCH_SECONDS) * FRAME_RATE)
        quiet = ~speech[low:high]
        best, best_length, run_start = nominal, 0, None
        for k, silent in enumerate(np.append(quiet, False)):
            if silent and run_start is None:
                run_start = k
            elif not silent and run_start is not None:
                if k - run_start > best_length:
                    best, best_length = (low + (run_start + k) / 2) / FRAME_RATE, k - run_start
                run_start = None
        bounds.append(best)
    return list(zip(bounds, bounds[1:] + [duration]))


def transcribe_and_time(audio: Any, folder: Optional[str], speech: np.ndarray, numbers_to_words: bool = False,
                        transcriber: Optional[Transcriber] = None) -> list[SentenceResult]:
    import soxr

    if transcriber is None:
        if folder is None:
            raise ValueError("a recording without a transcript needs --whisper-model")
        transcriber = whisper_transcriber(folder)
    duration = len(audio) / SAMPLE_RATE
    timed: list[tuple[str, float, float]] = []
    for start, end in windows(duration, speech):
        piece = soxr.resample(audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)], SAMPLE_RATE, WHISPER_RATE,
                              quality="HQ")
        for chunk in transcriber(piece.astype(np.float32)):
            first, last = chunk.get("timestamp") or (None, None)
            text = str(chunk.get("text") or "").strip()
            if not text or first is None:
                continue
            last = first if last is None else last
            timed += [(word, start + float(first), start + float(last)) for word in text.split()]
    return sentences_from_words(timed, numbers_to_words)


def sentences_from_words(timed: list[tuple[str, float, float]],
                         numbers_to_words: bool = False) -> list[SentenceResult]:
    """Timed words (as the recogniser wrote them) -> aligned sentences of normalised words."""
    results: list[SentenceResult] = []
    current: list[tuple[str, float, float]] = []

    def close() -> None:
        if not current:
            return
        text = " ".join(word for word, _, _ in current)
        for sentence in split_sentences(text, numbers_to_words=numbers_to_words):
            # normalisation never merges or splits words, except numbers spelled out (several words, one time)
            words = sentence.words
            spans = [(a, b) for _, a, b in current]
            if len(words) != len(spans):
                spans = [(spans[0][0] + (spans[-1][1] - spans[0][0]) * k / len(words),
                          spans[0][0] + (spans[-1][1] - spans[0][0]) * (k + 1) / len(words))
                         for k in range(len(words))]
            index = len(results)
            marked = Sentence(index=index, paragraph=0, text=sentence.text, words=words)
            timed_words = [TimedWord(word, index, 0, a, b, 1.0) for word, (a, b) in zip(words, spans)
                           if is_spoken_word(word)]
            if not timed_words:
                continue
            timed_words[-1].last_in_sentence = True
            results.append(SentenceResult(marked, "aligned", cost=1.0, start=timed_words[0].start,
                                          end=timed_words[-1].end, words=timed_words))
        current.clear()

    for word, start, end in timed:
        current.append((word, start, end))
        if word.endswith((".", "!", "?")):
            close()
    close()
    return results
