"""Does scoring the sub-talker on a share of the frames slow learning? Held-out curves for shares 1, 1/4 and 1/16.

Builds the tiny random-weight model (0.6B layout, Swedish registered) and shards of the Swedish demo corpus (one
speaker held out), then trains it from the same start, once per share of frames (`objective.sub_talker_frames`),
with everything else equal, and scores the whole held-out split every `--eval-every` steps. The held-out numbers
always cover every frame, whatever share training drew.

Writes `OUT/learning_curves.json` (per share: step, training seconds (evals excluded), held-out codebook-0 and
sub-talker loss) and `OUT/learning_curves.png` (both losses against optimizer steps and against training time),
and prints one JSON object: per share the final and best held-out losses and the training seconds.

Wall-clock gains on the tiny model are not those of the released shapes (tools/bench_real_shape.py measures
those); what this shows is the loss reached per optimizer step.

    .venv/bin/python tools/learning_curves.py --out runs/curves              # 3 x 600 steps, about 10 min
    .venv/bin/python tools/learning_curves.py --out runs/curves --steps 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARES = (1.0, 0.25, 0.0625)


class Curve:
    """A trainer hook recording held-out losses against steps and training seconds (evals excluded)."""

    name = "learning curve"

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []
        self.started = self.eval_started = 0.0
        self.in_evals = 0.0

    def on_train_start(self, trainer: Any) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.eval_started = time.perf_counter()  # an eval, if due, runs between this and on_eval

    def on_eval(self, trainer: Any, results: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.in_evals += now - self.eval_started
        self.points.append({"step": trainer.step, "train_seconds": round(now - self.started - self.in_evals, 3),
                            "codebook0_loss": results["codebook0_loss"],
                            "sub_talker_loss": results["sub_talker_loss"], "loss": results["loss"]})

    def on_train_end(self, trainer: Any, exit_code: int) -> None:
        pass


def prepare(out: Path) -> tuple[Path, Path]:
    model, shards = out / "model", out / "shards"
    qwen_swe = [sys.executable, "-m", "qwen_swe"]
    if not model.exists():
        subprocess.run([*qwen_swe, "init-tiny", str(model), "--shape", "0.6b", "--with-swedish"], check=True,
                       cwd=ROOT, capture_output=True)
    if not shards.exists():
        subprocess.run([*qwen_swe, "shards", "build", str(shards), "--model", str(model), "--manifest",
                        str(ROOT / "qwen_swe" / "demo_corpus" / "manifest.jsonl"), "--eval-speakers", "1",
                        "--min-seconds", "0.5", "--samples-per-shard", "8", "--no-progress"], check=True, cwd=ROOT,
                       capture_output=True)
    return model, shards


def train(model: Path, shards: Path, run_dir: Path, share: float, args: argparse.Namespace) -> Curve:
    from accelerate.state import AcceleratorState

    from qwen_swe.train.config import load_config
    from qwen_swe.train.trainer import Trainer

    AcceleratorState._reset_state(reset_partial_state=True)
    config = load_config(None, "smoke", [
        f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}", f"run.max_steps={args.steps}",
        f"schedule.total_steps={args.steps}", "schedule.warmup_steps=20", f"optim.lr={args.lr}",
        f"run.eval_every={args.eval_every}", "run.eval_batches=1000", f"run.checkpoint_every={args.steps}",
        "run.keep_last=1", "run.tensorboard=false", "run.activation_stats_every=0", "data.frame_budget=384",
        "train.freeze=[text_embedding]", f"objective.sub_talker_frames={share}"])
    curve = Curve()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's progress lines; stdout is the one JSON object
        code = Trainer(config, hooks=[curve]).run()
    if code != 0:
        raise SystemExit(f"training with share {share} failed")
    return curve


def plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for share, points in curves.items():
        label = f"sub-talker on {float(share):g} of the frames"
        for row, metric in enumerate(("codebook0_loss", "sub_talker_loss")):
            for column, x in enumerate(("step", "train_seconds")):
                axes[row][column].plot([p[x] for p in points], [p[metric] for p in points], label=label)
                axes[row][column].set_xlabel("optimizer step" if x == "step" else "training seconds (evals excluded)")
                axes[row][column].set_ylabel(f"held-out {metric.replace('_', ' ')}")
    axes[0][0].legend()
    figure.suptitle("Tiny Qwen3-TTS on the Swedish demo corpus: held-out loss (every frame scored)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Folder for the model, shards, runs and results.")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, shards = prepare(args.out)
    curves: dict[str, list[dict[str, float]]] = {}
    for share in SHARES:
        run_dir = args.out / f"share-{share:g}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        curves[str(share)] = train(model, shards, run_dir, share, args).points
    (args.out / "learning_curves.json").write_text(json.dumps(curves, indent=1) + "\n", encoding="utf-8")
    plot(curves, args.out / "learning_curves.png")
    summary = {share: {"final": {k: round(points[-1][k], 4) for k in ("codebook0_loss", "sub_talker_loss")},
                       "best_sub_talker_loss": round(min(p["sub_talker_loss"] for p in points), 4),
                       "train_seconds": points[-1]["train_seconds"]}
               for share, points in curves.items()}
    print(json.dumps({"steps": args.steps, "lr": args.lr, "shares": summary,
                      "json": str(args.out / "learning_curves.json"), "png": str(args.out / "learning_curves.png")},
                     indent=2))


if __name__ == "__main__":
    main()
