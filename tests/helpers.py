"""Shared test helpers: load tiny models with Swedish registered, make random-but-valid samples, write eval reports."""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import torch

from qwen_swe.language import add_language_to_folder
from qwen_swe.layout import Sample

SWEDISH_TEXTS = [
    "Hej, välkommen till Göteborg!",
    "Vi åker till Malmö med tåget i morgon bitti.",
    "Älgen stod stilla i skogsbrynet och tittade på oss.",
    "Mormor bakade kanelbullar i lördags.",
]


def swedish_copy(model_dir: Path, out: Path) -> Path:
    """A copy of a model folder with 'swedish' registered (mean of the language rows)."""
    if not (out / "config.json").exists():
        shutil.copytree(model_dir, out)
        add_language_to_folder(out, "swedish")
    return out


@lru_cache(maxsize=None)
def _load(model_dir: str):
    from qwen_swe.modeling import load_model

    return load_model(model_dir)


def load_swedish_model(model_dir: Path):
    """The official wrapper around a Swedish-registered copy of `model_dir` (cached per folder, fp32, eval)."""
    target = Path(str(model_dir) + "-sv")
    swedish_copy(Path(model_dir), target)
    wrapper = _load(str(target))
    wrapper.model.eval()
    return wrapper


def fresh_swedish_model(model_dir: Path):
    """A new, independently trainable copy (qwen_tts models cannot be deep-copied: they hold dict_keys)."""
    from qwen_swe.modeling import load_model

    load_swedish_model(model_dir)
    return load_model(str(model_dir) + "-sv").model


def random_samples(model, count: int, seed: int, languages=("swedish", "auto", "german")) -> list[Sample]:
    """Valid samples with random codes and x-vectors (and an ICL reference each)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.talker_config.hidden_size
    samples = []
    for i in range(count):
        frames = int(torch.randint(4, 12, (1,), generator=generator))
        samples.append(Sample(
            key=f"random/{seed}/{i}",
            text=SWEDISH_TEXTS[i % len(SWEDISH_TEXTS)],
            codes=torch.randint(0, 2048, (frames, 16), generator=generator),
            language=languages[i % len(languages)],
            xvector=torch.randn(hidden, generator=generator),
            ref_text=SWEDISH_TEXTS[(i + 1) % len(SWEDISH_TEXTS)],
            ref_codes=torch.randint(0, 2048, (int(torch.randint(3, 9, (1,), generator=generator)), 16),
                                    generator=generator),
        ))
    return samples


def eval_report(model: str, **metrics) -> dict:
    base = {"heldout_loss": 2.0, "codebook0_accuracy": 0.3, "eos_accuracy": 0.9, "sub_talker_accuracy": 0.4,
            "wer": 0.2, "cer": 0.1, "speaker_similarity": 0.8, "duration_ratio": 1.0, "duration_error": 0.1,
            "silence_rate": 0.1, "eos_runaway_rate": 0.0}
    base.update(metrics)
    return {"model": model, "metrics": base, "sampling": {"seed": 0}, "heldout": {"split": "eval", "layouts": {}},
            "synthesis": {"sentences": ["Hej."], "references": [{"key": "k"}], "mode": "xvector",
                          "streaming": True, "asr": "asr", "speaker_embedder": "qwen3-tts speaker encoder"}}


def write_eval(folder: Path, report: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(report))
    return folder


def empty_micro_batch_in_the_middle_for(shards: Path, rank: int, world: int, seed: int = 0) -> str:
    """Damage the sample that `rank` meets as the first micro-batch of step 2 (one sample per micro-batch,
    accumulation 2, `world` ranks, epoch 0 of the smoke preset's pool); returns its key."""
    from qwen_swe.data.stream import ShardIndex, deal_to_rank, plan_epoch

    index = ShardIndex(shards, "train")
    plan = deal_to_rank(plan_epoch(index, seed, 0, 100000, 16, with_reference=False, max_samples=1), rank, world)
    ref = plan[2][0]
    shard = index.shards[ref.shard]
    entry = shard.entries[ref.entry]
    offset, size = entry["members"]["codes.npy"]
    data = bytearray(shard.path.read_bytes())
    data[offset + size - 1] ^= 0x01  # still a valid code; the checksum catches it
    shard.path.write_bytes(bytes(data))
    return entry["key"]
