"""`qwen-swe compare A B`: gate a candidate model (B) against the current one (A) on the same metrics.

`compare_models` is the whole command: evaluate model folders, compare, record in the registry, write
comparison.json and comparison.md. `compare_reports` is the verdict on two eval reports alone.

B is promoted only if, on every gate, it is no worse than A beyond the gate's tolerance (lower-is-better metrics:
B <= A + tolerance; higher-is-better: B >= A - tolerance). A tolerance is absolute (`cer=0.01`) or a share of A's
value (`heldout_loss@english=2%`). A gate `METRIC@SOURCE` is the metric on one corpus of an evaluation run with
`--source` (e.g. `heldout_loss@english`: no worse than the base model on the English held-out set); it takes the
metric's direction and, unless given its own, the metric's tolerance.

Anything that makes the comparison unfair keeps A: a gate measured on one side only, a gate named explicitly but
measured on neither, or evaluations run on different sentences, references, held-out shards, sources or sampling
settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .evaluation import EVAL_JSON, HIGHER_IS_BETTER, LOWER_IS_BETTER, EvalConfig

DEFAULT_GATES = ("heldout_loss", "cer", "speaker_similarity", "eos_runaway_rate")
# Absolute tolerances: about the run-to-run noise of each metric on the built-in sentence set.
DEFAULT_TOLERANCES = {"heldout_loss": 0.02, "wer": 0.02, "cer": 0.01, "speaker_similarity": 0.02,
                      "eos_runaway_rate": 0.0, "silence_rate": 0.02, "duration_error": 0.05,
                      "codebook0_accuracy": 0.005, "eos_accuracy": 0.01, "sub_talker_accuracy": 0.005}
GATEABLE = LOWER_IS_BETTER + HIGHER_IS_BETTER


def base_metric(gate: str) -> str:
    """"heldout_loss@english" -> "heldout_loss"."""
    return gate.split("@", 1)[0]


def load_eval(path: str | Path) -> tuple[dict[str, Any], Path]:
    """An eval.json, or a folder holding one (what `qwen-swe eval --out` wrote)."""
    path = Path(path)
    file = path / EVAL_JSON if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path}: no {EVAL_JSON} here; run `qwen-swe eval MODEL --out {path}` first, or give "
                         "model folders together with --shards so compare evaluates them")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    if "metrics" not in report or "model" not in report:
        raise ValueError(f"{file}: not an eval report (no 'metrics'/'model'); was it written by qwen-swe eval?")
    return report, file


def parse_gates(text: Optional[str]) -> Optional[list[str]]:
    if not text:
        return None
    gates = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in gates if base_metric(g) not in GATEABLE or g.endswith("@")]
    if unknown:
        raise ValueError(f"unknown gate(s) {', '.join(unknown)}; choose from {', '.join(GATEABLE)}, each optionally "
                         "for one source of the evaluation (METRIC@SOURCE, e.g. heldout_loss@english)")
    return gates


def parse_tolerances(items: Sequence[str]) -> dict[str, float | str]:
    """['cer=0.02', 'heldout_loss@english=2%'] -> {'cer': 0.02, 'heldout_loss@english': '2%'} over the defaults."""
    tolerances: dict[str, float | str] = dict(DEFAULT_TOLERANCES)
    for item in items:
        name, _, value = item.partition("=")
        value = value.strip()
        try:
            number = float(value[:-1] if value.endswith("%") else value)
        except ValueError:
            number = -1.0
        if base_metric(name) not in GATEABLE or number < 0:
            raise ValueError(f"--tolerance {item!r}: write METRIC=VALUE (absolute, e.g. cer=0.02) or METRIC=P% (a "
                             f"share of A's value, e.g. heldout_loss@english=2%) with METRIC one of "
                             f"{', '.join(GATEABLE)}, optionally @SOURCE")
        tolerances[name] = value if value.endswith("%") else number
    return tolerances


def allowed_difference(tolerance: float | str, value_a: float) -> float:
    """How much worse than A a gate lets B be: an absolute amount, or "P%" of A's value."""
    if isinstance(tolerance, str) and tolerance.endswith("%"):
        return abs(value_a) * float(tolerance[:-1]) / 100.0
    return float(tolerance)


def _setup(report: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for two evaluations to be comparable."""
    synthesis = report.get("synthesis") or {}
    heldout = report.get("heldout") or {}
    sampling = dict(report.get("sampling") or {})
    return {
        "sentences": synthesis.get("sentences"),
        "references": [r.get("key") for r in synthesis.get("references") or []],
        "mode": synthesis.get("mode"),
        "streaming": synthesis.get("streaming"),
        "asr": synthesis.get("asr"),
        "speaker_embedder": None if synthesis.get("speaker_embedder") is None else
        ("own" if str(synthesis.get("speaker_embedder")).startswith("qwen3-tts") else synthesis.get("speaker_embedder")),
        "sampling": sampling,
        "heldout_split": [heldout.get("split"), sorted((heldout.get("layouts") or {}))] if heldout else None,
        # the corpora evaluated one by one, each with the held-out speakers it was voiced in
        "sources": {name: [r.get("key") for r in (part.get("synthesis") or {}).get("references") or []]
                    for name, part in sorted((report.get("sources") or {}).items())},
    }


def compare_reports(a: dict[str, Any], b: dict[str, Any], gates: Optional[Sequence[str]] = None,
                    tolerances: Optional[dict[str, float]] = None, allow_mismatch: bool = False,
                    a_path: str = "", b_path: str = "") -> dict[str, Any]:
    """The verdict ("promote" or "keep") with one row per gate and the reasons."""
    tolerances = tolerances or dict(DEFAULT_TOLERANCES)
    explicit = gates is not None
    gates = list(gates) if explicit else list(DEFAULT_GATES)
    reasons: list[str] = []
    rows = []
    for metric in gates:
        value_a, value_b = a["metrics"].get(metric), b["metrics"].get(metric)
        lower = base_metric(metric) in LOWER_IS_BETTER
        rule = tolerances.get(metric, tolerances.get(base_metric(metric), 0.0))
        tolerance = allowed_difference(rule, value_a) if value_a is not None else 0.0
        row = {"metric": metric, "a": value_a, "b": value_b, "direction": "lower" if lower else "higher",
               "tolerance": tolerance, "passed": None}
        if isinstance(rule, str):
            row["tolerance_rule"] = f"{rule} of A"
        if value_a is None and value_b is None:
            if explicit:
                reasons.append(f"{metric}: measured on neither side, so B cannot be shown to be no worse")
        elif value_a is None or value_b is None:
            reasons.append(f"{metric}: measured only for {'B' if value_a is None else 'A'}; evaluate both the same "
                           "way")
        else:
            row["passed"] = value_b <= value_a + tolerance if lower else value_b >= value_a - tolerance
            if not row["passed"]:
                reasons.append(f"{metric}: B {value_b:.4f} is worse than A {value_a:.4f} by more than {tolerance:.4g}"
                               + (f" ({row['tolerance_rule']})" if "tolerance_rule" in row else ""))
        rows.append(row)
    if not any(row["passed"] is not None for row in rows):
        reasons.append("no gate was measured on both sides")
    setup_a, setup_b = _setup(a), _setup(b)
    differences = [key for key in setup_a if setup_a[key] != setup_b[key]]
    blocking = bool(reasons)
    if differences:
        message = f"the evaluations differ in {', '.join(differences)}: their numbers do not compare"
        reasons.append(message + (" (allowed by --allow-mismatch)" if allow_mismatch else
                                  "; evaluate both with the same settings or pass --allow-mismatch"))
        blocking = blocking or not allow_mismatch
    verdict = "keep" if blocking else "promote"
    if verdict == "promote":
        reasons.append("B is no worse than A on every gate")
    others = {k: {"a": a["metrics"].get(k), "b": b["metrics"].get(k)}
              for k in sorted(set(a["metrics"]) | set(b["metrics"])) if k not in gates}
    return {"verdict": verdict, "gates": rows, "reasons": reasons, "other_metrics": others,
            "a": {"model": a["model"], "eval": a_path}, "b": {"model": b["model"], "eval": b_path}}


def is_model_folder(path: str | Path) -> bool:
    """A model folder to evaluate (config.json, no eval.json), as opposed to an eval.json or an eval output folder."""
    folder = Path(path)
    return folder.is_dir() and not (folder / EVAL_JSON).exists() and (folder / "config.json").exists()


def default_eval_config(model_dir: str, out: str) -> EvalConfig:
    """`qwen-swe eval`'s defaults: named speakers for a custom_voice model, x-vector cloning otherwise."""
    from .synth import default_mode

    return EvalConfig(model=model_dir, out=out, mode=default_mode(model_dir))


def compare_models(a: str | Path, b: str | Path, *, out: Optional[str | Path] = None,
                   gates: Optional[Sequence[str]] = None, tolerances: Optional[dict[str, float]] = None,
                   allow_mismatch: bool = False, registry: Optional[str | Path] = None,
                   eval_config: Callable[[str, str], EvalConfig] = default_eval_config,
                   say: Callable[[str], None] = print) -> tuple[dict[str, Any], Path]:
    """Compare B (candidate) with A (current) and write comparison.json and comparison.md.

    A and B are eval.json files, eval output folders, or model folders; a model folder is evaluated into OUT/a or
    OUT/b with `eval_config(model_dir, out_dir)` (the same settings for both), so it needs `out`. With `registry`,
    the verdict is recorded there (A becomes current on first use; on promote B becomes current, A previous).
    The comparison goes to `out`, default: next to B's eval.json. Returns the comparison and that folder.
    Raises ValueError on anything the caller can fix (missing eval, model folder without `out`, bad report).
    """
    from .evaluation import run_evaluation
    from .report import render_comparison_markdown

    def report_for(path: str | Path, name: str) -> tuple[dict[str, Any], Path]:
        folder = Path(path)
        if is_model_folder(folder):
            if not out:
                raise ValueError(f"{path} is a model folder: give --out so compare can evaluate it into {{out}}/{name}")
            folder = Path(out) / name
            run_evaluation(eval_config(str(path), str(folder)), say=say)
        return load_eval(folder)

    report_a, file_a = report_for(a, "a")
    report_b, file_b = report_for(b, "b")
    comparison = compare_reports(report_a, report_b, gates=gates, tolerances=tolerances,
                                 allow_mismatch=allow_mismatch, a_path=str(file_a), b_path=str(file_b))
    if registry:
        from .registry import entry, record_comparison

        record_comparison(registry, entry(report_a["model"], str(file_a), report_a["metrics"]),
                          entry(report_b["model"], str(file_b), report_b["metrics"]), comparison["verdict"])
        comparison["registry"] = str(Path(registry).resolve())
    target = Path(out) if out else file_b.parent
    target.mkdir(parents=True, exist_ok=True)
    (target / "comparison.json").write_text(json.dumps(comparison, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    (target / "comparison.md").write_text(render_comparison_markdown(comparison), encoding="utf-8")
    return comparison, target
