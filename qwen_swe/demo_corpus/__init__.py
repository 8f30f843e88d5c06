"""The embedded Swedish demo corpus: 24 utterances by 4 synthetic speakers (see tools/make_demo_corpus.sh)."""

from pathlib import Path

MANIFEST = Path(__file__).parent / "manifest.jsonl"
