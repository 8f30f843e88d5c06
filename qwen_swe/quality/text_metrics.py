"""WER and CER through the `evaluate` metric modules shipped in `quality/metrics/` (no Hub access needed).

Both sides are normalised the same way before scoring (NFC, lower case, punctuation dropped, whitespace collapsed)
so that an ASR model's casing and punctuation habits do not count as errors; numbers are expected as words, which is
how the built-in sentences are written.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = ("wer", "cer")

_NOT_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalise_for_scoring(text: str) -> str:
    """'Hej, Göteborg!' -> 'hej göteborg' (NFC keeps å/ä/ö one character each)."""
    text = unicodedata.normalize("NFC", text).lower()
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text)).strip()


@lru_cache(maxsize=None)
def load_metric(name: str) -> Any:
    """The shipped `evaluate` module for `name` ("wer" or "cer"), loaded from its folder inside the package."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown text metric {name!r}; qwen-swe ships {', '.join(METRIC_NAMES)}")
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def error_rates(references: Sequence[str], transcripts: Sequence[str], normalise: bool = True) -> dict[str, float]:
    """Corpus WER and CER of `transcripts` against `references` (pairs whose reference is empty are an error)."""
    if len(references) != len(transcripts):
        raise ValueError(f"{len(references)} references but {len(transcripts)} transcripts")
    if not references:
        raise ValueError("no sentences to score")
    if normalise:
        references = [normalise_for_scoring(text) for text in references]
        transcripts = [normalise_for_scoring(text) for text in transcripts]
    return {name: float(load_metric(name).compute(predictions=list(transcripts), references=list(references)))
            for name in METRIC_NAMES}
