"""The quality loop (`run.quality`) in real training runs on the tiny model: a real round synthesises and scores
into RUN/evaluations/step-N and stops the run on its thresholds; with scripted metrics (the `score` seam), patience
stops the run, the best round's checkpoint outlives retention as `best`, and an interrupted run resumes with its
rounds and counters without scoring a round twice."""

from __future__ import annotations

import json

import pytest

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.config import QUALITY_METRICS, load_config
from qwen_swe.train.hooks import TrainerHook

from ..train.conftest import fresh_accelerate_state_reset


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("quality-shards"), shards=1, per_shard=8, eval_samples=3)


def run_config(model, shards, run_dir, *extra):
    return load_config(None, "smoke", [f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}",
                                       "run.max_steps=8", "schedule.total_steps=8", "run.eval_every=1",
                                       "run.checkpoint_every=100", "run.keep_last=1", "run.activation_stats_every=0",
                                       "train.freeze=[text_embedding]", "run.quality.every_evals=1",
                                       "run.quality.max_sentences=1", "run.quality.speakers=1",
                                       "run.quality.max_new_tokens=4", *extra])


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


def test_the_directions_agree_with_qwen_swe_eval():
    from qwen_swe.quality.evaluation import HIGHER_IS_BETTER, LOWER_IS_BETTER

    for name, direction in QUALITY_METRICS.items():
        assert name in (LOWER_IS_BETTER if direction == "lower" else HIGHER_IS_BETTER), name


def test_a_real_round_scores_the_current_weights_and_the_thresholds_stop_the_run(tiny_06b, shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from qwen_swe.quality.training_audio import training_hooks
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    # a random tiny model never says EOS within 4 frames: eos_runaway_rate is 1.0 every round, so "<= 1" holds at the
    # first round and "<= 0.5" never does
    config = run_config(tiny_06b, shards, run_dir, "run.quality.every_evals=2",
                        "run.quality.thresholds.eos_runaway_rate=1.0", "run.quality.thresholds.silence_rate=1.0")
    fresh_accelerate_state_reset()
    assert Trainer(config, hooks=training_hooks(config)).run() == 0
    report, status = read(run_dir, "report.json"), read(run_dir, "status.json")
    assert report["steps"] == 2 and status["health"] == "finished"
    reason = "quality thresholds met at step 2: eos_runaway_rate 1 <= 1, silence_rate"
    assert report["stop_reason"].startswith(reason) and status["message"].startswith(reason)
    (scored,) = report["quality"]["rounds"]
    evaluation = read(run_dir / "evaluations" / "step-00000002", "eval.json")
    assert evaluation["metrics"]["heldout_loss"] == scored["metrics"]["heldout_loss"] == report["last_eval"]["loss"]
    assert evaluation["metrics"]["eos_runaway_rate"] == 1.0 and len(evaluation["synthesis"]["files"]) == 1
    assert (run_dir / "evaluations" / "step-00000002" / "audio" / "000_spk0.wav").is_file()
    assert read(run_dir / "checkpoints", "best.json") == {"checkpoint": "step-00000002", "metric": "speaker_similarity",
                                                          "value": scored["metrics"]["speaker_similarity"]}
    events = EventAccumulator(str(next((run_dir / "tb").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert [e.step for e in events.Scalars("quality/eos_runaway_rate")] == [2]
    assert events.Tags()["audio"] == ["quality/000_spk0"]


def test_wer_and_speaker_similarity_thresholds_with_an_asr_folder(tiny_06b, shards, tiny_asr, tmp_path):
    """The README's long-run gate (run.quality.asr with thresholds on wer and speaker_similarity): each round
    transcribes its syntheses; limits the tiny model surely meets stop the run at the first round."""
    from qwen_swe.quality.training_audio import training_hooks
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    config = run_config(tiny_06b, shards, run_dir, "run.quality.every_evals=2", f"run.quality.asr={tiny_asr}",
                        "run.quality.thresholds.wer=1000", "run.quality.thresholds.speaker_similarity=-1")
    fresh_accelerate_state_reset()
    assert Trainer(config, hooks=training_hooks(config)).run() == 0
    report = read(run_dir, "report.json")
    (scored,) = report["quality"]["rounds"]
    evaluation = read(run_dir / "evaluations" / "step-00000002", "eval.json")
    assert scored["metrics"]["wer"] is not None and scored["metrics"]["wer"] == evaluation["metrics"]["wer"]
    assert "transcript" in evaluation["synthesis"]["files"][0]
    assert report["stop_reason"].startswith("quality thresholds met at step 2: wer")


SCRIPT = {1: 0.60, 2: 0.90, 3: 0.70, 4: 0.85, 5: 0.80, 6: 0.99}  # speaker similarity per step: best at step 2


def scripted_loop(section, scored):
    from qwen_swe.quality.quality_loop import QualityLoop

    class Scripted(QualityLoop):
        def score(self, trainer, results):
            scored.append(trainer.step)
            return {"speaker_similarity": SCRIPT[trainer.step], "heldout_loss": results["loss"]}

    return Scripted(section)


class StopAt(TrainerHook):
    name = "stop drill"

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, record):
        if trainer.step == self.step:
            trainer.request_stop("signal")  # as SIGTERM does: checkpoint, exit 0, resumable


def test_patience_stops_the_run_keeps_the_best_round_and_resumes_with_its_counters(tiny_06b, shards, tmp_path):
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    config = run_config(tiny_06b, shards, run_dir, "run.quality.patience=3", "run.quality.min_delta=0.01")
    scored = []
    fresh_accelerate_state_reset()
    assert Trainer(config, hooks=[scripted_loop(config.run.quality, scored), StopAt(3)]).run() == 0
    assert read(run_dir, "status.json")["health"] == "interrupted" and scored == [1, 2, 3]
    assert read(run_dir / "checkpoints", "best.json")["checkpoint"] == "step-00000002"
    saved = read(run_dir / "checkpoints" / "step-00000003", "trainer_state.json")["hooks"]["quality"]
    assert saved["best"] == {"step": 2, "value": 0.9} and saved["since_best"] == 1 and len(saved["rounds"]) == 3

    scored.clear()
    fresh_accelerate_state_reset()
    assert Trainer(config, resume="auto", hooks=[scripted_loop(config.run.quality, scored)]).run() == 0
    assert scored == [4, 5]  # rounds 1-3 came back with the checkpoint; none is scored again
    report = read(run_dir, "report.json")
    # 0.85 at step 4 is not better than 0.90 by min_delta: steps 3, 4, 5 make three rounds without a better one
    assert report["steps"] == 5 and report["stop_reason"].startswith(
        "no better speaker_similarity for 3 quality rounds (patience 3); best 0.9 at step 2")
    assert [r["step"] for r in report["quality"]["rounds"]] == [1, 2, 3, 4, 5]
    assert report["quality"]["best"] == {"step": 2, "value": 0.9}
    # keep_last=1 keeps the newest checkpoint, and the best round's whatever retention says
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000005"]
    assert read(run_dir / "checkpoints", "best.json") == {"checkpoint": "step-00000002",
                                                          "metric": "speaker_similarity", "value": 0.9}
