"""Swedish transcript normalisation: one canonical spelling of the same words, so the text tokenizer sees one form.

What it does, in order:
1. Unicode NFC (a decomposed "å" = "a" + ring becomes the single code point the tokenizer knows);
2. invisible characters out (zero-width space, soft hyphen, byte-order mark), unusual spaces to plain spaces;
3. typographic quotes to plain ones (Swedish ” … ” and » … « become "…", ’ becomes '), dashes and the minus
   sign to "-", the ellipsis character to "...";
4. optionally numbers to Swedish words with num2words (21 -> "tjugoett", 3,5 -> "tre komma fem",
   21:a -> "tjugoförsta", 1999 -> "nittonhundranittionio", 25 % -> "tjugofem procent");
5. runs of whitespace collapsed to one space, ends stripped.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that render as nothing but change the token sequence.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
# Spaces other than U+0020; the narrow/no-break ones are also Swedish thousands separators (handled first).
_SPACES = dict.fromkeys(map(ord, "\u00a0\u202f\u2009\u2007\u2002\u2003\u2004\u2005\u2006\u2008\u200a\u3000"), " ")
_PUNCTUATION = {
    **dict.fromkeys(map(ord, "\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033\uff02"), '"'),
    **dict.fromkeys(map(ord, "\u2018\u2019\u201a\u201b\u2039\u203a\u2032\u00b4\uff07"), "'"),
    **dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-"),
    ord("\u2026"): "...",
}
_THOUSANDS = re.compile(r"(?<=\d)[\u00a0\u202f\u2009](?=\d{3}(?!\d))")
_ORDINAL = re.compile(r"\b(\d+):(a|e)\b")
_DECIMAL = re.compile(r"\b(\d+),(\d+)\b")
_PERCENT = re.compile(r"(\d) ?%")
_NEGATIVE = re.compile(r"(?<![\w-])-(?=\d)")
_INTEGER = re.compile(r"\b\d+\b")
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str, numbers_to_words: bool = False) -> str:
    """The canonical form of a Swedish transcript (see the module docstring); "" when nothing is left."""
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_INVISIBLE)
    if numbers_to_words:
        text = _THOUSANDS.sub("", text)  # "10 000" with a no-break space is one number, not two
    text = text.translate(_SPACES).translate(_PUNCTUATION)
    if numbers_to_words:
        text = spell_numbers(text)
    return _WHITESPACE.sub(" ", text).strip()


def spell_numbers(text: str) -> str:
    """Digits to Swedish words: ordinals (21:a), decimals with a comma, percentages, negatives, integers."""
    text = _ORDINAL.sub(lambda m: _ordinal(int(m.group(1))), text)
    text = _DECIMAL.sub(lambda m: f"{_cardinal(int(m.group(1)))} komma {_fraction(m.group(2))}", text)
    text = _PERCENT.sub(r"\1 procent", text)
    text = _NEGATIVE.sub("minus ", text)
    return _INTEGER.sub(lambda m: _cardinal(int(m.group(0))), text)


def _cardinal(number: int) -> str:
    from num2words import num2words

    if 1100 <= number <= 1999:
        # Swedish reads years and amounts in this range by hundreds: 1999 "nittonhundranittionio", 1500
        # "femtonhundra"; num2words would say "etttusen niohundranittionio".
        hundreds, rest = divmod(number, 100)
        return num2words(hundreds, lang="sv") + "hundra" + (num2words(rest, lang="sv") if rest else "")
    words = num2words(number, lang="sv")
    return words.replace("etttusen", "ettusen")  # num2words 0.5.14 triples the t


def _ordinal(number: int) -> str:
    from num2words import num2words

    return num2words(number, lang="sv", to="ordinal").replace("etttusen", "ettusen")


def _fraction(digits: str) -> str:
    """Decimals after the comma: leading zeros read one by one ("3,05" -> "tre komma noll fem")."""
    stripped = digits.lstrip("0")
    zeros = ["noll"] * (len(digits) - len(stripped))
    return " ".join(zeros + ([_cardinal(int(stripped))] if stripped else []))


def decode_transcript(data: bytes, origin: str) -> str:
    """UTF-8 (with or without a byte-order mark) to str; ValueError naming the file and the byte offset otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{origin}: not UTF-8 (byte {error.start}: {data[error.start:error.start + 1]!r}); "
                         "re-save the transcript as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from error
