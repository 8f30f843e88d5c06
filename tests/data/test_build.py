"""data/build.py (`qwen-swe shards build`): codes, x-vectors and ICL references that round trip, the prompt ids it
stores, resume and worker-count invariance byte for byte, the checks and their rejections, loudness, stereo folding,
seeded speaker-disjoint splits, and the command line. Tiny random-weight model, short clips, CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.data.build import (CRASH_ENV, BuildConfig, Candidate, Planned, assign_splits,
                                 build_shards, choose_references, sample_key)
from qwen_swe.data.encode import pad_to_frames
from qwen_swe.data.shard_format import INDEX_NAME
from qwen_swe.data.sources import AudioRef, SourceSpec
from qwen_swe.tiny import calibration_audio

from .building import TEXTS, make_config, read_split, swedish_layout, write_clip


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rejections(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejections.jsonl").read_text(encoding="utf-8").splitlines()]


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
