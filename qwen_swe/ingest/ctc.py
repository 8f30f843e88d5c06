"""Forced alignment with a user's CTC model folder (a wav2vec2-style `AutoModelForCTC`, e.g. a Swedish wav2vec2):
the stronger, optional path next to the offline espeak-ng + DTW aligner.

1. Emissions: the recording is resampled to the model's rate (16 kHz) and run through the model in 30 s chunks with
   2 s of context either side (dropped afterwards), so memory stays flat; log-probabilities per model frame (20 ms
   for wav2vec2) over the model's character vocabulary.
2. Tokens: each word lower-cased and spelled in the vocabulary's characters (characters the vocabulary lacks are
   skipped; a word left with none is not timed), words joined by the word delimiter `|` when the vocabulary has it.
3. A hand-written CTC Viterbi (numba; torchaudio's forced_align is not available in every environment) with an open
   begin and an open end inside a window, placed block by block exactly as the DTW aligner places its blocks
   (align.place_blocks: each window starts where the previous block ended, so the whole recording costs
   O(length); a block not found is looked for once more further on; text not in the audio is left out paragraph by
   paragraph).
4. A sentence's cost is 1 - its tokens' mean log-probability (1.0: the model is sure of every token). A sentence
   above `max_cost_ratio` times the recording's median (or, before five sentences set that scale, above 1 + ln 10:
   the tokens' geometric mean probability under 10%) is `text_not_in_audio`.
Word times: the frame of the word's first token to the frame after its last; segment.py cuts in pauses near them.

Folders are loaded with `local_files_only=True`: nothing is downloaded.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..model_shapes import SAMPLE_RATE
from .align import SentenceResult, TimedWord, place_blocks
from .transcript import Sentence, is_spoken_word

CHUNK_SECONDS = 30.0
CONTEXT_SECONDS = 2.0
BLOCK_CHARACTERS = 600
WINDOW_SLACK_SECONDS = 30.0
RETRY_WINDOW_SECONDS = 300.0
FRAMES_PER_TOKEN = 4  # model frames (20 ms) per character at a slow reading pace; windows reach 3 times that
ABSOLUTE_MAX_COST = 1.0 + math.log(10.0)

try:
    import numba
except ImportError:  # pragma: no cover
    numba = None


def load_ctc_model(folder: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCTC, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCTC.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: not a CTC model folder transformers can load offline ({error})") from error
    return processor, model


def emissions(audio: Any, processor: Any, model: Any) -> tuple[np.ndarray, float]:
    """Log-probabilities [frames, vocabulary] of the whole recording, and the model's frames per second."""
    import soxr
    import torch

    rate = int(getattr(processor, "feature_extractor", processor).sampling_rate)
    stride = int(np.prod(model.config.conv_stride))  # input samples per output frame
    frames_per_second = rate / stride
    chunk, context = int(CHUNK_SECONDS * SAMPLE_RATE), int(CONTEXT_SECONDS * SAMPLE_RATE)
    total_frames = int(math.ceil(len(audio) / SAMPLE_RATE * frames_per_second))
    out: Optional[np.ndarray] = None
    with torch.inference_mode():
        for begin in range(0, len(audio), chunk):
            left = max(0, begin - context)
            piece = soxr.resample(audio[left:min(len(audio), begin + chunk + context)], SAMPLE_RATE, rate, quality="HQ")
            inputs = processor(piece, sampling_rate=rate, return_tensors="pt")
            logits = model(inputs.input_values).logits[0].float()
            log_probs = torch.log_softmax(logits, dim=-1).numpy()
            if out is None:
                out = np.full((total_frames, log_probs.shape[1]), -30.0, np.float32)
            first = int(round((begin - left) / SAMPLE_RATE * frames_per_second))
            count = min(int(round(chunk / SAMPLE_RATE * frames_per_second)), total_frames - int(
                round(begin / SAMPLE_RATE * frames_per_second)))
            at = int(round(begin / SAMPLE_RATE * frames_per_second))
            usable = log_probs[first:first + count]
            out[at:at + len(usable)] = usable
    assert out is not None
    return out, frames_per_second


def spell(words: list[str], vocabulary: dict[str, int]) -> tuple[list[int], list[int]]:
    """Token ids of the words and, per token, the index of its word (-1: the word delimiter)."""
    delimiter = vocabulary.get("|")
    tokens: list[int] = []
    owners: list[int] = []
    for index, word in enumerate(words):
        if not is_spoken_word(word):
            continue
        spelled = [vocabulary[c] for c in word.lower() if c in vocabulary and c != "|"]
        if not spelled:
            continue
        if tokens and delimiter is not None:
            tokens.append(delimiter)
            owners.append(-1)
        tokens += spelled
        owners += [index] * len(spelled)
    return tokens, owners


def _viterbi_impl(log_probs, tokens, blank):
    """Open-begin/open-end CTC alignment: (frame of every token, log-probability of every token, last frame)."""
    frames = log_probs.shape[0]
    length = tokens.shape[0]
    states = 2 * length + 1
    negative = -1e30
    score = np.full((frames, states), negative)
    back = np.zeros((frames, states), np.int8)  # 0: stay, 1: from previous state, 2: skip a blank, 3: start
    for t in range(frames):
        for s in range(states):
            label = blank if s % 2 == 0 else tokens[s // 2]
            emit = log_probs[t, label]
            best = negative
            move = 0
            if t > 0:
                best = score[t - 1, s]
                if s > 0 and score[t - 1, s - 1] > best:
                    best, move = score[t - 1, s - 1], 1
                if s > 1 and s % 2 == 1 and tokens[s // 2] != tokens[s // 2 - 1] and score[t - 1, s - 2] > best:
                    best, move = score[t - 1, s - 2], 2
            if s <= 1 and best < 0.0:
                # open begin: the first blank or the first token may start at any frame, free of what came before
                best, move = 0.0, 3
            score[t, s] = best + emit
            back[t, s] = move
    # open end: the best frame to finish on the last token or the blank after it
    end_t, end_s, end_score = 0, states - 1, negative
    for t in range(frames):
        for s in (states - 1, states - 2):
            if score[t, s] > end_score:
                end_t, end_s, end_score = t, s, score[t, s]
    token_frames = np.full(length, -1, np.int64)
    token_scores = np.zeros(length)
    t, s = end_t, end_s
    while t >= 0:
        if s % 2 == 1:
            token_frames[s // 2] = t  # moving back, the earliest frame of the token wins
            token_scores[s // 2] = log_probs[t, tokens[s // 2]]
        move = back[t, s]
        if move == 3:
            break
        if move == 1:
            s -= 1
        elif move == 2:
            s -= 2
        t -= 1
    return token_frames, token_scores, end_t


if numba is not None:
    _viterbi = numba.njit(cache=True)(_viterbi_impl)
else:  # pragma: no cover
    _viterbi = _viterbi_impl


def viterbi(log_probs: np.ndarray, tokens: list[int], blank: int) -> tuple[np.ndarray, np.ndarray, int]:
    return _viterbi(np.ascontiguousarray(log_probs, np.float32), np.asarray(tokens, np.int64), int(blank))


def align_with_ctc(sentences: list[Sentence], audio: Any, model_folder: str, speech: np.ndarray,
                   max_cost_ratio: float = 1.6, loaded: Optional[tuple[Any, Any]] = None) -> list[SentenceResult]:
    processor, model = loaded or load_ctc_model(model_folder)
    vocabulary = {token.lower(): index for token, index in processor.tokenizer.get_vocab().items()}
    blank = int(getattr(model.config, "pad_token_id", None) or processor.tokenizer.pad_token_id or 0)
    log_probs, rate = emissions(audio, processor, model)
    spelled = [spell(sentence.words, vocabulary) for sentence in sentences]
    delimiter = vocabulary.get("|")

    def align_block(indices: list[int], cursor: int, slack: Optional[float]):
        tokens: list[int] = []
        owners: list[int] = []
        sentence_of: list[int] = []
        for i in indices:
            if tokens and delimiter is not None:
                tokens.append(delimiter)
                owners.append(-1)
                sentence_of.append(-1)
            tokens += spelled[i][0]
            owners += spelled[i][1]
            sentence_of += [i] * len(spelled[i][0])
        seconds = WINDOW_SLACK_SECONDS if slack is None else slack
        window = log_probs[cursor:cursor + int(3 * FRAMES_PER_TOKEN * len(tokens) + seconds * rate)]
        if len(window) < len(tokens):
            return None
        frames, scores, end = viterbi(window, tokens, blank)
        frames = frames + cursor
        owner_array, sentence_array = np.array(owners), np.array(sentence_of)
        per_sentence = []
        for i in indices:
            mine = sentence_array == i
            words = []
            for index in sorted(set(owner_array[mine & (owner_array >= 0)].tolist())):  # not the delimiters
                where = np.flatnonzero(mine & (owner_array == index))
                words.append((index, frames[where[0]] / rate, (frames[where[-1]] + 1) / rate,
                              1.0 - float(scores[where].mean())))
            per_sentence.append((1.0 - float(scores[mine].mean()), words))
        return per_sentence, cursor + end

    placeable = [i for i in range(len(sentences)) if spelled[i][0]]
    blocks = [[i for i in block if spelled[i][0]] for block in _blocks(sentences, spelled)]
    placements = place_blocks([b for b in blocks if b], [s.paragraph for s in sentences],
                              [len(tokens) for tokens, _ in spelled], align_block, max_cost_ratio,
                              ABSOLUTE_MAX_COST, RETRY_WINDOW_SECONDS)
    results = []
    for i, sentence in enumerate(sentences):
        placement = placements.get(i) if i in placeable else None
        if placement is None or placement.status != "aligned":
            results.append(SentenceResult(sentence, "text_not_in_audio",
                                          cost=placement.cost if placement else float("nan")))
            continue
        words = [TimedWord(sentence.words[index], sentence.index, sentence.paragraph, start, end, cost)
                 for index, start, end, cost in placement.payload]
        words[-1].last_in_sentence = True
        results.append(SentenceResult(sentence, "aligned", cost=placement.cost, start=words[0].start,
                                      end=words[-1].end, words=words))
    return results


def _blocks(sentences: list[Sentence], spelled: list[tuple[list[int], list[int]]]) -> list[list[int]]:
    blocks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, sentence in enumerate(sentences):
        new_paragraph = i > 0 and sentence.paragraph != sentences[i - 1].paragraph
        if current and ((new_paragraph and size >= BLOCK_CHARACTERS // 4) or size + len(spelled[i][0]) >
                        BLOCK_CHARACTERS):
            blocks.append(current)
            current, size = [], 0
        current.append(i)
        size += len(spelled[i][0])
    if current:
        blocks.append(current)
    return blocks
