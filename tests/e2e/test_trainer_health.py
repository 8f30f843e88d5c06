"""The trainer's health on single-process runs: non-finite steps are skipped, then stop the run with a diagnosis
that names the module; the model learns the demo corpus and reads Swedish into TensorBoard while training."""

from __future__ import annotations

import json
import sys

import pytest

from qwen_swe.data.synthetic import synthetic_shards

from ..launching import ROOT, launch, losses


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("health-shards"), shards=2, per_shard=24, eval_samples=6)


def test_non_finite_steps_are_skipped_then_stop_the_run_and_diagnose_names_the_module(tiny_06b, shards, tmp_path):
    from qwen_swe.data.stream import ShardIndex

    everything = [e["key"] for shard in ShardIndex(shards, "train").shards for e in shard.entries]
    injection = f"module=model.talker.model.layers.1.mlp;keys={','.join(everything)}"
    run_dir = tmp_path / "run"
    # through `qwen-swe launch` (accelerate's one-process launcher), which passes the rank's exit code on
    single = [sys.executable, "-m", "qwen_swe", "launch", "--config_file", str(ROOT / "accelerate_configs" /
              "cpu_single.yaml"), "-m", "qwen_swe", "train", "--preset", "smoke", f"model.path={tiny_06b}",
              f"data.shards={shards}", f"run.output_dir={run_dir}", "run.max_steps=6", "schedule.total_steps=6",
              "run.checkpoint_every=2", "run.eval_every=0", "data.num_workers=0", "data.frame_budget=200",
              "run.non_finite_patience=3"]
    result = launch(single, QWEN_SWE_INJECT_NONFINITE=injection)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-4000:]
    assert "non-finite" in output and "diagnose-non-finite" in output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["finite"] for r in records] == [False, False, False]
    bundle = next((run_dir / "diagnostics").glob("non_finite_step*"))
    assert json.loads((bundle / "rank0.json").read_text())["keys"]

    diagnosis = launch([sys.executable, "-m", "qwen_swe", "diagnose-non-finite", "--run", str(run_dir), "--json"],
                       QWEN_SWE_INJECT_NONFINITE=injection)
    assert diagnosis.returncode == 0, diagnosis.stderr[-3000:]
    report = json.loads(diagnosis.stdout)
    assert report["culprit"]["module"] == "model.talker.model.layers.1.mlp"
    assert report["culprit"]["output"]["inf"] > 0


def test_the_model_learns_the_demo_corpus(tiny_06b, tmp_path):
    from qwen_swe.demo_corpus import MANIFEST

    shards = tmp_path / "shards"
    built = launch([sys.executable, "-m", "qwen_swe", "shards", "build", str(shards), "--model", str(tiny_06b),
                    "--manifest", str(MANIFEST), "--eval-speakers", "1", "--min-seconds", "0.5", "--no-progress"])
    assert built.returncode == 0, built.stderr[-3000:]
    run_dir = tmp_path / "run"
    trained = launch([sys.executable, "-m", "qwen_swe", "train", "--preset", "smoke", f"model.path={tiny_06b}",
                      f"data.shards={shards}", f"run.output_dir={run_dir}", "run.max_steps=12",
                      "schedule.total_steps=12", "run.eval_every=6", "data.frame_budget=384", "data.num_workers=0",
                      "train.freeze=[text_embedding]", "run.synth_every_evals=2", "run.synth_sentences=1"])
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    curve = [loss for _, loss in sorted(losses(run_dir).items())]
    assert len(curve) == 12 and sum(curve[-3:]) / 3 < curve[0] - 0.5, curve
    report = json.loads((run_dir / "report.json").read_text())
    assert report["last_eval"]["step"] == 12 and report["best_eval"] <= report["last_eval"]["loss"] + 1e-9
    # every second eval (step 12) a held-out voice read a Swedish sentence into TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((run_dir / "tb").rglob("events.out.tfevents.*")).parent),
                              size_guidance={"audio": 0}).Reload()
    audio_tags = [tag for tag in events.Tags()["audio"] if tag.startswith("synthesis/")]
    assert audio_tags and [event.step for event in events.Audio(audio_tags[0])] == [12]
