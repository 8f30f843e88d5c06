"""The transcript of a long recording: read, normalised like `shards build` does, split into paragraphs, sentences
and words.

Rules (the README repeats them):
- the file is UTF-8; every line goes through `data.text.normalize_text` (NFC, plain quotes and dashes, optionally
  numbers to Swedish words), so clip transcripts are spelled exactly as `shards build` would store them;
- not spoken, and ignored: a line starting with `#` (a note), and anything inside square or curly brackets,
  `[Illustration: en karta]`, `{sidan 12}`, whether a whole line or part of one;
- a blank line ends a paragraph (chapter headings are their own paragraph when a blank line follows them);
- a sentence ends at `.`, `!`, `?` or `…` followed by a space, and at the end of a line that has no closing
  punctuation (a heading such as "Kapitel ett" is a sentence of its own, and is expected to be read aloud: a heading
  the reader skips is found missing from the audio and lands in the rejections, or bracket it);
- a word is a run of characters between spaces; its punctuation stays attached ("Göteborg!"), so the clip transcript
  is the text as written. A token that holds no letter or digit (a lone "-") is not spoken: it is never timed and
  does not appear in clip transcripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data.text import decode_transcript, normalize_text

_BRACKETED = re.compile(r"\[[^\]]*\]|\{[^}]*\}")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')»]*\s+")


@dataclass
class Sentence:
    index: int  # position in the whole transcript
    paragraph: int
    text: str  # normalised, as the clip transcript will read
    words: list[str] = field(default_factory=list)


def read_transcript(path: str | Path, numbers_to_words: bool = False) -> list[Sentence]:
    """The sentences of a transcript file; ValueError naming the file when it is not UTF-8 or holds no words."""
    path = Path(path)
    text = decode_transcript(path.read_bytes(), str(path))
    sentences = split_sentences(text, numbers_to_words=numbers_to_words)
    if not sentences:
        raise ValueError(f"{path}: no spoken text (every line is empty, a # note or [bracketed])")
    return sentences


def split_sentences(text: str, numbers_to_words: bool = False) -> list[Sentence]:
    sentences: list[Sentence] = []
    paragraph = 0
    pending = ""  # a paragraph's lines joined: a sentence may run over a line break
    for raw_line in text.splitlines() + [""]:
        line = raw_line.strip()
        if line.startswith("#"):
            continue
        line = normalize_text(_BRACKETED.sub(" ", line), numbers_to_words=numbers_to_words)
        if not line:
            if raw_line.strip() == "" and pending:
                _add_sentences(sentences, pending, paragraph)
                pending = ""
                paragraph += 1
            continue
        if pending and not pending.endswith((".", "!", "?", "…", ",", ";", ":", "-")) and pending[-1].isalnum() \
                and line[:1].isupper():
            # a line without closing punctuation followed by a capitalised one: a heading, its own sentence
            _add_sentences(sentences, pending, paragraph)
            pending = line
        else:
            pending = f"{pending} {line}".strip()
    return sentences


def _add_sentences(sentences: list[Sentence], text: str, paragraph: int) -> None:
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip()
        if piece and is_spoken_word(piece):
            sentences.append(Sentence(index=len(sentences), paragraph=paragraph, text=piece, words=piece.split()))


def is_spoken_word(word: str) -> bool:
    """A word the aligner times: it holds a letter or a digit."""
    return any(char.isalnum() for char in word)
