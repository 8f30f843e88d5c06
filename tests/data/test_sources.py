"""data/sources.py: every source kind (HF dataset on disk, parquet, arrow, folder with transcripts, TSV) read and
built, and in-memory audio folded like files are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from qwen_swe.data.build import build_shards
from qwen_swe.data.shard_format import INDEX_NAME
from qwen_swe.data.sources import Columns, SourceSpec, audio_from_array
from qwen_swe.tiny import calibration_audio

from .building import TEXTS, make_config, read_split, write_clip


def test_audio_folding_matches_load_audio(tmp_path):
    from qwen_swe.data.audio import load_audio

    data = write_clip(tmp_path / "s.wav", rate=44100, channels=2)
    ours = audio_from_array(data, 44100, "s.wav").audio
    theirs = load_audio(tmp_path / "s.wav")
    assert ours.original_channels == theirs.original_channels == 2
    np.testing.assert_allclose(ours.samples, theirs.samples, atol=1e-4)  # wav stores 16-bit PCM


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
