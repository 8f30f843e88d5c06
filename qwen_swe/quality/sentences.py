"""The fixed Swedish evaluation sentences: the same text for every model, so numbers compare across runs.

Chosen to cover what a Swedish voice gets wrong: å, ä and ö in stressed and unstressed syllables, the sj- and
tj-sounds, long compounds, numbers (written as words, so that the ASR transcript and the reference agree on
spelling), a question and an exclamation, and lengths from three words to a long sentence, so that both early stops
and run-away endings show. Never change a sentence in place: add a new set instead, or results stop comparing.
"""

from __future__ import annotations

from pathlib import Path

EVAL_SENTENCES_V1: tuple[str, ...] = (
    "Hej, hur mår du?",
    "Tåget till Göteborg går klockan sju.",
    "Sju sjösjuka sjömän sköttes av sjuttiosju sjuksköterskor.",
    "Kan du hjälpa mig att hitta närmaste apotek?",
    "Älgen stod alldeles stilla i skogsbrynet och tittade på oss.",
    "Det kostar tvåhundrafemtio kronor och fyrtio öre.",
    "Mormor bakade kanelbullar till hela släkten i lördags.",
    "Riksdagen röstade igår om den nya lagen om kollektivtrafik.",
    "Vilken underbar utsikt över fjällen!",
    "Hon föddes den tjugonde mars artonhundranittiotre i Örebro.",
    "Tjugotre tjocka tjärnar låg tysta i den kalla höstmorgonen.",
    "När solen äntligen gick ner över skärgården satt vi kvar på bryggan och pratade om allt vi hade varit "
    "med om under sommaren.",
)

BUILT_IN_SETS = {"v1": EVAL_SENTENCES_V1}


def load_sentences(source: str | Path | None = None) -> list[str]:
    """The built-in set (None or "v1"), or a UTF-8 text file with one sentence per line (blank lines and lines
    starting with # are skipped)."""
    if source is None or str(source) in BUILT_IN_SETS:
        return list(BUILT_IN_SETS[str(source or "v1")])
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{path}: no such sentence file (give a text file with one sentence per line, or "
                         f"one of the built-in sets: {', '.join(BUILT_IN_SETS)})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error}); save it as UTF-8") from error
    sentences = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not sentences:
        raise ValueError(f"{path}: no sentences (one per line; # starts a comment)")
    return sentences
