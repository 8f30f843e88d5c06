"""The dataset report a build leaves next to its shards: report.md (hours per split and speaker, rejections by
reason, source sample rates) and durations.png (a histogram of clip durations per split).

Matplotlib is driven through its object API with the Agg canvas, so nothing global (the pyplot backend) changes in
the calling process, and the PNG bytes depend only on the data.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..files import write_bytes_atomic, write_text_atomic

REPORT_NAME = "report.md"
HISTOGRAM_NAME = "durations.png"


def write_report(out: Path, index: dict[str, Any], samples: Sequence[Any],
                 rejections: Sequence[dict[str, Any]]) -> None:
    """Write report.md and durations.png into `out`. `samples` are the builder's planned samples."""
    durations = {split: sorted(s.scan["seconds"] for s in samples if s.split == split) for split in index["splits"]}
    write_histogram(out / HISTOGRAM_NAME, durations)
    write_text_atomic(out / REPORT_NAME, render_report(index, rejections))


def render_report(index: dict[str, Any], rejections: Sequence[dict[str, Any]]) -> str:
    stats = index["stats"]
    lines = ["# Shard build report", "",
             f"Format `{index['format']}`, {index['num_code_groups']} code groups, x-vector size "
             f"{index['xvector_dim']}, codec precision {index['codec'].get('precision')}.", "",
             "## Splits", "",
             "| split | samples | hours | speakers | shards | band-limited | with ICL reference |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for split, shards in index["splits"].items():
        s = stats[split]
        lines.append(f"| {split} | {s['samples']} | {s['hours']:.3f} | {len(s['speakers'])} | {len(shards)} | "
                     f"{s['band_limited_samples']} | {s['with_reference']} |")
    lines += ["", f"![durations]({HISTOGRAM_NAME})", "", "## Hours per speaker", "",
              "| speaker | split | utterances | hours |", "|---|---|---:|---:|"]
    for split in index["splits"]:
        for name, entry in stats[split]["speakers"].items():
            lines.append(f"| {name} | {split} | {entry['samples']} | {entry['seconds'] / 3600.0:.4f} |")
    lines += ["", "## Source sample rates", "", "| split | rate (Hz) | samples |", "|---|---:|---:|"]
    for split in index["splits"]:
        for rate, count in stats[split]["original_rates"].items():
            lines.append(f"| {split} | {rate} | {count} |")
    counts = Counter(r["reason"] for r in rejections)
    lines += ["", "## Rejections", "", f"{len(rejections)} rejected; every one is listed with its source and "
              f"reason in `{index['rejections_file']}`.", ""]
    if counts:
        lines += ["| reason | count |", "|---|---:|"] + [f"| {r} | {n} |" for r, n in sorted(counts.items())]
    return "\n".join(lines) + "\n"


def write_histogram(path: Path, durations: dict[str, list[float]]) -> None:
    """A stacked histogram of durations (one-second bins) per split, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    longest = max((max(v) for v in durations.values() if v), default=1.0)
    bins = list(range(0, int(longest) + 2))
    names = [name for name, values in durations.items() if values]
    axes.hist([durations[name] for name in names], bins=bins, stacked=True, label=names)
    axes.set_xlabel("clip duration (s)")
    axes.set_ylabel("clips")
    axes.set_title("Durations per split")
    if names:
        axes.legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", metadata={"Software": None})
    write_bytes_atomic(path, png.getvalue())
