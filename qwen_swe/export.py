"""Turn a training checkpoint into a Hugging Face folder that `qwen_tts.Qwen3TTSModel.from_pretrained` loads as is.

The way through:

1. `locate_checkpoint`: a run directory (its `latest` or `best` checkpoint) or one checkpoint directory; refuse an
   incomplete one (no COMPLETE marker: a save that died half way).
2. `train.checkpoint.trained_state_dict`: the fp32 weights of the trained module, whatever wrote them: accelerate's
   `model.safetensors` (one process, DDP) or DeepSpeed's ZeRO-2/3 partitions, consolidated with DeepSpeed's own
   `zero_to_fp32` (fp32 master weights, not the bf16 copies).
3. `rebuild_trained_model`: the run's base model folder, checked against the fingerprint the run recorded, goes
   through the same `prepare_model` as training (language row, LoRA wrapping) in fp32, takes the trained weights and
   merges LoRA adapters into the base weights (peft `merge_and_unload`).
4. `write_export`: weights as safetensors (bf16 like the releases, or fp32), `config.json` with `swedish` in
   `codec_language_id`, and the base folder's text tokenizer, `speech_tokenizer/`, preprocessor and generation
   configs, written into a temporary folder that is renamed into place only when complete.

Two modes:
- `base`: keeps the speaker encoder, so `generate_voice_clone(language="swedish")` clones any voice zero-shot;
- `custom-voice`: `tts_model_type` becomes `custom_voice` (qwen_tts builds no speaker encoder for it, so voice cloning
  is gone in this folder; export `base` too to keep it). Each training speaker gets a codec row holding the fp32 mean
  of its x-vectors over the training shards, at rows nobody uses: existing speakers are never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from .language import taken_rows
from .model_shapes import CODEBOOK_SIZE
from .fingerprints import model_fingerprint
from .train import checkpoint as ckpt
from .train.provenance import MANIFEST

WEIGHTS = "model.safetensors"
# Files of the base model folder an export does not copy (it writes its own weights, config and model card).
NOT_COPIED = ("model.safetensors", "model.safetensors.index.json", "config.json", "README.md")
MODES = ("base", "custom-voice")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class ExportError(ValueError):
    """A checkpoint or request that cannot be exported; the message says why and what to do."""


# ------------------------------------------------------------------------------------------ finding the checkpoint
@dataclass
class Source:
    run_dir: Path
    checkpoint: Path
    config: Any  # RunConfig
    manifest: dict[str, Any]
    state: dict[str, Any]  # trainer_state.json of the checkpoint


def locate_checkpoint(path: str | Path, which: str = "latest") -> tuple[Path, Path]:
    """(run directory, checkpoint directory) for a run directory or a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path}: not a directory; give a run directory or one of its checkpoints/step-* folders")
    if (path / "checkpoints").is_dir():
        run_dir = path
        if which == "best":
            name = ckpt.best_checkpoint(run_dir)
            if name is None:
                raise ExportError(f"{run_dir}: no best checkpoint recorded (the run had no held-out eval); "
                                  "use --which latest")
            checkpoint = ckpt.checkpoints_dir(run_dir) / name
        else:
            checkpoint = ckpt.find_latest(run_dir)
            if checkpoint is None:
                raise ExportError(f"{run_dir}: no complete checkpoint yet; train longer or check "
                                  f"`qwen-swe status {run_dir}`")
    else:
        checkpoint = path
        run_dir = path.parent.parent
    if not ckpt.is_complete(checkpoint):
        raise ExportError(f"{checkpoint}: incomplete checkpoint (no {ckpt.COMPLETE} marker: the save did not "
                          "finish); export a complete one, e.g. the run directory's latest")
    problems = ckpt.checkpoint_problems(checkpoint)
    if problems:
        raise ExportError(f"{checkpoint}: damaged checkpoint, its files are not as saved:\n  "
                          + "\n  ".join(problems)
                          + "\nexport an older checkpoint (checkpoints/step-*) or restore the file")
    if not (run_dir / "config.yaml").is_file() or not (run_dir / MANIFEST).is_file():
        raise ExportError(f"{run_dir}: config.yaml or {MANIFEST} missing; a checkpoint must stay inside its "
                          "run directory (run_dir/checkpoints/step-*)")
    return run_dir, checkpoint


def load_source(path: str | Path, which: str = "latest", base: Optional[str | Path] = None) -> Source:
    """The checkpoint with its run config, refusing a base model folder other than the one the run trained."""
    from .train.config import load_config

    run_dir, checkpoint = locate_checkpoint(path, which)
    config = load_config(run_dir / "config.yaml")
    manifest = ckpt.read_json(run_dir / MANIFEST)
    base_dir = Path(base) if base is not None else Path(config.model.path)
    if not base_dir.is_dir():
        raise ExportError(f"the run's base model folder {str(base_dir)!r} is missing: an export (and a LoRA adapter "
                          "above all) needs the weights it was trained on; pass --base DIR pointing at a copy")
    found = model_fingerprint(base_dir)
    if found != manifest.get("model_fingerprint"):
        raise ExportError(f"{base_dir} is not the base model this run trained (fingerprint {found}, the run recorded "
                          f"{manifest.get('model_fingerprint')}); pass --base with the original model folder")
    config.model.path = str(base_dir)
    state = ckpt.read_json(checkpoint / ckpt.STATE_FILE)
    return Source(run_dir=run_dir, checkpoint=checkpoint, config=config, manifest=manifest, state=state)


# ------------------------------------------------------------------------------------------ reading the weights
def rebuild_trained_model(source: Source, merge_lora: bool = True) -> tuple[Any, torch.nn.Module]:
    """(official wrapper of the base folder, trained network in fp32 with LoRA merged)."""
    from .modeling import load_model
    from .objective import TalkerObjective
    from .train.model_setup import prepare_model

    from .train.precision import FP32

    config = source.config
    config.train.gradient_checkpointing = False
    wrapper = load_model(config.model.path, attn_implementation="sdpa")
    # Export works in fp32 whatever the run trained in: bf16-pure weights would round the fp32 master weights.
    network, _ = prepare_model(wrapper.model, config, "cpu", precision=FP32)
    objective = TalkerObjective(network)
    trained = ckpt.trained_state_dict(source.checkpoint)
    expected = objective.state_dict()
    unexpected = sorted(set(trained) - set(expected))
    if unexpected:
        raise ExportError(f"{source.checkpoint}: weights {unexpected[:3]} (and {max(0, len(unexpected) - 3)} more) "
                          f"do not belong to the model the run config builds; was the run config edited?")
    # Checkpoints hold the weights that trained; the frozen ones are the base model's, loaded above.
    parameters = {name for name, parameter in objective.named_parameters() if parameter.requires_grad}
    missing = sorted(parameters - set(trained))
    if missing:
        raise ExportError(f"{source.checkpoint}: {len(missing)} weights are missing, e.g. {missing[:3]}; the "
                          "checkpoint is damaged")
    for name, tensor in trained.items():
        if tensor.shape != expected[name].shape:
            raise ExportError(f"{source.checkpoint}: {name} has shape {list(tensor.shape)}, the model expects "
                              f"{list(expected[name].shape)}")
    objective.load_state_dict(trained, strict=False)  # buffers absent from ZeRO partitions keep the base values
    network = objective.model
    if merge_lora and hasattr(network, "merge_and_unload"):
        network = network.merge_and_unload()
    return wrapper, network.float().eval()


# ------------------------------------------------------------------------------------------ custom-voice speakers
@dataclass
class SpeakerMean:
    name: str
    embedding: torch.Tensor  # fp32
    utterances: int


def speaker_means(shard_dir: str | Path | list[str | Path], split: str = "train",
                  wanted: Optional[Iterable[str]] = None, progress: bool = False) -> list[SpeakerMean]:
    """fp32 mean x-vector per speaker over one split of a shard folder (or of several: a mixture's sources, those
    without that split left out), read member by member (codes are skipped)."""
    from tqdm import tqdm

    from .data.shard_format import ShardReader
    from .data.stream import ShardIndex

    folders = shard_dir if isinstance(shard_dir, list) else [shard_dir]
    indexes = []
    for folder in folders:
        try:
            indexes.append(ShardIndex(folder, split))
        except ValueError:
            if len(folders) == 1:
                raise
    if not indexes:
        raise ExportError(f"no {split!r} split in {', '.join(map(str, folders))}: no speakers to make voices of")
    wanted_set = {w.lower() for w in wanted} if wanted else None
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    bar = tqdm(total=sum(index.num_samples for index in indexes), desc="speaker x-vectors", unit="utt",
               disable=not progress)
    with ShardReader() as reader:
        for shard in (shard for index in indexes for shard in index.shards):
            for entry in shard.entries:
                bar.update(1)
                speaker = str(reader.read_meta(shard.path, entry).get("speaker") or "").strip().lower()
                if not speaker or (wanted_set is not None and speaker not in wanted_set):
                    continue
                xvector = reader.read_array(shard.path, entry, "xvector.npy").astype(np.float64)
                sums[speaker] = sums.get(speaker, 0.0) + xvector
                counts[speaker] = counts.get(speaker, 0) + 1
    bar.close()
    if wanted_set is not None and wanted_set - set(sums):
        raise ExportError(f"speakers {sorted(wanted_set - set(sums))} have no utterances in the {split!r} split of "
                          f"{', '.join(map(str, folders))}; known speakers: {', '.join(sorted(sums)) or 'none'}")
    if not sums:
        raise ExportError(f"no utterance in the {split!r} split of {', '.join(map(str, folders))} names a speaker; "
                          "custom-voice export needs speaker names (shards build --speaker-column)")
    return [SpeakerMean(name=name, embedding=torch.from_numpy(sums[name] / counts[name]).float(),
                        utterances=counts[name]) for name in sorted(sums)]


def free_speaker_rows(talker_config: Any, count: int) -> list[int]:
    """`count` unused codec rows: after every row in use, then (if the band runs out) the gaps below."""
    taken = taken_rows(talker_config)
    vocab = int(talker_config.vocab_size)
    start = max(taken) + 1 if taken else CODEBOOK_SIZE
    candidates = list(range(start, vocab)) + [r for r in range(CODEBOOK_SIZE, start) if r not in taken]
    if len(candidates) < count:
        raise ExportError(f"only {len(candidates)} free codec rows are left for {count} speakers")
    return candidates[:count]


def voice_name(prefix: str, speaker: str) -> str:
    """The named voice a training speaker becomes (spk_id keys are lower case)."""
    return f"{prefix}{speaker}".lower()


def add_speakers(network: torch.nn.Module, speakers: list[SpeakerMean], prefix: str = "") -> dict[str, int]:
    """Write each speaker's mean x-vector into a free codec row and name it in spk_id; returns name -> row."""
    talker_config = network.config.talker_config
    existing = {k.lower() for k in dict(talker_config.spk_id or {})}
    names = [voice_name(prefix, s.name) for s in speakers]
    clashes = sorted(set(names) & existing)
    if clashes:
        raise ExportError(f"speakers {clashes} already exist in the model's spk_id; refusing to overwrite them; "
                          "pass --speaker-prefix (e.g. 'sv_') to name the new ones apart")
    rows = free_speaker_rows(talker_config, len(speakers))
    embedding = network.talker.get_input_embeddings().weight
    added = {}
    with torch.no_grad():
        for name, speaker, row in zip(names, speakers, rows):
            embedding[row] = speaker.embedding.to(embedding.dtype)
            added[name] = row
    talker_config.spk_id = {**dict(talker_config.spk_id or {}), **added}
    talker_config.spk_is_dialect = {**dict(talker_config.spk_is_dialect or {}), **{n: False for n in added}}
    return added


# ------------------------------------------------------------------------------------------ writing the folder
@dataclass
class ExportResult:
    out: Path
    mode: str
    dtype: str
    checkpoint: Path
    step: int
    language_row: int
    speakers: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "mode": self.mode, "dtype": self.dtype, "checkpoint": str(self.checkpoint),
                "step": self.step, "language_row": self.language_row, "speakers": self.speakers}


def export_config(base_dir: Path, network: torch.nn.Module, mode: str, dtype: str, provenance: dict) -> dict:
    """The base folder's config.json with the trained model's language and speaker tables (raw JSON: no
    save_pretrained, which would add fields the speaker encoder's constructor rejects)."""
    raw = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    talker = network.config.talker_config
    raw["talker_config"]["codec_language_id"] = {k: int(v) for k, v in dict(talker.codec_language_id).items()}
    raw["talker_config"]["spk_id"] = dict(talker.spk_id or {})
    raw["talker_config"]["spk_is_dialect"] = dict(talker.spk_is_dialect or {})
    if mode == "custom-voice":
        raw["tts_model_type"] = "custom_voice"
    raw["dtype"] = dtype
    notes = dict(getattr(network.config, "qwen_swe", None) or raw.get("qwen_swe") or {})
    notes["export"] = provenance
    raw["qwen_swe"] = notes
    return raw


def write_weights(network: torch.nn.Module, path: Path, dtype: torch.dtype, drop_prefixes: tuple[str, ...] = ()
                  ) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, tensor in network.state_dict().items():
        if name.startswith(drop_prefixes):
            continue
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.detach().contiguous().clone()  # clone: safetensors refuses shared storage
    save_file(tensors, str(path), metadata={"format": "pt"})


def copy_base_files(base_dir: Path, out: Path) -> None:
    """Tokenizer, speech tokenizer, preprocessor and generation configs: everything but weights and config."""
    for item in base_dir.iterdir():
        # weights (single or sharded) and config are written anew; the base's model card describes another model
        if item.name in NOT_COPIED or item.name.startswith("model-0"):
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)


def export(path: str | Path, out: str | Path, mode: str = "base", dtype: str = "bfloat16", which: str = "latest",
           base: Optional[str | Path] = None, speakers: Optional[list[str]] = None, speaker_prefix: str = "",
           eval_json: Optional[str | Path] = None, license_id: str = "apache-2.0", overwrite: bool = False,
           progress: bool = True) -> ExportResult:
    """Export one checkpoint to `out` (see the module doc)."""
    from .model_card import write_model_card

    if mode not in MODES:
        raise ExportError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; pass --overwrite to replace it")
    source = load_source(path, which, base)
    base_dir = Path(source.config.model.path)
    wrapper, network = rebuild_trained_model(source)
    languages = dict(network.config.talker_config.codec_language_id)
    language = source.config.model.language
    if language not in languages:
        raise ExportError(f"the trained model has no {language!r} language row; the run config names "
                          f"model.language={language!r}")
    added: dict[str, int] = {}
    sources: dict[str, str] = {}  # named voice -> the training speaker it was made from (for evaluation)
    if mode == "custom-voice":
        means = speaker_means(list(source.config.data.folders().values()), source.config.data.train_split, speakers,
                              progress)
        added = add_speakers(network, means, speaker_prefix)
        sources = {voice_name(speaker_prefix, mean.name): mean.name for mean in means}
    provenance = {
        "mode": mode, "dtype": dtype, "run_dir": str(source.run_dir.resolve()),
        "checkpoint": source.checkpoint.name, "step": int(source.state["step"]),
        "base_model": str(base_dir.resolve()), "base_fingerprint": source.manifest.get("model_fingerprint"),
        "train_mode": source.config.train.mode, "speakers_added": added, "speaker_sources": sources,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    copy_base_files(base_dir, tmp)
    config = export_config(base_dir, network, mode, dtype, provenance)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    drop = ("speaker_encoder.",) if mode == "custom-voice" else ()
    write_weights(network, tmp / WEIGHTS, DTYPES[dtype], drop)
    result = ExportResult(out=out, mode=mode, dtype=dtype, checkpoint=source.checkpoint,
                          step=int(source.state["step"]), language_row=int(languages[language]), speakers=added)
    write_model_card(tmp, source, result, eval_json, license_id)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return result


# ---------------------------------------------------------------------------------- model folders or checkpoints
def is_training_checkpoint(folder: str | Path) -> bool:
    """A run directory (has checkpoints/) or one of its checkpoints (has the COMPLETE marker)."""
    folder = Path(folder)
    return (folder / ckpt.COMPLETE).is_file() or ckpt.checkpoints_dir(folder).is_dir()


def check_exported_folder(folder: str | Path) -> Path:
    """A model folder `from_pretrained` loads; a training checkpoint or run directory is refused with the fix."""
    from .modeling import check_model_folder

    folder = Path(folder)
    if is_training_checkpoint(folder):
        raise ValueError(f"{folder}: this is a training checkpoint or run directory, not a model folder; run "
                         f"`qwen-swe export {folder} --out EXPORT_DIR` on it first and give EXPORT_DIR")
    return check_model_folder(folder)


def export_if_checkpoint(folder: str | Path, export_dir: str | Path, custom_voice: bool = False,
                         say: Any = print) -> Path:
    """`folder` itself when it is a model folder; a checkpoint or run directory is exported to `export_dir` first
    (fp32, base or custom-voice), and the exported folder is returned."""
    if not is_training_checkpoint(folder):
        return check_exported_folder(folder)
    say(f"{folder} is a training checkpoint: exporting it to {export_dir} first (as `qwen-swe export` does)")
    result = export(folder, export_dir, mode="custom-voice" if custom_voice else "base", dtype="float32",
                    overwrite=True, progress=False)
    return Path(result.out)
