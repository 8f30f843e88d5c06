"""Benchmark the streaming reader; prints one JSON object.

1. Throughput: samples/s and frames/s of qwen-swe's shard reader (decode, validate, lay out, collate) against a
   per-item loader shaped like the public fine-tune dataset (read a JSONL line with the codes as a list, tokenize the
   text, load the reference audio and compute its mel), on the same corpus in the same process. The demo corpus's
   train shard is listed --copies times in a derived index, so that an epoch is long enough to measure (and for
   loader workers to matter). The two loaders alternate for --rounds rounds (other work on the machine slows both
   alike); each figure is the median over rounds, and each speedup the median of the per-round ratios. The reader
   is measured in one process (no loader workers: the like-for-like comparison, since the per-item loader runs in
   one process too) and with --workers DataLoader workers as training runs it (`data.num_workers`), timed from the
   first batch on (workers start once per epoch, and a training epoch is hours long).
2. Padding efficiency (real frames / padded frames) of frame-budget bucketing against random fixed-size batches of
   8 and 32, on the corpus and on a synthetic RixVox-like length distribution (log-normal, median 8 s, 1-30 s),
   with shuffling kept (every epoch reshuffles shards, samples, pools and batches).

Usage: .venv/bin/python tools/bench_loader.py [--model DIR] [--rounds N] [--copies N] [--workers N]
(without --model a tiny random-weight model is made; the demo corpus is encoded into shards in a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_swe.data.stream import (ShardIndex, ShardInfo, ShardStream, StreamConfig, make_loader,  # noqa: E402
                                  plan_epoch)
from qwen_swe.layout import SequenceLayout  # noqa: E402
from qwen_swe.model_shapes import FRAME_RATE, SAMPLE_RATE  # noqa: E402
from qwen_swe.demo_corpus import MANIFEST as DEMO_MANIFEST  # noqa: E402


def build_shards(model: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "qwen_swe", "shards", "build", str(out), "--model", str(model),
                    "--manifest", str(DEMO_MANIFEST), "--eval-speakers", "1", "--min-seconds", "0.5"],
                   check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def public_style_jsonl(index: ShardIndex, out: Path) -> Path:
    """The prepared JSONL the public scripts train from: audio, text, ref_audio and the codes as nested lists."""
    from qwen_swe.data.stream import load_samples_by_key

    audio_of = {}
    for line in DEMO_MANIFEST.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        audio_of[entry["text"]] = str(DEMO_MANIFEST.parent / entry["audio"])
    keys = [e["key"] for s in index.shards for e in s.entries]
    with open(out, "w", encoding="utf-8") as handle:
        for sample in load_samples_by_key(index, keys):
            audio = audio_of.get(sample.text, next(iter(audio_of.values())))
            handle.write(json.dumps({"audio": audio, "text": sample.text, "ref_audio": audio,
                                     "audio_codes": sample.codes.tolist()}, ensure_ascii=False) + "\n")
    return out


def repeated_corpus(shards: Path, out: Path, copies: int) -> Path:
    """A shard folder whose train split lists the same train shards `copies` times (the tar files are shared)."""
    index = json.loads((shards / "index.json").read_text(encoding="utf-8"))
    index["splits"] = {"train": index["splits"]["train"] * copies}
    out.mkdir(parents=True, exist_ok=True)
    (out / "train").symlink_to((shards / "train").resolve(), target_is_directory=True)
    (out / "index.json").write_text(json.dumps(index), encoding="utf-8")
    return out


def per_item_loader(jsonl: Path, processor, passes: int) -> tuple[float, float, int]:
    """Items/s and frames/s of a map-style per-item loader as the public fine-tune dataset does it."""
    import librosa
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    lines = jsonl.read_text(encoding="utf-8").splitlines()
    started, items, frames = time.perf_counter(), 0, 0
    for _ in range(passes):
        for line in lines:
            item = json.loads(line)
            codes = torch.tensor(item["audio_codes"], dtype=torch.long)
            processor(text=f"<|im_start|>assistant\n{item['text']}<|im_end|>\n<|im_start|>assistant\n",
                      return_tensors="pt")
            wav, rate = librosa.load(item["ref_audio"], sr=None)
            if rate != SAMPLE_RATE:
                wav = librosa.resample(wav, orig_sr=rate, target_sr=SAMPLE_RATE)
            mel_spectrogram(torch.from_numpy(wav).unsqueeze(0), n_fft=1024, num_mels=128, sampling_rate=SAMPLE_RATE,
                            hop_size=256, win_size=1024, fmin=0, fmax=12000)
            items += 1
            frames += codes.shape[0]
    elapsed = time.perf_counter() - started
    return items / elapsed, frames / elapsed, items


READER_CONFIG = StreamConfig(frame_budget=2048, layouts={"streaming": 1.0, "non_streaming": 1.0, "icl": 1.0})


def stream_reader(index: ShardIndex, layout: SequenceLayout, epoch: int, workers: int = 0) -> tuple[float, float, int]:
    """Samples/s and frames/s of one epoch of the reader. In one process the clock covers everything (planning
    included); with loader workers it starts when the first batch arrives, so worker start-up is left out."""
    stream = ShardStream(index, layout, READER_CONFIG, epoch=epoch)
    started, items, frames = time.perf_counter(), 0, 0
    for number, batch in enumerate(make_loader(stream, num_workers=workers)):
        if workers and number == 0:
            started = time.perf_counter()
            continue
        items += len(batch.keys)
        frames += int(batch.sub_frames.shape[0])
    elapsed = time.perf_counter() - started
    return items / elapsed, frames / elapsed, items


def throughput(index: ShardIndex, layout: SequenceLayout, jsonl: Path, processor, rounds: int,
               workers: int) -> dict[str, object]:
    """The per-item loader and the reader (one process, then with workers), alternating round by round."""
    per_item, single, parallel = [], [], []
    for number in range(rounds):
        per_item.append(per_item_loader(jsonl, processor, 2))
        single.append(stream_reader(index, layout, epoch=number))
        if workers:
            parallel.append(stream_reader(index, layout, epoch=number, workers=workers))

    def summary(runs: list[tuple[float, float, int]]) -> dict[str, object]:
        return {"samples_per_s": round(statistics.median(r[0] for r in runs), 1),
                "frames_per_s": round(statistics.median(r[1] for r in runs), 1),
                "samples_per_round": runs[0][2], "samples_per_s_each_round": [round(r[0], 1) for r in runs]}

    def speedup(runs: list[tuple[float, float, int]]) -> float:
        return round(statistics.median(ours[0] / base[0] for ours, base in zip(runs, per_item)), 2)

    report: dict[str, object] = {
        "per_item_loader": summary(per_item),
        "stream_reader": {**summary(single), "num_workers": 0},
        "speedup_samples_per_s": speedup(single),
    }
    if workers:
        report["stream_reader_with_workers"] = {**summary(parallel), "num_workers": workers}
        report["speedup_with_workers_samples_per_s"] = speedup(parallel)
    report["compared"] = ("speedup_samples_per_s: the reader in one process, no loader workers, against the "
                          "per-item loader in one process (the goal); the with-workers speedup is the same reader "
                          "under DataLoader workers against that same one-process per-item loader")
    return report


class _Index:
    """A stand-in index for planning only: shards are lists of entries with frame counts."""

    def __init__(self, frames_per_shard: list[list[int]]):
        self.shards = [ShardInfo(path=Path("-"), entries=[{"frames": f, "ref_frames": 0} for f in frames])
                       for frames in frames_per_shard]


def padding_efficiency(batches: list[list[int]]) -> float:
    real = sum(sum(batch) for batch in batches)
    padded = sum(max(batch) * len(batch) for batch in batches)
    return real / padded


def bucketing_vs_random(frames_per_shard: list[list[int]], frame_budget: int, epochs: int = 2) -> dict[str, float]:
    index = _Index(frames_per_shard)
    bucketed = []
    for epoch in range(epochs):
        bucketed += [[r.cost for r in batch] for batch in plan_epoch(index, 0, epoch, frame_budget,
                                                                     with_reference=False)]
    flat = [f for shard in frames_per_shard for f in shard]
    result = {"bucketing": padding_efficiency(bucketed)}
    for size in (8, 32):
        rng, randoms = random.Random(0), []
        for _ in range(epochs):
            order = flat[:]
            rng.shuffle(order)
            randoms += [order[i:i + size] for i in range(0, len(order), size)]
        result[f"random_{size}"] = padding_efficiency(randoms)
    return {k: round(v, 4) for k, v in result.items()}


def rixvox_like(samples: int = 20000, per_shard: int = 1000, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(8.0), 0.6, samples), 1.0, 30.0)
    frames = np.round(seconds * FRAME_RATE).astype(int).tolist()
    return [frames[i:i + per_shard] for i in range(0, samples, per_shard)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurements of both loaders")
    parser.add_argument("--copies", type=int, default=50, help="times the train shard is listed per epoch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the with-workers figure "
                        "(training's data.num_workers default; 0 skips it)")
    args = parser.parse_args()
    from qwen_swe.modeling import load_model
    from qwen_swe.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from qwen_swe.language import add_language_to_folder

            model_dir = build_tiny_model(tmp / "model", shape="0.6b")
            add_language_to_folder(model_dir, "swedish")
        shards = build_shards(model_dir, tmp / "shards")
        wrapper = load_model(model_dir)
        layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
        index = ShardIndex(shards, "train")
        jsonl = public_style_jsonl(index, tmp / "prepared.jsonl")
        long_index = ShardIndex(repeated_corpus(shards, tmp / "repeated", args.copies), "train")
        torch.set_num_threads(1)
        per_item_loader(jsonl, wrapper.processor, 1)  # warm-up: first-call costs (numba, caches) for both sides
        stream_reader(long_index, layout, epoch=0)
        measured = throughput(long_index, layout, jsonl, wrapper.processor, args.rounds, args.workers)
        corpus = [[int(e["frames"]) for e in shard.entries] for shard in index.shards]
        report = {
            "benchmark": "loader",
            "corpus": {"samples": index.num_samples, "frames": sum(map(sum, corpus)),
                       "copies_per_reader_epoch": args.copies,
                       "stored_prompt_ids": index.tokenizer_fingerprint is not None},
            **measured,
            "padding_efficiency": {
                "demo_corpus_budget_512": bucketing_vs_random(corpus, 512),
                "rixvox_like_budget_2048": bucketing_vs_random(rixvox_like(), 2048),
                "rixvox_like_budget_4096": bucketing_vs_random(rixvox_like(), 4096),
            },
            "goals": {"speedup_samples_per_s": ">= 50", "rixvox_like_bucketing": ">= 0.97"},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
