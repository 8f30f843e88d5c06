"""Writing files so that a reader never sees half of one: write a hidden sibling, then rename it into place.

A crash (or kill -9) leaves either the old file or the new one; `os.replace` is atomic within one filesystem. The
temporary name carries the process id, so two processes writing the same path never share a temporary file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload: Any, *, sort_keys: bool = True) -> None:
    """JSON with two-space indents and a final newline; keys sorted unless the order means something."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")
