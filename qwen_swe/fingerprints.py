"""Fingerprints of files: what shard builds record (what codes, x-vectors and stored prompt ids were made with) and
what a run manifest records (the base model a run trains).

Light at import (hashlib and pathlib only): verify, inspect and the builder's resume check use it without loading a
model. The values are stored in users' index.json files, so how they are computed never changes.

The fingerprints the project keeps, and why they differ:
- `weight_fingerprints(folder)` (here): sha256 of every weight file in a folder, per file name. A shard build records
  it for the model and for its speech_tokenizer/ codec under index.json's `build.fingerprints`: codes and x-vectors
  are only valid for the exact weights that made them, and a per-file record says which file changed.
- `text_tokenizer_fingerprints(folder)` (here): sha256 of each text tokenizer file, recorded by the same build next to
  the weights: a changed tokenizer file changes the build's identity, so a resumed build refuses to mix shards.
- `file_sha256(path)` (here): one file's sha256; index.json records it for every tar and entry list, and
  `qwen-swe shards verify` compares them.
- `layout.tokenizer_fingerprint(tokenizer)`: a 16-digit digest of the loaded tokenizer's full definition (vocabulary,
  merges, added tokens, normalisation) plus the two prompt templates. index.json records it under `text_tokenizer`
  and the reader compares it with the training model's tokenizer: it protects the stored prompt ids themselves, so it
  must not depend on file bytes (two folders with equivalent tokenizers agree) and must change when a template does.
  It stays in layout.py, next to the templates, because it needs a loaded tokenizer.
- `model_fingerprint(model_dir)` (here): one 16-digit digest of config.json and the model*.safetensors
  files, recorded in a run's run_manifest.json; a resume compares it to refuse continuing from another base model. One
  digest is enough there: the question is only "the same model or not".
- `ShardIndex.fingerprint` (data/stream.py) and the manifest's `shards_fingerprint`: a digest of the shard paths,
  tar hashes and sample counts, which pins the data plan a resumed run continues.
- `build_fingerprint` (data/build.py): sha256 of a build's settings and the fingerprints above; an unfinished build
  resumes only under the same one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
TEXT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                        "special_tokens_map.json")


def _add_file(digest: "hashlib._Hash", path: str | Path, chunk: int = 1 << 22) -> None:
    """Feed a file's bytes to `digest`, a chunk at a time."""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    _add_file(digest, path)
    return digest.hexdigest()


def weight_fingerprints(folder: str | Path) -> dict[str, str]:
    """sha256 of every weight file directly in `folder` (by file name): what the codes and x-vectors depend on."""
    folder = Path(folder)
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES}


def text_tokenizer_fingerprints(folder: str | Path) -> dict[str, str]:
    """sha256 of the text tokenizer's files in a model folder: what the shards' stored prompt ids depend on."""
    folder = Path(folder)
    return {name: file_sha256(folder / name) for name in TEXT_TOKENIZER_FILES if (folder / name).is_file()}


def model_fingerprint(model_dir: str | Path) -> str:
    """One 16-digit digest of a model folder's config.json and model*.safetensors (names and bytes): the base model
    a run trains, recorded in run_manifest.json and checked by resume and export."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted([model_dir / "config.json", *model_dir.glob("model*.safetensors")]):
        digest.update(path.name.encode())
        _add_file(digest, path)
    return digest.hexdigest()[:16]
