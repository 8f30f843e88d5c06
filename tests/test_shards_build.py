"""`qwen-swe shards build / inspect / verify`: every source kind, the checks and their rejections, codes that round
trip, batched == one-by-one encoding, resume and worker-count invariance byte for byte, speaker-disjoint splits,
and verify catching corrupted, truncated and missing shards. Tiny random-weight model, short clips, CPU."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.data.build import (CRASH_ENV, BuildConfig, Candidate, Planned, assign_splits, build_shards,
                                 choose_references, sample_key)
from qwen_swe.data.encode import Encoder, pad_to_frames, plan_batches
from qwen_swe.data.shard_format import INDEX_NAME, ShardReader
from qwen_swe.data.sources import AudioRef, Columns, SourceSpec, audio_from_array
from qwen_swe.data.text import decode_transcript, normalize_text
from qwen_swe.tiny import calibration_audio

DEMO = Path(__file__).resolve().parents[1] / "qwen_swe" / "demo_corpus"
TEXTS = ["Hej, välkommen till Göteborg!", "Vi åker till Malmö i morgon.", "Älgen stod stilla i skogen.",
         "Mormor bakade kanelbullar.", "Det regnade hela natten."]


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def encoder(tiny_06b):
    """The tiny model's codec and speaker encoder, loaded once; torch on one thread (2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Encoder(tiny_06b, device="cpu", precision="auto")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_subset(tmp_path_factory) -> Path:
    """8 demo utterances, 2 of each of the 4 speakers, as a manifest next to the demo audio."""
    lines = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = [entry for speaker in ("spk0", "spk1", "spk2", "spk3")
              for entry in [e for e in lines if e["speaker"] == speaker][:2]]
    folder = tmp_path_factory.mktemp("demo-subset")
    for entry in chosen:
        entry["audio"] = str(DEMO / entry["audio"])
        entry["domain"] = "demo"  # an extra field: kept as metadata
    manifest = folder / "subset.jsonl"
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in chosen), encoding="utf-8")
    return manifest


def make_config(out: Path, model: Path, sources: list[SourceSpec], **settings) -> BuildConfig:
    defaults = dict(samples_per_shard=2, eval_speakers=1, progress=False)
    return BuildConfig(out=str(out), model=str(model), sources=sources, **{**defaults, **settings})


@pytest.fixture(scope="module")
def reference_build(tmp_path_factory, tiny_06b, encoder, demo_subset) -> Path:
    """The demo subset built uninterrupted with one worker: the build the others are compared with."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    build_shards(make_config(out, tiny_06b, [SourceSpec("manifest", str(demo_subset))]), encoder=encoder,
                 say=lambda _: None)
    return out


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_split(folder: Path) -> dict[str, dict]:
    """key -> {meta, codes, xvector, ref_codes, split, shard} for every sample, read through the entry lists."""
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    samples = {}
    with ShardReader() as reader:
        for split, records in index["splits"].items():
            for record in records:
                entries = json.loads((folder / record["entries"]).read_text(encoding="utf-8"))
                for entry in entries:
                    sample = reader.read_sample(folder / record["path"], entry, index["xvector_dim"])
                    samples[entry["key"]] = {"meta": sample.meta, "codes": sample.codes, "xvector": sample.xvector,
                                             "ref_codes": sample.ref_codes, "split": split, "shard": record["path"]}
    return samples


def write_clip(path: Path, seconds: float = 1.3, rate: int = 24000, seed: int = 0, channels: int = 1,
               **kwargs) -> np.ndarray:
    wave = calibration_audio(seed, seconds * rate / 24000)  # speech-like; played at `rate`
    data = np.stack([wave, wave[::-1]], axis=1) if channels == 2 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate, **kwargs)
    return data


def rejections(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejections.jsonl").read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------------ text


def test_text_normalisation():
    decomposed = "a\u030angstro\u0308m"  # å and ö as base letter + combining mark
    assert normalize_text(decomposed) == "ångström"
    assert normalize_text("”Hej”, sa hon. »Kom!« – Han’s") == '"Hej", sa hon. "Kom!" - Han\'s'
    assert normalize_text("vänta — nu … eller\u2011inte") == "vänta - nu ... eller-inte"
    assert normalize_text("  Hej\u00a0\u00a0där \t\n  du\u200b ") == "Hej där du"
    assert normalize_text("Det är 21 grader") == "Det är 21 grader"  # digits stay unless asked
    assert normalize_text("Det är 21 grader", numbers_to_words=True) == "Det är tjugoett grader"
    spelled = normalize_text("1999 kom 3:e, 3,5 kg, 25 % och 10\u00a0000 kr, -5 grader, 1000 år",
                             numbers_to_words=True)
    assert spelled == ("nittonhundranittionio kom tredje, tre komma fem kg, tjugofem procent och tiotusen kr, "
                       "minus fem grader, ettusen år")
    assert normalize_text("MP3", numbers_to_words=True) == "MP3"  # digits inside words are not numbers
    assert normalize_text(" \u200b ") == ""
    assert decode_transcript("hej".encode("utf-8-sig"), "x.txt") == "hej"
    with pytest.raises(ValueError, match="x.txt: not UTF-8"):
        decode_transcript("ångest".encode("latin-1"), "x.txt")


# --------------------------------------------------------------------------------------------------- encoding


def test_batched_codes_equal_one_by_one(encoder):
    wavs = [calibration_audio(seed, seconds) for seed, seconds in enumerate((1.07, 2.31, 1.5, 0.96, 1.92))]
    batched = encoder.encode_codes(wavs)
    for wav, codes in zip(wavs, batched):
        alone = encoder.tokenizer.encode(pad_to_frames(wav, 1920), sr=24000).audio_codes[0].numpy()
        assert codes.dtype == np.int16 and codes.shape == (-(-len(wav) // 1920), 16)
        assert np.array_equal(codes, alone)
    # the budgeted batch planner changes nothing either
    assert all(np.array_equal(a, b) for a, b in zip(encoder.encode_batches(wavs, max_batch_seconds=3.0), batched))
    assert plan_batches([10, 30, 20, 30], 60) == [[1, 3], [2, 0]]


def test_audio_folding_matches_load_audio(tmp_path):
    from qwen_swe.data.audio import load_audio

    data = write_clip(tmp_path / "s.wav", rate=44100, channels=2)
    ours = audio_from_array(data, 44100, "s.wav").audio
    theirs = load_audio(tmp_path / "s.wav")
    assert ours.original_channels == theirs.original_channels == 2
    np.testing.assert_allclose(ours.samples, theirs.samples, atol=1e-4)  # wav stores 16-bit PCM


# --------------------------------------------------------------------------------------------- builds


def test_manifest_build_round_trips_codes_xvectors_and_references(reference_build, encoder, demo_subset):
    from qwen_swe.data.audio import load_audio

    samples = read_split(reference_build)
    assert len(samples) == 8
    by_source = {s["meta"]["source"]: (key, s) for key, s in samples.items()}
    manifest = [json.loads(line) for line in demo_subset.read_text(encoding="utf-8").splitlines()]
    for entry in manifest[:3]:
        key, sample = by_source[f"{demo_subset.parent.name}/{demo_subset.name}:{entry['audio']}"]
        audio = load_audio(entry["audio"]).samples
        direct = encoder.tokenizer.encode(pad_to_frames(audio, 1920), sr=24000).audio_codes[0].numpy()
        assert sample["codes"].dtype == np.int16 and np.array_equal(sample["codes"], direct)
        np.testing.assert_allclose(sample["xvector"], encoder.xvector(audio), atol=1e-6)
        meta = sample["meta"]
        assert meta["text"] == entry["text"] and meta["speaker"] == entry["speaker"]
        assert meta["extra"] == {"domain": "demo"} and meta["original_rate"] == 24000
        assert meta["band_limited"] is False and meta["frames"] == len(direct)
        reference = meta["reference"]  # the speaker's other utterance, in the same split
        assert reference["key"] != key and samples[reference["key"]]["meta"]["speaker"] == meta["speaker"]
        assert np.array_equal(sample["ref_codes"], samples[reference["key"]]["codes"])
        assert reference["text"] == samples[reference["key"]]["meta"]["text"]
    # speaker-disjoint eval
    index = json.loads((reference_build / INDEX_NAME).read_text(encoding="utf-8"))
    train = {s["meta"]["speaker"] for s in samples.values() if s["split"] == "train"}
    held = {s["meta"]["speaker"] for s in samples.values() if s["split"] == "eval"}
    assert len(held) == 1 and len(train) == 3 and not train & held
    assert all(s["shard"].startswith(s["split"] + "/") for s in samples.values())
    # the index: counts, hashes, fingerprints, versions
    assert index["xvector_dim"] == 64 and index["num_code_groups"] == 16
    assert [r["samples"] for r in index["splits"]["train"]] == [2, 2, 2]
    assert set(index["codec"]["fingerprint"]) == {"model.safetensors"}
    assert index["versions"]["webdataset"] and index["build"]["seed"] == 0
    assert "workers" not in index["build"]
    report = (reference_build / "report.md").read_text(encoding="utf-8")
    assert "| spk" in report and "durations.png" in report and (reference_build / "durations.png").exists()


def test_shards_load_in_the_streaming_reader(reference_build):
    from qwen_swe.data.stream import ShardIndex, load_samples_by_key

    index = ShardIndex(reference_build, "train")
    keys = [e["key"] for shard in index.shards for e in shard.entries]
    loaded = load_samples_by_key(index, keys)
    assert len(loaded) == 6 and all(s.ref_codes is not None and s.ref_text for s in loaded)


def test_every_built_sample_takes_the_readers_fast_json_path(reference_build):
    """The reader parses each sample's json with a typed msgspec decoder and falls back to field-by-field checks
    only when it refuses; what the builder writes must never need the slow path."""
    from qwen_swe.data.shard_format import _READER_FIELDS
    from qwen_swe.data.stream import ShardIndex

    with ShardReader() as reader:
        for split in ("train", "eval"):
            index = ShardIndex(reference_build, split)
            for shard in index.shards:
                for entry in shard.entries:
                    fields = _READER_FIELDS.decode(reader.read_member(shard.path, entry, "json"))
                    assert fields.text.strip() and fields.prompt_ids, entry["key"]


def swedish_layout(model_dir: Path):
    from qwen_swe.layout import SequenceLayout

    from .helpers import load_swedish_model

    wrapper = load_swedish_model(model_dir)  # the same tokenizer files as the model the shards were built with
    return SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)


def test_stored_prompt_ids_are_the_layouts_tokenization(reference_build, tiny_06b):
    from qwen_swe.data.stream import ShardIndex, load_samples_by_key
    from qwen_swe.layout import LAYOUTS, prompt_ids, reference_prompt, target_prompt

    index = ShardIndex(reference_build, "train")
    layout = swedish_layout(tiny_06b)
    assert index.tokenizer_fingerprint == layout.tokenizer_fingerprint is not None
    samples = load_samples_by_key(index, [e["key"] for shard in index.shards for e in shard.entries])
    for sample in samples:
        assert sample.prompt_ids.tolist() == prompt_ids(layout.tokenizer, target_prompt(sample.text))
        assert sample.ref_prompt_ids.tolist() == prompt_ids(layout.tokenizer, reference_prompt(sample.ref_text))
        from_text = dataclasses.replace(sample, prompt_ids=None, ref_prompt_ids=None, tokenizer_fingerprint=None)
        for name in LAYOUTS:
            stored, tokenized = layout.build(sample, name), layout.build(from_text, name)
            assert np.array_equal(stored.text_ids, tokenized.text_ids)
            assert np.array_equal(stored.labels, tokenized.labels)


def test_shards_from_another_tokenizer_are_refused_or_retokenized(reference_build, tiny_06b, tmp_path):
    from qwen_swe.data.stream import ShardIndex, ShardStream, StreamConfig

    layout = swedish_layout(tiny_06b)
    other = tmp_path / "other-tokenizer"
    shutil.copytree(reference_build, other)
    index = json.loads((other / INDEX_NAME).read_text(encoding="utf-8"))
    index["text_tokenizer"]["fingerprint"] = "0123456789abcdef"
    (other / INDEX_NAME).write_text(json.dumps(index), encoding="utf-8")
    config = StreamConfig(frame_budget=400, layouts={"icl": 1.0})
    with pytest.raises(ValueError, match="0123456789abcdef.*rebuild the shards with this model"):
        ShardStream(ShardIndex(other, "train"), layout, config)
    retokenized = list(ShardStream(ShardIndex(other, "train"), layout, dataclasses.replace(config, retokenize=True)))
    stored = list(ShardStream(ShardIndex(reference_build, "train"), layout, config))
    assert [b.keys for b in retokenized] == [b.keys for b in stored] and sum(len(b.keys) for b in stored) == 6
    assert all(torch.equal(a.text_ids, b.text_ids) for a, b in zip(retokenized, stored))


def test_shard_tar_headers_are_fixed(reference_build):
    with tarfile.open(reference_build / "train" / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "qwen-swe", 0o444)}
    assert [m.name.split(".", 1)[1] for m in members[:4]] == ["codes.npy", "json", "ref_codes.npy", "xvector.npy"]


def test_resumed_build_is_byte_identical(tmp_path, tiny_06b, encoder, demo_subset, reference_build, monkeypatch):
    out = tmp_path / "shards"
    config = make_config(out, tiny_06b, [SourceSpec("manifest", str(demo_subset))])
    monkeypatch.setenv(CRASH_ENV, "1")  # dies after encoding the first shard
    with pytest.raises(SystemExit) as stopped:
        build_shards(config, encoder=encoder, say=lambda _: None)
    assert stopped.value.code == 3 and not (out / INDEX_NAME).exists()
    original = demo_subset.read_text(encoding="utf-8")
    demo_subset.write_text(original.replace("Göteborg", "Stockholm"), encoding="utf-8")  # a transcript changed
    try:
        with pytest.raises(ValueError, match="sources changed since the interrupted build"):
            build_shards(config, encoder=encoder, say=lambda _: None)
    finally:
        demo_subset.write_text(original, encoding="utf-8")
    monkeypatch.setenv(CRASH_ENV, "4")  # encodes the other 3, writes one shard, dies
    with pytest.raises(SystemExit):
        build_shards(config, encoder=encoder, say=lambda _: None)
    assert (out / "train" / "train-000000.tar").exists() and not (out / "train" / "train-000001.tar").exists()
    monkeypatch.delenv(CRASH_ENV)
    summary = build_shards(config, encoder=encoder, say=lambda _: None)
    assert summary.resumed_shards == 1
    assert tree_bytes(out) == tree_bytes(reference_build)
    again = build_shards(config, encoder=encoder, say=lambda _: None)  # finished: nothing to do
    assert again.already_complete and tree_bytes(out) == tree_bytes(reference_build)
    with pytest.raises(ValueError, match="other settings"):
        build_shards(make_config(out, tiny_06b, config.sources, seed=1), encoder=encoder, say=lambda _: None)


def test_two_workers_give_the_same_bytes(tmp_path, tiny_06b, encoder, demo_subset, reference_build):
    out = tmp_path / "shards"
    build_shards(make_config(out, tiny_06b, [SourceSpec("manifest", str(demo_subset))], workers=2),
                 encoder=encoder, say=lambda _: None)
    assert tree_bytes(out) == tree_bytes(reference_build)


def test_hf_dataset_saved_to_disk_rixvox_like(tmp_path, tiny_06b, encoder):
    import io

    from datasets import Audio, Dataset

    def wav_bytes(seed: int, rate: int) -> bytes:
        buffer = io.BytesIO()
        soundfile.write(buffer, calibration_audio(seed, 1.2 * rate / 24000), rate, format="FLAC")
        return buffer.getvalue()

    rows = {"audio": [{"bytes": wav_bytes(i, 16000), "path": f"anf{i}.flac"} for i in range(3)],
            "text": TEXTS[:3], "speaker": ["Anna Andersson", "Anna Andersson", "Bo Berg"], "party": ["S", "S", "M"]}
    Dataset.from_dict(rows).cast_column("audio", Audio()).save_to_disk(str(tmp_path / "rixvox"))
    out = tmp_path / "shards"
    build_shards(make_config(out, tiny_06b, [SourceSpec("hf_disk", str(tmp_path / "rixvox"))], eval_speakers=0),
                 encoder=encoder, say=lambda _: None)
    samples = read_split(out)
    metas = sorted((s["meta"] for s in samples.values()), key=lambda m: m["source"])
    assert [m["source"] for m in metas] == [f"{tmp_path.name}/rixvox:anf{i}.flac" for i in range(3)]
    assert [m["speaker"] for m in metas] == rows["speaker"] and metas[0]["extra"] == {"party": "S"}
    assert all(m["original_rate"] == 16000 and m["band_limited"] for m in metas)
    assert metas[2]["reference"] is None  # Bo Berg has one utterance: no ICL reference
    assert metas[0]["reference"]["key"] in samples


def test_parquet_folder_common_voice_like(tmp_path, tiny_06b, encoder):
    from datasets import Dataset

    rows = {"audio": [{"array": calibration_audio(i, 1.2 * 2), "sampling_rate": 48000} for i in range(3)],
            "path": [f"common_voice_sv-SE_{i}.mp3" for i in range(3)],
            "sentence": ["Jag heter 21 år.", "Tåget går klockan 7.", "”Vad sa du?”"],
            "client_id": ["c1", "c2", "c2"], "up_votes": [2, 3, 4]}
    (tmp_path / "cv").mkdir()
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "cv" / "train-0000.parquet"))
    spec = SourceSpec("parquet", str(tmp_path / "cv"), cache_dir=str(tmp_path / "hf-cache"),
                      columns=Columns(text="sentence", speaker="client_id", id="path"))
    out = tmp_path / "shards"
    build_shards(make_config(out, tiny_06b, [spec], eval_speakers=0, numbers_to_words=True, samples_per_shard=10,
                             max_shard_bytes=15000), encoder=encoder, say=lambda _: None)
    records = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))["splits"]["train"]
    # one sample's tar is one 10 KiB record, two need two records (> 15000 bytes): the byte cap cut the shards
    assert [r["samples"] for r in records] == [1, 1, 1]
    assert all(r["bytes"] == 10240 == (out / r["path"]).stat().st_size for r in records)
    metas = {s["meta"]["source"].split(":", 1)[1]: s["meta"] for s in read_split(out).values()}
    first = metas["common_voice_sv-SE_0.mp3"]
    assert first["text"] == "Jag heter tjugoett år." and first["text_raw"] == "Jag heter 21 år."
    assert first["speaker"] == "c1" and first["extra"] == {"up_votes": 2} and first["original_rate"] == 48000
    assert metas["common_voice_sv-SE_2.mp3"]["text"] == '"Vad sa du?"'
    assert not first["band_limited"] and first["seconds"] == pytest.approx(1.2, abs=1e-3)


def test_folder_with_transcripts_and_tsv(tmp_path, tiny_06b, encoder):
    corpus = tmp_path / "corpus"
    write_clip(corpus / "alva" / "a1.flac", seed=1)
    write_clip(corpus / "alva" / "a2.ogg", seed=2, format="OGG", subtype="VORBIS")
    write_clip(corpus / "bertil" / "b1.mp3", seed=3, format="MP3")
    for name, text in (("alva/a1", TEXTS[0]), ("alva/a2", TEXTS[1]), ("bertil/b1", TEXTS[2])):
        (corpus / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    out = tmp_path / "from-folder"
    build_shards(make_config(out, tiny_06b, [SourceSpec("folder", str(corpus))], eval_speakers=0), encoder=encoder,
                 say=lambda _: None)
    metas = {s["meta"]["source"]: s["meta"] for s in read_split(out).values()}
    assert {m["speaker"] for m in metas.values()} == {"alva", "bertil"}
    assert metas[f"{tmp_path.name}/corpus:alva/a2.ogg"]["text"] == TEXTS[1]

    table = tmp_path / "list.tsv"
    rows = [("corpus/alva/a1.flac", TEXTS[0], "A"), ("corpus/alva/a2.ogg", TEXTS[1], "A"),
            ("corpus/bertil/b1.mp3", 'Han sa "nej"', "B")]
    table.write_text("path\ttext\tspeaker\n" + "".join(f"{p}\t{t}\t{s}\n" for p, t, s in rows), encoding="utf-8")
    out = tmp_path / "from-tsv"
    build_shards(make_config(out, tiny_06b, [SourceSpec("tsv", str(table))], eval_speakers=1), encoder=encoder,
                 say=lambda _: None)
    samples = read_split(out)
    assert sorted(s["meta"]["text"] for s in samples.values()) == sorted([TEXTS[0], TEXTS[1], 'Han sa "nej"'])
    assert len({s["meta"]["speaker"] for s in samples.values() if s["split"] == "eval"}) == 1


def test_bad_inputs_are_rejected_with_reasons(tmp_path, tiny_06b, encoder):
    clips = tmp_path / "clips"
    good = write_clip(clips / "good.wav", seed=5)
    soundfile.write(str(clips / "copy.wav"), good, 24000)  # the same audio again
    write_clip(clips / "stereo.wav", rate=48000, channels=2, seed=6)
    write_clip(clips / "narrow.flac", rate=8000, seed=7)
    (clips / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio at all")
    soundfile.write(str(clips / "empty.wav"), np.zeros(0, np.float32), 24000)
    soundfile.write(str(clips / "long.wav"), np.full(21 * 8000, 0.1, np.float32), 8000)
    write_clip(clips / "short.wav", seconds=0.5, seed=8)
    soundfile.write(str(clips / "clipped.wav"), np.sign(np.sin(np.arange(36000) / 30.0)).astype(np.float32), 24000)
    soundfile.write(str(clips / "quiet.wav"), 1e-4 * calibration_audio(9, 1.3), 24000)
    lines = [{"audio": f"clips/{name}.{ext}", "text": TEXTS[i % 5], "speaker": "s1" if i % 2 else "s2"}
             for i, (name, ext) in enumerate([("good", "wav"), ("copy", "wav"), ("stereo", "wav"), ("narrow", "flac"),
                                              ("broken", "wav"), ("empty", "wav"), ("long", "wav"), ("short", "wav"),
                                              ("clipped", "wav"), ("quiet", "wav"), ("missing", "wav")])]
    lines.append({"audio": "clips/good.wav", "text": "again", "speaker": "s1"})  # same source id as line 1
    lines.append({"audio": "clips/short.wav", "id": "no-text", "text": " \u200b "})
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines) + "{not json\n", encoding="utf-8")
    folder = tmp_path / "folder" / "s3"
    write_clip(folder / "latin1.wav", seed=10)
    (folder / "latin1.txt").write_bytes("Ångest på Öland".encode("latin-1"))
    write_clip(folder / "notext.wav", seed=11)
    (folder / "orphan.txt").write_text("Ingen ljudfil.", encoding="utf-8")

    out = tmp_path / "shards"
    build_shards(make_config(out, tiny_06b, [SourceSpec("manifest", str(manifest)),
                                             SourceSpec("folder", str(tmp_path / "folder"))], eval_speakers=0),
                 encoder=encoder, say=lambda _: None)
    found = {(r["source"].split(":", 1)[1], r["reason"]) for r in rejections(out)}
    assert found == {
        ("clips/broken.wav", "unreadable_audio"), ("clips/empty.wav", "empty_audio"),
        ("clips/long.wav", "too_long"), ("clips/short.wav", "too_short"), ("clips/clipped.wav", "clipping"),
        ("clips/quiet.wav", "silence"), ("clips/missing.wav", "missing_audio"), ("clips/good.wav", "duplicate_key"),
        ("no-text", "empty_text"), ("line14", "bad_record"), ("s3/latin1.wav", "bad_text_encoding"),
        ("s3/notext.wav", "missing_text"), ("s3/orphan.txt", "missing_audio"),
        (max(["clips/good.wav", "clips/copy.wav"], key=lambda name: sample_key(f"{tmp_path.name}/bad.jsonl:{name}")),
         "duplicate_audio"),  # the larger key of the two is the one dropped
    }
    assert all(r["detail"] and r["key"] for r in rejections(out))
    metas = {s["meta"]["source"].split(":", 1)[1]: s["meta"] for s in read_split(out).values()}
    assert len(metas) == 3  # one of good/copy, stereo, narrow
    assert metas["clips/stereo.wav"]["original_channels"] == 2 and metas["clips/stereo.wav"]["original_rate"] == 48000
    assert metas["clips/narrow.flac"]["band_limited"] is True and metas["clips/narrow.flac"]["original_rate"] == 8000
    index = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    assert index["rejections"]["duplicate_audio"] == 1 and sum(index["rejections"].values()) == 14
    assert "| clipping | 1 |" in (out / "report.md").read_text(encoding="utf-8")


def test_stereo_is_folded_to_mono_before_encoding(tmp_path, tiny_06b, encoder):
    data = write_clip(tmp_path / "src" / "st.wav", channels=2, seed=12)
    (tmp_path / "src" / "st.txt").write_text("Två kanaler blir en.", encoding="utf-8")
    out = tmp_path / "shards"
    build_shards(make_config(out, tiny_06b, [SourceSpec("folder", str(tmp_path / "src"), speaker="x")],
                             eval_speakers=0), encoder=encoder, say=lambda _: None)
    (sample,) = read_split(out).values()
    stored, _ = soundfile.read(str(tmp_path / "src" / "st.wav"), dtype="float32")
    mono = stored.mean(axis=1).astype(np.float32)
    assert data.shape[1] == 2 and sample["meta"]["original_channels"] == 2
    assert np.array_equal(sample["codes"], encoder.encode_codes([mono])[0])


def test_dataset_sources_without_a_build(tmp_path):
    """Path-string audio columns in a saved dataset, and an arrow file, read and decoded offline."""
    from datasets import Dataset

    from qwen_swe.data.audio import load_audio
    from qwen_swe.data.sources import decode_audio, read_source

    for i in range(2):
        write_clip(tmp_path / "wav" / f"{i}.wav", seed=30 + i, rate=22050)
    rows = {"audio": ["wav/0.wav", "wav/1.wav"], "text": TEXTS[:2], "speaker": ["a", "b"], "extra_id": [7, 8]}
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "paths"))
    spec = SourceSpec("hf_disk", str(tmp_path / "paths"), audio_root=str(tmp_path))
    items = list(read_source(spec))
    assert [i.source_id for i in items] == [f"{tmp_path.name}/paths:wav/{i}.wav" for i in range(2)]
    assert items[1].extra == {"extra_id": 8} and items[1].speaker == "b"
    decoded = decode_audio(items[0].audio)
    np.testing.assert_array_equal(decoded.audio.samples, load_audio(tmp_path / "wav" / "0.wav").samples)
    assert decoded.audio.original_rate == 22050

    arrow_file = next((tmp_path / "paths").glob("*.arrow"))
    arrow_items = list(read_source(SourceSpec("arrow", str(arrow_file), audio_root=str(tmp_path),
                                              cache_dir=str(tmp_path / "cache"),
                                              columns=Columns(id="extra_id"))))
    assert [i.source_id for i in arrow_items] == [f"paths/{arrow_file.name}:7", f"paths/{arrow_file.name}:8"]
    assert decode_audio(arrow_items[1].audio).audio.seconds == pytest.approx(1.3, abs=1e-3)
    with pytest.raises(ValueError, match="no column 'sentence' for --text-column"):
        list(read_source(SourceSpec("hf_disk", str(tmp_path / "paths"), columns=Columns(text="sentence"))))


def test_loudness_normalisation_and_levels(tmp_path):
    from qwen_swe.data.build import ScanSettings, dbfs, load_for_encoding, scan_one

    quiet = 0.05 * calibration_audio(40, 1.5) / 0.8
    soundfile.write(str(tmp_path / "q.wav"), quiet, 24000, subtype="FLOAT")
    settings = ScanSettings(1.0, 20.0, 0.001, -50.0, loudness_dbfs=-20.0, peak_dbfs=-1.0, frame_samples=1920)
    ref = AudioRef(path=str(tmp_path / "q.wav"))
    scan = scan_one(("k", ref), settings)
    assert scan["reason"] is None and scan["frames"] == -(-len(quiet) // 1920)
    louder = load_for_encoding(("k", ref, scan["gain_db"], scan["sha256"]))
    level = dbfs(float(np.sqrt(np.mean(louder.astype(np.float64) ** 2))))
    peak = dbfs(float(np.max(np.abs(louder))))
    # the target level, unless the peak ceiling stops it first
    assert (abs(level - -20.0) < 0.01 and peak <= -1.0 + 1e-3) or abs(peak - -1.0) < 1e-3
    kept = scan_one(("k", ref), ScanSettings(1.0, 20.0, 0.001, -50.0, None, -1.0, 1920))
    assert kept["gain_db"] is None and kept["sha256"] == scan["sha256"]  # the hash is of the source level


def test_device_names():
    from qwen_swe.data.encode import resolve_device, resolve_precision

    assert resolve_device("cpu") == "cpu"
    assert resolve_precision("auto", "cpu") == "float64" and resolve_precision("auto", "cuda:1") == "float32"
    with pytest.raises(ValueError, match="choose cpu, cuda or rocm"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU visible"):
            resolve_device("rocm")


# ------------------------------------------------------------------------------------------------------ splits


def _planned(speaker: str, index: int) -> Planned:
    key = f"{speaker}x{index}"
    candidate = Candidate(key=key, source_id=key, text="t", text_raw="t", speaker=speaker, language="swedish",
                          audio=AudioRef(path="x"), extra={})
    return Planned(candidate=candidate, scan={"frames": 10, "seconds": 1.0}, speaker=speaker)


def test_split_is_seeded_and_independent_of_input_order():
    import random

    def split_of(order_seed: int, **settings) -> dict[str, tuple[str, str | None]]:
        samples = [_planned(f"spk{s}", u) for s in range(10) for u in range(4)]
        random.Random(order_seed).shuffle(samples)
        config = BuildConfig(out="x", model="x", sources=[], seed=settings.pop("seed", 0), **settings)
        assign_splits(samples, config)
        choose_references(samples, seed=0)
        return {s.key: (s.split, s.reference) for s in samples}

    first = split_of(1, eval_speakers=3, eval_utterances_per_speaker=1)
    assert first == split_of(2, eval_speakers=3, eval_utterances_per_speaker=1)
    assert split_of(1, eval_speakers=3, seed=5) != split_of(1, eval_speakers=3)
    eval_speakers = {k.split("x")[0] for k, (split, _) in first.items() if split == "eval"}
    assert len(eval_speakers) == 10  # 3 whole speakers + one utterance of each of the other 7
    assert sum(1 for split, _ in first.values() if split == "eval") == 3 * 4 + 7
    for key, (split, reference) in first.items():
        assert reference != key and reference.split("x")[0] == key.split("x")[0]
        if split == "train":
            assert first[reference][0] == "train"  # never eval audio in a training sample
        # a held-out utterance of a training speaker, alone in eval, borrows a training utterance as reference
    fraction = split_of(3, eval_fraction=0.2)
    assert len({k.split("x")[0] for k, (split, _) in fraction.items() if split == "eval"}) == 2


# ------------------------------------------------------------------------------------------ inspect, verify, CLI


def test_inspect_prints_hours_and_speakers(reference_build):
    runner = CliRunner()
    text = runner.invoke(main, ["shards", "inspect", str(reference_build)])
    assert text.exit_code == 0, text.output
    assert "train" in text.output and "3 speakers" in text.output and " h " in text.output
    info = json.loads(runner.invoke(main, ["shards", "inspect", str(reference_build), "--json"]).output)
    assert info["splits"]["train"]["samples"] == 6 and info["splits"]["eval"]["speakers"] == 1
    assert info["splits"]["train"]["hours"] > 0.001


def test_verify_passes_and_names_corruption(reference_build, tmp_path):
    runner = CliRunner()
    good = runner.invoke(main, ["shards", "verify", str(reference_build), "--no-progress"])
    assert good.exit_code == 0 and "OK" in good.output, good.output

    corrupt = tmp_path / "corrupt"
    shutil.copytree(reference_build, corrupt)
    entries = json.loads((corrupt / "train" / "train-000001.entries.json").read_text(encoding="utf-8"))
    key = entries[1]["key"]
    offset, size = entries[1]["members"]["codes.npy"]
    tar_path = corrupt / "train" / "train-000001.tar"
    data = bytearray(tar_path.read_bytes())
    data[offset + size - 8:offset + size] = b"\xff" * 8  # codes become -1: outside the codebook
    tar_path.write_bytes(bytes(data))
    result = runner.invoke(main, ["shards", "verify", str(corrupt), "--no-progress"])
    assert result.exit_code == 1
    assert f"train/train-000001.tar key {key}" in result.output and "outside" in result.output
    assert "train/train-000001.tar: sha256 differs" in result.output

    truncated = tmp_path / "truncated"
    shutil.copytree(reference_build, truncated)
    tar_path = truncated / "train" / "train-000002.tar"
    tar_path.write_bytes(tar_path.read_bytes()[:1500])
    last_key = json.loads((truncated / "train" / "train-000002.entries.json").read_text())[-1]["key"]
    result = runner.invoke(main, ["shards", "verify", str(truncated), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 1 and not report["ok"]
    named = {(p["shard"], p["key"]) for p in report["problems"]}
    assert ("train/train-000002.tar", None) in named and ("train/train-000002.tar", last_key) in named

    missing = tmp_path / "missing"
    shutil.copytree(reference_build, missing)
    (missing / "eval" / "eval-000000.tar").unlink()
    result = runner.invoke(main, ["shards", "verify", str(missing), "--no-progress"])
    assert result.exit_code == 1 and "eval/eval-000000.tar: shard file is missing" in result.output


def test_cli_build_and_help(tmp_path, tiny_06b, encoder):
    from qwen_swe.data.audio import load_audio

    corpus = tmp_path / "nst"
    for i in range(2):
        write_clip(corpus / f"u{i}.wav", seed=20 + i)
        (corpus / f"u{i}.txt").write_text(TEXTS[i], encoding="utf-8")
    out = tmp_path / "shards"
    runner = CliRunner()
    result = runner.invoke(main, ["shards", "build", str(out), "--model", str(tiny_06b), "--folder", str(corpus),
                                  "--speaker", "nst", "--xvector-from", "speaker-reference", "--no-progress",
                                  "--max-shard-bytes", "1MB"])
    assert result.exit_code == 0, result.output
    assert "train 2 samples in 1 shard(s)" in result.output
    samples = read_split(out)
    for sample in samples.values():  # two clips: each one's x-vector comes from the other (its reference)
        meta = sample["meta"]
        assert meta["xvector_from"] == "reference" and meta["speaker"] == "nst"
        reference_audio = corpus / samples[meta["reference"]["key"]]["meta"]["source"].split(":", 1)[1]
        np.testing.assert_allclose(sample["xvector"], encoder.xvector(load_audio(reference_audio).samples), atol=1e-6)
    help_text = runner.invoke(main, ["shards", "build", "--help"]).output
    assert "RixVox" in help_text and "Common Voice" in help_text and "--speaker-column client_id" in help_text
