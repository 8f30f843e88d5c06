"""Markdown reports for `qwen-swe eval` and `qwen-swe compare`."""

from __future__ import annotations

from typing import Any, Optional


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) if not isinstance(cell, str) else cell.replace("|", "\\|") for cell in row)
              + " |" for row in rows]
    return lines


def render_eval_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation of `{report['model']}`", "", f"Created {report['created']} on {report['host']}.", "",
             "## Headline metrics", ""]
    lines += _table(["metric", "value"], [[k, v] for k, v in report["metrics"].items()])
    sources: dict = report.get("sources") or {}
    if sources:
        names = list(sources)
        lines += ["", "## Per source", "", "Each source's eval split alone (`METRIC@SOURCE` above); files under "
                  "`sources/<name>/`.", ""]
        keys = list(next(iter(sources.values()))["metrics"])
        lines += _table(["metric"] + names, [[key] + [sources[n]["metrics"].get(key) for n in names] for key in keys])
    heldout: Optional[dict] = report.get("heldout")
    if heldout:
        lines += ["", f"## Held-out teacher-forced loss (`{heldout['shards']}`, split {heldout['split']})", ""]
        keys = ["loss", "codebook0_loss", "sub_talker_loss", "codebook0_accuracy", "eos_accuracy",
                "sub_talker_accuracy", "frames", "samples"]
        lines += _table(["layout"] + keys, [[name] + [m[k] for k in keys] for name, m in heldout["layouts"].items()])
    synthesis: Optional[dict] = report.get("synthesis")
    if synthesis:
        sampling = ", ".join(f"{k}={v}" for k, v in report["sampling"].items())
        lines += ["", "## Synthesis", "",
                  f"Mode {synthesis['mode']} ({'streaming' if synthesis['streaming'] else 'non-streaming'}), "
                  f"voices {', '.join(synthesis['voices'])}; ASR {synthesis['asr'] or 'none (no WER/CER)'}; speaker "
                  f"embeddings from {synthesis['speaker_embedder'] or 'none'}.", "", f"Sampling: {sampling}.", ""]
        header = ["file", "voice", "text", "seconds", "frames", "EOS", "RMS dBFS", "peak", "silence", "similarity",
                  "duration ratio"] + (["transcript", "CER"] if synthesis["asr"] else [])
        rows = []
        for r in synthesis["files"]:
            row = [f"{r['index']:03d}", r["voice"], r["text"], r["seconds"], r["frames"],
                   "reached" if r["eos_reached"] else "CUT", r["rms_dbfs"], r["peak"], r["silence_rate"],
                   r["speaker_similarity"], r["duration_ratio"]]
            if synthesis["asr"]:
                row += [r.get("transcript", ""), r.get("file_cer")]
            rows.append(row)
        lines += _table(header, rows)
        lines += ["", "Audio is in `audio/`, references in `references/`, scalars and samples in `tb/`."]
    return "\n".join(lines) + "\n"


def render_comparison_markdown(comparison: dict[str, Any]) -> str:
    a, b = comparison["a"], comparison["b"]
    verdict = comparison["verdict"].upper()
    lines = [f"# Comparison: {verdict}", "", f"- A (current): `{a['model']}` ({a['eval']})",
             f"- B (candidate): `{b['model']}` ({b['eval']})", "",
             "B is promoted only if it is no worse than A on every gate (within the gate's tolerance).", ""]
    rows = []
    for gate in comparison["gates"]:
        tolerance = gate["tolerance"]
        if "tolerance_rule" in gate:
            tolerance = f"{tolerance:.4f} ({gate['tolerance_rule']})"
        rows.append([gate["metric"], gate["a"], gate["b"], gate["direction"], tolerance,
                     {True: "pass", False: "FAIL", None: "not measured"}[gate["passed"]]])
    lines += _table(["gate", "A", "B", "better", "tolerance", "result"], rows)
    others = comparison.get("other_metrics") or {}
    if others:
        lines += ["", "## Other metrics (not gated)", ""]
        lines += _table(["metric", "A", "B"], [[k, v["a"], v["b"]] for k, v in others.items()])
    lines += ["", "## Reasons", ""] + [f"- {reason}" for reason in comparison["reasons"]]
    return "\n".join(lines) + "\n"
