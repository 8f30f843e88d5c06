"""Byte sizes as the command line takes them: one parser, one meaning.

Sizes are binary, the way GPU vendors, nvidia-smi and the memory planner count memory: K, M, G and T are powers
of 1024, written with or without "B" or "iB", in any case. "32GB" = "32GiB" = "32g" = 32 * 2**30 bytes,
"256MB" = 256 * 2**20, "1.5GB" = 1.5 * 2**30 (decimals allowed; rounded down to whole bytes), and a bare number
is bytes ("1000000" = 10**6 bytes). Every option that takes a size (`shards build --max-shard-bytes`,
`plan --gpu-memory/--host-ram`) reads it with `parse_bytes`.
"""

from __future__ import annotations

import math
import re
from typing import Optional

KIB, MIB, GIB, TIB = 2**10, 2**20, 2**30, 2**40
MULTIPLIERS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
# The meaning in one sentence, for the --help text of every option that takes a size.
SIZE_HELP = "Binary units: K/M/G/T, with or without B/iB, are powers of 1024 (32GB = 32GiB); a bare number is bytes."

_SIZE = re.compile(r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)(?:(?P<unit>[kmgt])(?:i?b)?|b)?")


def parse_bytes(text: str, option: Optional[str] = None) -> int:
    """'32GB', '32GiB', '32g', '1.5GB', '512MiB', '4096' (bytes) -> bytes; see the module docstring.

    Raises ValueError naming `option` (e.g. '--gpu-memory') and an example when `text` is not a size.
    """
    value = str(text).strip().lower().replace(" ", "")
    match = _SIZE.fullmatch(value)
    number = float(match.group("number")) if match else math.inf
    if not math.isfinite(number):
        where = f"{option}: " if option else ""
        raise ValueError(f"{where}{text!r} is not a size; write e.g. 32GB (= 32GiB = 32 * 2^30 bytes), 1.5GB, "
                         "256MiB or a number of bytes")
    return int(number * MULTIPLIERS[match.group("unit") or ""])


__all__ = ["GIB", "KIB", "MIB", "SIZE_HELP", "TIB", "parse_bytes"]
