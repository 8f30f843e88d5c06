"""Long recordings made with espeak-ng and sox whose truth is known from how they were made: for the ingest tests
and tools/bench_ingest.py (as data/synthetic.py makes shards for the shard tests and benchmarks).

A recording is chapters of phrases: each phrase is synthesised on its own (espeak-ng command line, a voice, speed and
pitch per chapter that differ from the aligner's own plain "sv" at 175 words a minute), followed by a pause of a
chosen length (sox pad); chapters are separated by silence or by music-like noise (sox synth: a pluck chord with
pink noise). Where each phrase's speech begins and ends in the final file is measured on the phrase's own audio
(its first and last sample above -50 dBFS), so `Truth.speech` lists every interval a cut must not fall into and
`Truth.gaps` every interval between them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

RATE = 22050  # espeak-ng's own rate; sox converts the final file


@dataclass
class Phrase:
    text: str
    pause_after: float  # seconds of silence after the phrase
    ends_sentence: bool = True


@dataclass
class Chapter:
    phrases: list[Phrase]
    voice: str = "sv+f2"
    speed: int = 150
    pitch: int = 50
    then: str = "silence"  # what follows the chapter: "silence" or "music"
    then_seconds: float = 2.0
    spoken: bool = True  # False: in the transcript, but never read aloud


@dataclass
class Truth:
    speech: list[tuple[float, float]] = field(default_factory=list)  # every phrase's speech, seconds
    sentence_ends: list[float] = field(default_factory=list)  # end of speech of each sentence
    words: list[str] = field(default_factory=list)  # every spoken word, in order
    duration: float = 0.0

    def gaps(self) -> list[tuple[float, float]]:
        edges = [0.0] + [x for interval in self.speech for x in interval] + [self.duration]
        return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]


def require_tools() -> None:
    """The recordings need espeak-ng and sox: a missing one is an error, never a skip (setup_env.sh installs them)."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: run tools/setup_env.sh (apt-get install espeak-ng sox)")


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True)


def speech_span(samples: np.ndarray, threshold_db: float = -50.0) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(samples) > 10 ** (threshold_db / 20))
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, 0)


def make_recording(folder: Path, chapters: list[Chapter], name: str = "book.flac",
                   sox_output: tuple[str, ...] = ("-r", "44100", "-c", "2"),
                   noise_floor: float = 0.0, effects: tuple[str, ...] = ()) -> tuple[Path, Truth]:
    """The recording of `chapters` (the unspoken ones left out) as `name`; `noise_floor` mixes pink noise at that
    amplitude under all of it (a room, a tape); `effects` are sox effects applied last (e.g. "reverb", "40")."""
    require_tools()
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    truth = Truth()
    offset = 0
    for c, chapter in enumerate(chapters):
        if not chapter.spoken:
            continue
        for p, phrase in enumerate(chapter.phrases):
            raw, padded = folder / f"c{c}p{p}.wav", folder / f"c{c}p{p}-padded.wav"
            _run(["espeak-ng", "-v", chapter.voice, "-s", str(chapter.speed), "-p", str(chapter.pitch), "-w",
                  str(raw), phrase.text])
            _run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(padded), "pad", "0",
                  f"{phrase.pause_after}"])
            samples, rate = soundfile.read(str(padded), dtype="float32")
            assert rate == RATE
            first, last = speech_span(samples)
            truth.speech.append(((offset + first) / RATE, (offset + last) / RATE))
            truth.words += phrase.text.split()
            if phrase.ends_sentence:
                truth.sentence_ends.append((offset + last) / RATE)
            offset += len(samples)
            parts.append(padded)
        between = folder / f"c{c}-between.wav"
        if chapter.then == "music":
            # a plucked chord over quiet pink noise, with silence either side
            _run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(between), "synth",
                  str(chapter.then_seconds), "pluck", "C3", "pluck", "E3", "pinknoise", "vol", "0.3",
                  "pad", "0.5", "0.5"])
        else:
            _run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(between), "trim", "0",
                  str(chapter.then_seconds)])
        offset += soundfile.info(str(between)).frames
        parts.append(between)
    out = folder / name
    truth.duration = offset / RATE
    if noise_floor > 0:
        clean, noise = folder / "clean.wav", folder / "noise.wav"
        _run(["sox", *map(str, parts), str(clean)])
        _run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(noise), "synth", f"{truth.duration}",
              "pinknoise", "vol", f"{noise_floor}"])
        _run(["sox", "-m", "-v", "1", str(clean), "-v", "1", str(noise), *sox_output, str(out), *effects])
    else:
        _run(["sox", *map(str, parts), *sox_output, str(out), *effects])
    return out, truth


def write_text(path: Path, chapters: list[Chapter], heading_notes: bool = True) -> Path:
    """The transcript as a book would have it: a heading per chapter, paragraphs, a bracketed note (not spoken)."""
    lines = []
    for c, chapter in enumerate(chapters):
        if heading_notes and c == 0:
            lines += ["# Inläst för testerna; den här raden läses inte.", ""]
        sentences, current = [], ""
        for phrase in chapter.phrases:
            current = f"{current} {phrase.text}".strip()
            if phrase.ends_sentence:
                sentences.append(current)
                current = ""
        heading, body = sentences[0], sentences[1:]
        lines += [heading, ""]
        if heading_notes and c == 1:
            lines += ["[Illustration: en karta över skärgården]", ""]
        lines += [" ".join(body), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def book(wrong_paragraph: bool = False) -> list[Chapter]:
    """Six chapters, about two and a half minutes: six voices, speeds from 130 to 195 words a minute, pauses from
    0.3 to 1.5 s, sentences spoken as phrases with pauses at their commas (one longer than 8 s), silence and music
    between chapters. With `wrong_paragraph`, the text
    holds a fourth paragraph nobody reads."""
    def sentences(texts: list[str], pauses: list[float]) -> list[Phrase]:
        return [Phrase(text, pause) for text, pause in zip(texts, pauses)]

    one = sentences(["Kapitel ett.",
                     "Det var en gång en liten by vid havet.",
                     "Där bodde en fiskare som hette Anders.",
                     "Varje morgon rodde han ut på det stilla vattnet.",
                     "Hans fru stod på bryggan och vinkade.",
                     "På kvällarna lagade de mat tillsammans i det gamla köket.",
                     "Barnen lekte i sanden tills solen gick ner.",
                     "Ingen i byn kunde minnas en vackrare sommar."],
                    [1.0, 0.5, 0.8, 0.35, 1.2, 0.6, 0.4, 0.9])
    two = [Phrase("Kapitel två.", 0.9),
           Phrase("En dag kom en främling till byn.", 0.7),
           Phrase("Han bar en stor väska och en gammal hatt.", 0.45),
           Phrase("När han såg havet stannade han länge,", 0.55, ends_sentence=False),
           Phrase("och ingen visste vad han tänkte på.", 1.1),
           Phrase("Fiskaren bjöd honom på kaffe och nybakat bröd.", 0.5),
           Phrase("Främlingen berättade om städer långt borta.", 0.8),
           Phrase("Barnen lyssnade med stora ögon.", 0.4)]
    three = sentences(["Kapitel tre.",
                       "Hösten kom med blåst och regn.",
                       "Främlingen stannade kvar i byn hela vintern.",
                       "Han lärde sig att laga nät och att läsa vädret.",
                       "Till våren byggde han ett eget litet hus.",
                       "Så blev främlingen till slut en av dem."],
                      [0.8, 0.6, 1.3, 0.5, 0.7, 0.3])
    four = [Phrase("Kapitel fyra.", 1.5),
            Phrase("Många år senare,", 0.45, ends_sentence=False),
            Phrase("när barnen hade vuxit upp och flyttat till den stora staden,", 0.6, ends_sentence=False),
            Phrase("berättade de ofta om sommaren då främlingen kom.", 1.0),
            Phrase("Huset står kvar än i dag.", 0.8)]
    five = sentences(["Kapitel fem.",
                      "Vintern det året var den kallaste på länge.",
                      "Isen lade sig över hela viken redan i november.",
                      "Fiskarna kunde gå ut till öarna till fots.",
                      "Om kvällarna satt alla i byn vid elden och sjöng.",
                      "Främlingen spelade fiol och barnen dansade.",
                      "När våren kom smälte isen på en enda natt."],
                     [1.2, 0.7, 0.5, 0.9, 0.4, 1.0, 0.6])
    six = [Phrase("Kapitel sex.", 0.8),
           Phrase("Nu är främlingen gammal,", 0.5, ends_sentence=False),
           Phrase("men han sitter fortfarande på bryggan varje morgon.", 0.9),
           Phrase("Han tittar ut över havet och ler.", 0.6),
           Phrase("Ibland kommer barnbarnen och frågar om de gamla städerna.", 1.1),
           Phrase("Då berättar han, och ingen tröttnar på att lyssna.", 0.5)]
    chapters = [Chapter(one, voice="sv+f2", speed=150, pitch=60, then="music", then_seconds=3.0),
                Chapter(two, voice="sv+m3", speed=195, pitch=35, then="silence", then_seconds=2.5),
                Chapter(three, voice="sv+f4", speed=165, pitch=70, then="music", then_seconds=2.0),
                Chapter(four, voice="sv+m1", speed=130, pitch=45, then="silence", then_seconds=1.5),
                Chapter(five, voice="sv+f1", speed=140, pitch=55, then="music", then_seconds=2.5),
                Chapter(six, voice="sv+m2", speed=175, pitch=40, then="silence", then_seconds=1.0)]
    if wrong_paragraph:
        chapters.insert(2, Chapter(sentences(["Ett mellanspel.",
                                              "Denna text finns bara i boken och läses aldrig upp.",
                                              "Kungen av Frankrike åt sparris i trädgården varje tisdag."],
                                             [0.5, 0.5, 0.5]), spoken=False))
    return chapters
