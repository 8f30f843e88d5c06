"""The bad-input catalogue: what a user sees for each kind of bad input, one row each.

Outcome classes (the README's "Bad input" table):
- refused: the command exits 1 with one message naming the field, file or sample and the fix; no traceback, and
  nothing is trained or written over;
- rejected: `shards build` leaves the item out and records it in rejections.jsonl with a reason code and a detail;
- skipped: training leaves the sample out of its batch, counts it and lists it under RUN_DIR/bad_samples/;
- stopped: training stops with its own exit code (4: more bad samples than data.max_bad_samples allows).

Each row: an id, what makes the input bad, the outcome class, and a fragment the message must hold. Rows run through
the `qwen-swe` command line in this process (`CliRunner`), on a tiny model and tiny corpora made here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import soundfile
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.tiny import calibration_audio

from .train.conftest import fresh_accelerate_state_reset

SWEDISH = ["Hej, välkommen till Göteborg!", "Vi åker till Malmö i morgon.", "Älgen stod stilla i skogen."]


@dataclass
class World:
    """What a row may use: a tiny model, good shards, a finished run with checkpoints, and a scratch folder."""

    model: Path
    shards: Path
    finished_run: Path
    scratch: Path

    def train(self, *overrides: str, resume: str | None = None) -> list[str]:
        return ["train", "--preset", "smoke", f"model.path={self.model}", f"data.shards={self.shards}",
                f"run.output_dir={self.scratch / 'run'}", "run.max_steps=2", "schedule.total_steps=2",
                "schedule.warmup_steps=0", "run.eval_every=0", "run.checkpoint_every=1", "run.tensorboard=false",
                "data.num_workers=0", "train.freeze=[text_embedding]", *overrides,
                *(["--resume", resume] if resume else [])]


def invoke(args: list[str]):
    fresh_accelerate_state_reset()
    try:
        return CliRunner().invoke(main, args)
    finally:
        fresh_accelerate_state_reset()


@pytest.fixture(scope="module")
def world(tiny_06b, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("catalogue")
    shards = synthetic_shards(root / "shards", shards=1, per_shard=6, eval_samples=0, with_reference=False)
    finished = World(tiny_06b, shards, root / "finished", root)
    result = invoke(finished.train(f"run.output_dir={root / 'finished'}"))
    assert result.exit_code == 0, result.output
    return finished


@pytest.fixture
def scratch_world(world, tmp_path) -> World:
    return World(world.model, world.shards, world.finished_run, tmp_path)


# ------------------------------------------------------------------------------------------------ refused

def copy_shards_without_a_file(w: World) -> list[str]:
    shards = w.scratch / "shards"
    shutil.copytree(w.shards, shards)
    (shards / "train" / "train-000000.tar").unlink()
    return [*w.train(), f"data.shards={shards}"]


def model_without_codec(w: World) -> list[str]:
    model = w.scratch / "model"
    shutil.copytree(w.model, model, ignore=shutil.ignore_patterns("speech_tokenizer"))
    corpus = w.scratch / "corpus"
    corpus.mkdir()
    soundfile.write(str(corpus / "u0.wav"), calibration_audio(1, 1.5), 24000)
    (corpus / "u0.txt").write_text(SWEDISH[0], encoding="utf-8")
    return ["shards", "build", str(w.scratch / "out"), "--model", str(model), "--folder", str(corpus), "--no-progress"]


def empty_manifest(w: World) -> list[str]:
    manifest = w.scratch / "empty.jsonl"
    manifest.write_text("", encoding="utf-8")
    return ["shards", "build", str(w.scratch / "out"), "--model", str(w.model), "--manifest", str(manifest),
            "--no-progress"]


def unknown_build_language(w: World) -> list[str]:
    return [*empty_manifest(w), "--language", "klingon"]


def truncated_checkpoint(w: World) -> list[str]:
    run = w.scratch / "run"
    shutil.copytree(w.finished_run, run)
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    weights = max((path for path in newest.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)
    weights.write_bytes(weights.read_bytes()[:100])
    return ["export", str(newest), "--out", str(w.scratch / "export")]


def malformed_yaml(w: World) -> list[str]:
    config = w.scratch / "run.yaml"
    config.write_text("optim:\n  lr: [1e-4\n", encoding="utf-8")
    return ["train", "--config", str(config)]


def output_dir_under_a_file(w: World) -> list[str]:
    (w.scratch / "a-file").write_text("", encoding="utf-8")
    return w.train(f"run.output_dir={w.scratch / 'a-file' / 'run'}")


def tune_with_space(text: str) -> Callable[[World], list[str]]:
    def make(w: World) -> list[str]:
        space = w.scratch / "space.yaml"
        space.write_text(text, encoding="utf-8")
        return ["tune", "--space", str(space), "--trials", "2", "--study-dir", str(w.scratch / "study"),
                *w.train()[1:], "run.eval_every=1"]

    return make


def ingest_args(w: World, *, text: bytes | None, audio: bytes | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """`qwen-swe ingest` of one recording made here (a real clip unless `audio` bytes are given)."""
    recording = w.scratch / "book.wav"
    if audio is None:
        soundfile.write(str(recording), calibration_audio(7, 2.0), 24000)
    else:
        recording.write_bytes(audio)
    args = ["ingest", str(w.scratch / "ingested"), "--audio", str(recording), "--no-progress", *extra]
    if text is not None:
        (w.scratch / "book.txt").write_bytes(text)
        args += ["--text", str(w.scratch / "book.txt")]
    return args


def ingest_manifest_without_audio(w: World) -> list[str]:
    (w.scratch / "recordings.jsonl").write_text('{"text": "book.txt"}\n', encoding="utf-8")
    return ["ingest", str(w.scratch / "ingested"), "--manifest", str(w.scratch / "recordings.jsonl")]


REFUSED: list[tuple[str, Callable[[World], list[str]], str]] = [
    ("missing model folder", lambda w: w.train(f"model.path={w.scratch / 'nowhere'}"), "model.path"),
    ("unknown config field", lambda w: w.train("optim.learning_rate=1e-4"), "optim.learning_rate"),
    ("negative learning rate", lambda w: w.train("optim.lr=-1"), "optim.lr"),
    ("unknown precision", lambda w: w.train("train.precision=fp8"), "train.precision"),
    ("malformed run config", malformed_yaml, "run.yaml"),
    ("shards folder without an index", lambda w: w.train(f"data.shards={w.scratch}"), "data.shards"),
    ("a shard file missing", copy_shards_without_a_file, "train-000000.tar: missing"),
    ("output folder cannot be created", output_dir_under_a_file, "run.output_dir: cannot create"),
    ("fresh start over another run's checkpoints",
     lambda w: [*w.train(), f"run.output_dir={w.finished_run}"], "holds checkpoints of an earlier run"),
    ("resume from a folder that is no checkpoint",
     lambda w: w.train(resume=str(w.scratch)), "not a complete checkpoint"),
    ("export of a checkpoint with a truncated file", truncated_checkpoint, ": 100 bytes, "),
    ("shard build with a model lacking its codec", model_without_codec, "missing speech_tokenizer/config.json"),
    ("shard build from an empty manifest", empty_manifest, "no utterance of manifest"),
    ("shard build in a language the model lacks", unknown_build_language, "qwen-swe add-language"),
    ("quality threshold on an unknown metric", lambda w: w.train("run.quality.every_evals=1",
                                                                 "run.quality.thresholds.werr=0.1"),
     "run.quality.thresholds.werr: unknown metric 'werr' (did you mean 'wer'?)"),
    ("quality gate on WER without an ASR folder", lambda w: w.train("run.quality.every_evals=1",
                                                                    "run.quality.thresholds.wer=0.15"),
     "run.quality.thresholds.wer: wer needs run.quality.asr"),
    ("quality loop with an ASR folder that is not there",
     lambda w: w.train("run.eval_every=1", "run.quality.every_evals=1", f"run.quality.asr={w.scratch / 'nowhere'}"),
     "run.quality.asr: "),
    ("search space naming an unknown field", tune_with_space("optim.lrr: {low: 1.0e-5, high: 1.0e-3}\n"),
     "optim.lrr: not a run-config field (did you mean 'optim.lr'?)"),
    ("search space reaching an invalid run config", tune_with_space("schedule.warmup_steps: {low: 0, high: 5}\n"),
     "schedule.warmup_steps=5: schedule.warmup_steps: must be < schedule.total_steps (2)"),
    ("ingest of a recording with no transcript", lambda w: ingest_args(w, text=None), "--whisper-model"),
    ("ingest of a transcript that is not UTF-8",
     lambda w: ingest_args(w, text="Hösten kom.".encode("latin-1")), "book.txt: not UTF-8"),
    ("ingest of a transcript with nothing spoken", lambda w: ingest_args(w, text=b"# notes only\n"),
     "book.txt: no spoken text"),
    ("ingest of audio that is not audio", lambda w: ingest_args(w, text=b"Hej.", audio=b"not audio" * 50),
     "book.wav: cannot decode audio"),
    ("ingest manifest line without audio", ingest_manifest_without_audio, "recordings.jsonl:1: needs a string field"),
]


@pytest.mark.parametrize("make_args, fragment", [row[1:] for row in REFUSED], ids=[row[0] for row in REFUSED])
def test_refused(scratch_world, make_args, fragment):
    before = sorted(path.name for path in scratch_world.finished_run.rglob("*"))
    result = invoke(make_args(scratch_world))
    assert result.exit_code == 1, result.output
    error = result.output[result.output.find("Error: "):]  # after any progress lines
    assert error.startswith("Error: ") and fragment in error, result.output
    assert "Traceback" not in result.output
    assert sorted(path.name for path in scratch_world.finished_run.rglob("*")) == before  # nothing written over


# ------------------------------------------------------------------------------------------------ rejected

def clip(folder: Path, name: str, seconds: float, seed: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(folder / name), calibration_audio(seed, seconds), 24000)
    return f"clips/{name}"


def truncated_wav(folder: Path) -> str:
    path = folder / clip(folder, "cut.wav", 2.9, 41).split("/")[1]
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * 0.3)])  # a copy that stopped at 30%
    return "clips/cut.wav"


def not_audio(folder: Path) -> str:
    (folder / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEnot audio at all")
    return "clips/broken.wav"


# (id, manifest line from the clips folder, reason code, detail fragment)
REJECTED: list[tuple[str, Callable[[Path], dict], str, str]] = [
    ("audio cut to 30% under its whole transcript",
     lambda c: {"audio": truncated_wav(c), "text": "Det här är en mening med trettiosex bokstäver."},
     "speaking_rate", "per second, outside 2-30"),
    ("an essay on a 3 s clip", lambda c: {"audio": clip(c, "essay.wav", 3.0, 42), "text": "Lång text. " * 500},
     "speaking_rate", "per second, outside 2-30"),
    ("emoji only", lambda c: {"audio": clip(c, "emoji.wav", 3.0, 43), "text": "\U0001F389\U0001F389 \U0001F600"},
     "no_letters", "letter"),
    ("a language the model lacks",
     lambda c: {"audio": clip(c, "klingon.wav", 3.0, 44), "text": SWEDISH[1], "language": "klingon"},
     "unknown_language", "'klingon' is not one of the model's"),
    ("audio that is not audio", lambda c: {"audio": not_audio(c), "text": SWEDISH[2]}, "unreadable_audio",
     "broken.wav"),
    ("a missing audio file", lambda c: {"audio": "clips/absent.wav", "text": SWEDISH[2]}, "missing_audio",
     "absent.wav"),
    ("a blank transcript", lambda c: {"audio": clip(c, "blank.wav", 2.0, 45), "text": " \u200b "}, "empty_text",
     "transcript is empty"),
]


@pytest.fixture(scope="module")
def rejections(world, tmp_path_factory) -> dict[str, dict]:
    """One build of a manifest holding one good line and every REJECTED row; source -> its rejection record (the
    row id for REJECTED rows)."""
    root = tmp_path_factory.mktemp("rejected")
    clips = root / "clips"
    rows = {row_id: make_line(clips) for row_id, make_line, _, _ in REJECTED}
    lines = [{"audio": clip(clips, "good.wav", 2.6, 40), "text": SWEDISH[0]}, *rows.values(), "{not json"]
    manifest = root / "corpus.jsonl"
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a byte-order mark, as Windows editors write
    result = invoke(["shards", "build", str(root / "shards"), "--model", str(world.model), "--manifest",
                     str(manifest), "--eval-speakers", "0", "--min-seconds", "0.5", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (root / "shards" / "rejections.jsonl").read_text().splitlines()]
    by_source = {record["source"].split(":", 1)[1]: record for record in records}
    index = json.loads((root / "shards" / "index.json").read_text())
    assert sum(shard["samples"] for split in index["splits"].values() for shard in split) == 1  # the good line
    return {**by_source, **{row_id: by_source.get(line["audio"]) for row_id, line in rows.items()}}


@pytest.mark.parametrize("row_id, reason, fragment", [(row[0], *row[2:]) for row in REJECTED],
                         ids=[row[0] for row in REJECTED])
def test_rejected(rejections, row_id, reason, fragment):
    record = rejections[row_id]
    assert record is not None, f"not rejected: {row_id}"
    assert record["reason"] == reason and fragment in record["detail"], record


def test_rejected_a_line_that_is_not_json_and_accepted_a_byte_order_mark(rejections):
    bad_records = [record for record in rejections.values() if record["reason"] == "bad_record"]
    assert len(bad_records) == 1 and "line" in bad_records[0]["source"]
    assert "clips/good.wav" not in rejections  # the first line, behind the byte-order mark


# ------------------------------------------------------------------------------------------------ skipped, stopped

def change_codes(shards: Path, keys: set[str]) -> None:
    """Change the last code of each key's codes in place to another code in range (0 <-> 7): it decodes fine."""
    tar = shards / "train" / "train-000000.tar"
    data = bytearray(tar.read_bytes())
    for entry in json.loads((shards / "train" / "train-000000.entries.json").read_text()):
        if entry["key"] in keys:
            offset, size = entry["members"]["codes.npy"]
            data[offset + size - 2:offset + size] = (0 if data[offset + size - 2] == 7 else 7).to_bytes(2, "little")
    tar.write_bytes(bytes(data))


TRAINING: list[tuple[str, int, list[str], str, int, str]] = [
    # (id, samples changed, overrides, outcome, exit code, fragment)
    ("bytes changed on disk that still decode", 1, ["data.max_bad_samples=0"], "skipped", 0,
     "changed since the shard was built"),
    ("more bad samples than the budget", 3, ["data.max_bad_samples=2"], "stopped", 4,
     "more than data.max_bad_samples=2 allows"),
]


@pytest.mark.parametrize("changed, overrides, outcome, code, fragment", [row[1:] for row in TRAINING],
                         ids=[row[0] for row in TRAINING])
def test_training_on_damaged_shards(scratch_world, changed, overrides, outcome, code, fragment):
    shards = scratch_world.scratch / "shards"
    shutil.copytree(scratch_world.shards, shards)
    keys = [entry["key"] for entry in json.loads((shards / "train" / "train-000000.entries.json").read_text())]
    change_codes(shards, set(keys[:changed]))
    run = scratch_world.scratch / "run"
    # one sample per step, every sample read in 6 steps
    result = invoke([*scratch_world.train("run.max_steps=6", "schedule.total_steps=6", "data.max_samples=1"),
                     f"data.shards={shards}", *overrides])
    assert result.exit_code == code, result.output
    listed = [json.loads(line) for line in (run / "bad_samples" / "rank0.jsonl").read_text().splitlines()]
    assert {bad["key"] for bad in listed} <= set(keys[:changed]) and listed
    if outcome == "skipped":
        assert all(fragment in bad["error"] for bad in listed), listed
        assert json.loads((run / "status.json").read_text())["bad_samples"] == changed
    else:
        status = json.loads((run / "status.json").read_text())
        assert status["health"] == "stopped: bad data" and fragment in status["message"], status
