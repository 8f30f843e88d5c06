"""Synthesising the transcript with espeak-ng, in-process, with the start time of every word.

The aligner needs a reference rendering of the text whose word timing is known. espeak-ng's library reports a WORD
event (character position, audio position) for every word it speaks; the command-line program does not, so the
library (libespeak-ng.so.1, installed with the espeak-ng package) is driven through ctypes, the way aeneas drives it
from C. A sentence takes a few milliseconds. espeak-ng keeps global state, and a rendering depends slightly on what
was rendered before it in the process: align.py renders each recording in a fresh process, so runs repeat exactly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Rendering:
    samples: np.ndarray  # float32 mono at `rate`
    rate: int
    word_starts: list[tuple[int, float]]  # (character offset in the text, seconds) per spoken word, in order


class Synthesiser:
    """espeak-ng with one voice; `render(text)` -> Rendering."""

    def __init__(self, voice: str = "sv", words_per_minute: int = 175):
        library_name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self._lib = ctypes.CDLL(library_name)
        except OSError as error:
            raise ValueError(f"cannot load the espeak-ng library ({library_name}): install espeak-ng "
                             "(apt-get install espeak-ng; tools/setup_env.sh does it)") from error
        self.rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0))
        if self.rate <= 0:
            raise ValueError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: espeak-ng calls it later
        self._lib.espeak_SetSynthCallback(self._callback)
        if self._lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r} (list them with `espeak-ng --voices=sv`)")
        self._lib.espeak_SetParameter(1, int(words_per_minute), 0)  # espeakRATE, absolute
        self.voice = voice

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), count: int, events: ctypes.POINTER(_Event)) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._events.append((events[i].text_position - 1, events[i].sample))
            i += 1
        return 0

    def render(self, text: str) -> Rendering:
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        buffer = ctypes.create_string_buffer(data)
        status = self._lib.espeak_Synth(buffer, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise ValueError(f"espeak-ng could not synthesise {text[:60]!r} (status {status})")
        samples = (np.concatenate(self._chunks).astype(np.float32) / 32768.0 if self._chunks
                   else np.zeros(0, np.float32))
        starts = [(position, sample / self.rate) for position, sample in self._events]
        return Rendering(samples=samples, rate=self.rate, word_starts=starts)
