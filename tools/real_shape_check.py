"""The whole job at the released sizes, on this machine: train, export, load and speak Swedish.

For the 0.6B shape (full fine-tune) and the 1.7B shape (LoRA), with random weights at the released widths, every
layer and the released vocabularies (stored in bf16 like the releases; the codec is the small test codec, which
does not change what training holds), this:
1. writes the model folder and registers Swedish (`qwen-swe add-language`);
2. trains `--steps` optimizer steps with `qwen-swe train` on synthetic shards (x-vectors of the released size), in
   fp32 with 8-bit AdamW for the full fine-tune (bf16 matmuls are tens of times slower than fp32 on CPUs without
   native bf16: `qwen-swe env` measures it) and plain AdamW for LoRA, and a checkpoint at the end;
3. exports the run (`qwen-swe export`), loads the folder with `Qwen3TTSModel.from_pretrained` and generates a
   Swedish sentence for a few frames (`qwen-swe synth --max-new-tokens`).
Each step is its own process; the report gives seconds and peak resident memory (`ru_maxrss`) of each, the
seconds per training step from metrics.jsonl, and the checkpoint's size on disk.

Prints one JSON object. Not part of `make test` (about 15 minutes and up to ~16 GB here).

    .venv/bin/python tools/real_shape_check.py --out runs/real-shape
    .venv/bin/python tools/real_shape_check.py --out runs/real-shape --shape 0.6b
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETUPS = {
    "0.6b": ["train.mode=full", "train.precision=fp32", "optim.name=adamw_8bit"],
    "1.7b": ["train.mode=lora", "train.precision=fp32", "optim.name=adamw"],
}


def write_model(folder: Path, shape: str) -> None:
    """A released-shape folder with random weights (runs in a child process: its memory is freed with it)."""
    import torch
    import transformers

    from qwen_swe.language import add_language_to_folder
    from qwen_swe.model_shapes import model_config_dict
    from qwen_swe.text_tokenizer import build_qwen_text_tokenizer
    from qwen_swe.tiny import (PROCESSOR_CONFIG, TINY_GENERATE_DEFAULTS, build_tiny_codec, random_model,
                               save_state_dict, write_json)

    folder.mkdir(parents=True, exist_ok=True)
    config = model_config_dict(shape)
    config.update({"architectures": ["Qwen3TTSForConditionalGeneration"], "model_type": "qwen3_tts",
                   "dtype": "bfloat16", "transformers_version": transformers.__version__})
    _, model = random_model(shape)
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", TINY_GENERATE_DEFAULTS)
    write_json(folder / "preprocessor_config.json", PROCESSOR_CONFIG)
    save_state_dict(model.eval(), folder / "model.safetensors", torch.bfloat16)
    del model
    build_qwen_text_tokenizer(folder)
    build_tiny_codec(folder / "speech_tokenizer", seed=0)
    add_language_to_folder(folder, "swedish")


def run(step: str, command: list[str], report: dict[str, Any], **env: str) -> None:
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report[step] = {"seconds": round(time.time() - started, 1),
                    # ru_maxrss of children is the largest any child reached so far: reported when it grew
                    "peak_rss_gb": round(peak / 1024**2, 2) if peak > before else "<= an earlier step's"}
    if result.returncode != 0:
        report[step]["error"] = (result.stdout + result.stderr)[-3000:]
        print(json.dumps(report, indent=2))
        raise SystemExit(f"{step} failed")


def check(shape: str, out: Path, steps: int) -> dict[str, Any]:
    from qwen_swe.data.synthetic import synthetic_shards
    from qwen_swe.model_shapes import model_config_dict

    report: dict[str, Any] = {"setup": SETUPS[shape]}
    model = out / "model"
    python = [sys.executable]
    if not (model / "config.json").exists():
        run("write_model", [*python, __file__, "--write-model", str(model), "--shape", shape], report)
    xvector = int(model_config_dict(shape)["speaker_encoder_config"]["enc_dim"])
    for earlier in ("shards", "run", "export", "synth"):  # a rerun starts these afresh (the model folder is kept)
        shutil.rmtree(out / earlier, ignore_errors=True)
    shards = synthetic_shards(out / "shards", shards=1, per_shard=8, hidden=xvector, eval_samples=2,
                              with_reference=False)
    run_dir = out / "run"
    run("train", [*python, "-m", "qwen_swe", "train", "--preset", "smoke", f"model.path={model}",
                  f"data.shards={shards}", f"run.output_dir={run_dir}", f"run.max_steps={steps}",
                  f"schedule.total_steps={steps}", "schedule.warmup_steps=0", f"run.checkpoint_every={steps}",
                  "run.eval_every=0", "run.tensorboard=false", "data.frame_budget=256", "data.layouts={streaming: 1}",
                  "train.freeze=[text_embedding]", "optim.lr=1e-5", *SETUPS[shape]], report)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    report["train"]["seconds_per_step"] = [round(r["samples"] / r["samples_per_s"], 1) for r in records]
    report["train"]["losses"] = [round(r["loss"], 4) for r in records]
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    report["train"]["checkpoint_gb"] = round(sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
                                             / 1024**3, 2)
    export = out / "export"
    run("export", [*python, "-m", "qwen_swe", "export", str(run_dir), "--out", str(export)], report)
    synth = out / "synth"
    reference = ROOT / "qwen_swe" / "demo_corpus" / "audio" / "spk3_003.flac"
    run("load_and_generate", [*python, "-m", "qwen_swe", "synth", str(export), "--out", str(synth), "--ref-audio",
                              str(reference), "--text", "Hej! Det här är en svensk mening.", "--max-new-tokens", "8"],
        report)
    spoken = json.loads((synth / "synth.json").read_text())
    report["load_and_generate"]["files"] = [{k: item.get(k) for k in ("text", "frames", "eos_reached")}
                                            for item in spoken.get("files", [])]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="Working folder (model folders, shards, runs, exports).")
    parser.add_argument("--shape", choices=list(SETUPS), action="append", help="Only these shapes.")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--write-model", type=Path, help=argparse.SUPPRESS)  # the child that writes a folder
    args = parser.parse_args()
    if args.write_model:
        write_model(args.write_model, args.shape[0])
        return
    if args.out is None:
        parser.error("--out is required")
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} CPUs", "shapes": {}}
    for shape in args.shape or list(SETUPS):
        report["shapes"][shape] = check(shape, args.out / shape, args.steps)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
