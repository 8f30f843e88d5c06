"""Registering a new language (Swedish) as a codec row the talker can be conditioned on.

generate() conditions on a language by putting the row `talker_config.codec_language_id[name]` of the talker's codec
embedding into the prompt. Swedish is not one of the released languages, so it gets a row of its own: one that is
provably unused (not a code 0..2047, not a named special, not another language or speaker, inside the vocabulary).
The chosen row, how it was initialised and from what are recorded in `config.qwen_swe["languages"]` so the export
and the run manifest carry them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .files import write_text_atomic
from .model_shapes import CODEBOOK_SIZE

SPECIAL_FIELDS = (
    "codec_pad_id", "codec_bos_id", "codec_eos_token_id", "codec_think_id", "codec_nothink_id",
    "codec_think_bos_id", "codec_think_eos_id",
)


@dataclass
class LanguageRow:
    name: str
    row: int
    init: str  # "mean" (of the existing language rows) or "copy:<language>"
    source_rows: list[int]


def taken_rows(talker_config: Any) -> dict[int, str]:
    """Every codec row above the code range that the config gives a meaning, with that meaning."""
    taken: dict[int, str] = {}
    for name in SPECIAL_FIELDS:
        value = getattr(talker_config, name, None)
        if value is not None:
            taken[int(value)] = name
    for name, row in dict(talker_config.codec_language_id or {}).items():
        taken[int(row)] = f"language {name}"
    for name, row in dict(talker_config.spk_id or {}).items():
        rows = row if isinstance(row, (list, tuple)) else [row]
        for r in rows:
            taken[int(r)] = f"speaker {name}"
    return taken


def free_row_after_languages(talker_config: Any) -> int:
    """The first unused row after the highest language row: it sits in the language band, away from speakers."""
    taken = taken_rows(talker_config)
    languages = [int(r) for r in dict(talker_config.codec_language_id or {}).values()]
    start = (max(languages) + 1) if languages else CODEBOOK_SIZE
    for row in range(start, int(talker_config.vocab_size)):
        if row not in taken:
            return row
    raise ValueError("no free codec row is left after the language rows")


def check_row_is_free(talker_config: Any, row: int) -> None:
    vocab = int(talker_config.vocab_size)
    if row < CODEBOOK_SIZE:
        raise ValueError(f"codec row {row} is a code (0..{CODEBOOK_SIZE - 1}); pick a row in the special band")
    if row >= vocab:
        raise ValueError(f"codec row {row} is outside the codec vocabulary of {vocab} rows")
    taken = taken_rows(talker_config)
    if row in taken:
        raise ValueError(f"codec row {row} is already taken by {taken[row]}; refusing to reuse it")


def register_language(
    talker_config: Any, embedding: torch.Tensor, name: str, init: str = "mean", row: Optional[int] = None
) -> LanguageRow:
    """Pick (or check) the row, initialise `embedding[row]` in place and add `name` to codec_language_id.

    init: "mean" sets the row to the mean of the existing (non-dialect) language rows; "copy:german" (any known
    language) copies that language's row. Refuses a name that is already registered and a row that is taken.
    """
    name = name.lower().strip()
    if not name:
        raise ValueError("the language name is empty")
    languages = dict(talker_config.codec_language_id or {})
    if name in {k.lower() for k in languages}:
        raise ValueError(f"language {name!r} is already registered at codec row {languages[name]}")
    if row is None:
        row = free_row_after_languages(talker_config)
    check_row_is_free(talker_config, row)
    if init == "mean":
        source_rows = sorted(int(r) for k, r in languages.items() if "dialect" not in k)
        if not source_rows:
            raise ValueError("init 'mean' needs at least one existing language row; use init 'copy:<language>'")
    elif init.startswith("copy:"):
        source = init.split(":", 1)[1].lower()
        if source not in languages:
            raise ValueError(f"cannot copy language {source!r}: known languages are {', '.join(sorted(languages))}")
        source_rows = [int(languages[source])]
    else:
        raise ValueError(f"unknown init {init!r}: use 'mean' or 'copy:<language>'")
    with torch.no_grad():
        embedding[row] = embedding[source_rows].float().mean(0).to(embedding.dtype)
    languages[name] = int(row)
    talker_config.codec_language_id = languages
    return LanguageRow(name=name, row=int(row), init=init, source_rows=source_rows)


def _note(notes: Optional[dict], record: LanguageRow) -> dict:
    notes = dict(notes or {})
    notes.setdefault("languages", {})[record.name] = asdict(record)
    return notes


def add_language(model: Any, name: str = "swedish", init: str = "mean", row: Optional[int] = None) -> LanguageRow:
    """Register `name` on a loaded `Qwen3TTSForConditionalGeneration`, in place."""
    embedding = model.talker.get_input_embeddings().weight
    record = register_language(model.config.talker_config, embedding.data, name, init=init, row=row)
    # generate() validates against this list, which the model computed from the config when it was built.
    supported = getattr(model, "supported_languages", None)
    if isinstance(supported, list) and record.name not in supported:
        supported.append(record.name)
    model.config.qwen_swe = _note(getattr(model.config, "qwen_swe", None), record)
    return record


EMBEDDING_KEY = "talker.model.codec_embedding.weight"


def add_language_to_folder(
    model_dir: str | Path, name: str = "swedish", init: str = "mean", row: Optional[int] = None
) -> LanguageRow:
    """Register `name` in a model folder in place: config.json and the one safetensors file holding the row."""
    from safetensors.torch import load_file, save_file

    from .modeling import load_model_config

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    config = load_model_config(model_dir)
    index = model_dir / "model.safetensors.index.json"
    weights = model_dir / (json.loads(index.read_text())["weight_map"][EMBEDDING_KEY] if index.exists()
                           else "model.safetensors")
    tensors = load_file(str(weights))
    if EMBEDDING_KEY not in tensors:
        raise ValueError(f"{weights}: no tensor {EMBEDDING_KEY}; is this a Qwen3-TTS model folder?")
    record = register_language(config.talker_config, tensors[EMBEDDING_KEY], name, init=init, row=row)
    raw["talker_config"]["codec_language_id"] = dict(config.talker_config.codec_language_id)
    raw["qwen_swe"] = _note(raw.get("qwen_swe"), record)
    # Each file is written beside its original and renamed into place, weights first: a crash leaves every file
    # whole (old or new).
    config_text = json.dumps(raw, indent=2, ensure_ascii=False) + "\n"
    tmp_weights = weights.with_suffix(".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": "pt"})  # safetensors writes the file itself
    os.replace(tmp_weights, weights)
    write_text_atomic(config_path, config_text)
    return record
