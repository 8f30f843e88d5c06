"""The quality loop: train in rounds and stop when the model sounds right, not when the loss says so.

`QualityLoop` is the trainer hook `qwen-swe train` adds when `run.quality.every_evals` is set. Every K held-out evals
the main process synthesises the evaluation sentences (the built-in set or the user's file) in held-out voices with
the current weights and scores them with `qwen-swe eval`'s code (`run_evaluation`: WER/CER with an ASR folder,
speaker similarity, duration error, silence and EOS-runaway rates), adding the held-out loss the trainer just
measured. Each round leaves `RUN/evaluations/step-N/` (eval.json, eval.md, the WAVs) and `quality/*` scalars and
audio in the run's TensorBoard.

What a round decides, on every rank alike (the main process scores, the others receive its numbers):
- best: the round with the best `run.quality.metric` (by at least `min_delta`) has its checkpoint saved at once and
  recorded as `best` (checkpoints/best.json), which retention keeps whatever `run.keep_last` says;
- thresholds: when every `run.quality.thresholds` entry holds, the run stops as finished;
- patience: after `run.quality.patience` rounds without a better metric, the run stops as finished.
The stop reason goes to the log, status.json and report.json (`stop_reason`, and `quality` with every round).
Rounds scored, the best and the patience counter are part of the trainer state: a resumed run continues them and
never scores a round again (a round after the checkpoint it resumes from was never saved, so it is scored anew).

Synthesis samples from the global RNGs: they are forked, so a run with the loop trains exactly like one without.
Under ZeRO-3 the weights are partitioned across ranks and one process cannot synthesise: the loop says so once
and scores nothing. `score()` is the one place that measures: override it to score differently (the tests script
their metrics through it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from ..train.checkpoint import step_name
from ..train.config import QUALITY_METRICS
from ..train.hooks import TrainerHook, from_main_process

EVALUATIONS_DIR = "evaluations"  # RUN/evaluations/step-N/: one folder per round
AUDIO_TO_TENSORBOARD = 2  # syntheses per round logged as audio


def threshold_failures(metrics: dict[str, Any], thresholds: dict[str, float]) -> list[str]:
    """The thresholds `metrics` does not meet, one "name value vs limit" line each (a missing metric fails)."""
    failures = []
    for name, limit in thresholds.items():
        value = metrics.get(name)
        lower = QUALITY_METRICS[name] == "lower"
        if value is None or (value > limit if lower else value < limit):
            failures.append(f"{name} {_number(value)} (needs {'<=' if lower else '>='} {limit:g})")
    return failures


def is_better(value: float, best: Optional[float], metric: str, min_delta: float = 0.0) -> bool:
    """`value` beats `best` by at least `min_delta` in the metric's direction (anything beats no best)."""
    if best is None:
        return True
    return value < best - min_delta if QUALITY_METRICS[metric] == "lower" else value > best + min_delta


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


class QualityLoop(TrainerHook):
    """Scores the model every `run.quality.every_evals` held-out evals; keeps the best round; stops on thresholds
    or patience. State (rounds, best, patience) is saved in checkpoints."""

    name = "quality"
    judges_best = True

    def __init__(self, section: Any):
        """Checks what a round will need (the sentences, the ASR and speaker-model folders) now, so that a wrong
        path is a message naming the field before training starts rather than a warning every round."""
        from .sentences import load_sentences

        try:
            load_sentences(section.sentences)
        except ValueError as error:
            raise ValueError(f"run.quality.sentences: {error}") from error
        for field_name, folder in (("asr", section.asr), ("speaker_model", section.speaker_model)):
            if folder and not Path(folder).is_dir():
                raise ValueError(f"run.quality.{field_name}: {folder} is not a directory; give a model folder, or "
                                 "leave it empty")
        self.section = section
        self.metric = section.ranking_metric()
        self.rounds: list[dict[str, Any]] = []  # {"step", "metrics", "better"}
        self.best: Optional[dict[str, Any]] = None  # {"step", "value"}
        self.since_best = 0  # rounds scored since the best one
        self.stop_reason: Optional[str] = None
        self.warned = False

    # ------------------------------------------------------------------------------------------ trainer state
    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "rounds": self.rounds, "best": self.best, "since_best": self.since_best,
                "stop_reason": self.stop_reason}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds, self.best = list(state.get("rounds") or []), state.get("best")
        self.since_best, self.stop_reason = int(state.get("since_best") or 0), state.get("stop_reason")
        if state.get("metric") not in (None, self.metric):  # the user changed run.quality.metric: rank anew
            self.best, self.since_best = None, 0

    def wants_checkpoint(self, step: int) -> bool:
        return self.best is not None and self.best["step"] == step

    def best_record(self, step: int) -> Optional[dict[str, Any]]:
        if self.best is None or self.best["step"] != step:
            return None
        return {"metric": self.metric, "value": self.best["value"]}

    def report(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": QUALITY_METRICS[self.metric], "best": self.best,
                "rounds_scored": len(self.rounds), "rounds_since_best": self.since_best,
                "thresholds": dict(self.section.thresholds), "patience": self.section.patience,
                "stop_reason": self.stop_reason, "rounds": self.rounds}

    def last_metrics(self) -> Optional[dict[str, Any]]:
        return self.rounds[-1]["metrics"] if self.rounds else None

    # ------------------------------------------------------------------------------------------ a round
    def on_eval(self, trainer: Any, results: dict[str, Any]) -> None:
        config = trainer.config
        if (trainer.step // config.run.eval_every) % self.section.every_evals:
            return
        if trainer.zero_stage == 3:
            if not self.warned:
                trainer.say("warning: run.quality needs the whole weights on one process to synthesise; under "
                            "ZeRO-3 they are partitioned across ranks, so no quality rounds are scored (train with "
                            "ZeRO-2 or DDP to use the quality loop)")
                self.warned = True
            return
        if any(done["step"] == trainer.step for done in self.rounds):
            return  # scored before the checkpoint this run resumed from
        metrics = None
        if trainer.main:
            started = time.time()
            metrics = self._score_safely(trainer, results)
            if metrics is not None:
                self._log(trainer, metrics, time.time() - started)
        metrics = from_main_process(metrics)
        if metrics is None:
            return  # the round failed (said on the main process); it neither counts nor stops the run
        self.decide(trainer, metrics)

    def decide(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """Record the round, move the best and the patience counter, and stop the run if it is done."""
        section, step = self.section, trainer.step
        self.stop_reason = None  # a run resumed after the loop stopped it trains on until the gate says so again
        value = metrics.get(self.metric)
        better = value is not None and is_better(value, self.best and self.best["value"], self.metric,
                                                 section.min_delta)
        if better:
            self.best, self.since_best = {"step": step, "value": value}, 0
        else:
            self.since_best += 1
        self.rounds.append({"step": step, "metrics": metrics, "better": better})
        best = f"best {_number(self.best['value'])} at step {self.best['step']}" if self.best else "no best yet"
        trainer.say(f"step {step}: quality round {len(self.rounds)}: {self.metric} {_number(value)} ({best}; "
                    + ", ".join(f"{k} {_number(v)}" for k, v in metrics.items() if k != self.metric) + ")")
        failures = threshold_failures(metrics, section.thresholds)
        if section.thresholds and not failures:
            met = ", ".join(f"{name} {_number(metrics[name])} {'<=' if QUALITY_METRICS[name] == 'lower' else '>='} "
                            f"{limit:g}" for name, limit in section.thresholds.items())
            self.stop_reason = f"quality thresholds met at step {step}: {met}"
        elif section.patience and self.since_best >= section.patience:
            self.stop_reason = (f"no better {self.metric} for {self.since_best} quality rounds (patience "
                                f"{section.patience}); {best}")
        elif failures:
            trainer.say(f"  thresholds not met yet: {'; '.join(failures)}")
        if self.stop_reason:
            trainer.say(f"step {step}: {self.stop_reason}; the best round's checkpoint is kept as best")
            trainer.request_stop(self.stop_reason, finished=True)

    def _score_safely(self, trainer: Any, results: dict[str, Any]) -> Optional[dict[str, Any]]:
        import torch

        # Sampling draws from the global RNGs: fork them so a run with the loop trains exactly like one without.
        devices = [trainer.accelerator.device] if trainer.device_type == "cuda" else []
        network = trainer.wrapper.model
        was_training = network.training
        with torch.random.fork_rng(devices=devices):
            network.eval()
            try:
                return self.score(trainer, results)
            except Exception as error:  # a scoring problem must not cost the training run
                trainer.say(f"warning: quality round at step {trainer.step} failed: {type(error).__name__}: "
                            f"{error}")
                return None
            finally:
                network.train(was_training)

    def score(self, trainer: Any, results: dict[str, Any]) -> dict[str, Any]:
        """The round's metrics (main process only): synthesis metrics of `qwen-swe eval` on the current weights
        and the held-out loss just measured. Writes RUN/evaluations/step-N/."""
        from ..files import write_json_atomic
        from .evaluation import EVAL_JSON, EvalConfig, run_evaluation
        from .synth import SamplingSettings

        section, config = self.section, trainer.config
        out = round_dir(trainer.run_dir, trainer.step)
        evaluation = EvalConfig(
            model=str(trainer.run_dir / "checkpoints" / step_name(trainer.step)), out=str(out),
            # a mixture's rounds are voiced by the first source's held-out speakers
            shards=next(iter(config.data.folders().values())), split=config.data.eval_split,
            sentences=section.sentences,
            max_sentences=section.max_sentences, speakers=section.speakers, mode=section.mode,
            asr=section.asr or None, speaker_model=section.speaker_model or None, batch_size=section.batch_size,
            language=config.model.language, heldout=False, synthesis=True, audio_samples=0, step=trainer.step,
            progress=False, sampling=SamplingSettings(max_new_tokens=section.max_new_tokens, seed=section.seed))
        report = run_evaluation(evaluation, say=lambda _message: None, wrapper=trainer.wrapper)
        report["metrics"]["heldout_loss"] = results["loss"]
        report["training"] = {"step": trainer.step, "heldout": results}
        write_json_atomic(out / EVAL_JSON, report, sort_keys=False)
        return {name: report["metrics"].get(name) for name in QUALITY_METRICS}

    def _log(self, trainer: Any, metrics: dict[str, Any], seconds: float) -> None:
        trainer.accelerator.log({f"quality/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                                step=trainer.step)
        trainer.say(f"step {trainer.step}: quality round scored in {seconds:.1f} s "
                    f"({round_dir(trainer.run_dir, trainer.step)})")
        if trainer.config.run.tensorboard:
            _audio_to_tensorboard(trainer, round_dir(trainer.run_dir, trainer.step) / "audio")


def round_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / EVALUATIONS_DIR / step_name(step)


def _audio_to_tensorboard(trainer: Any, folder: Path) -> None:
    import soundfile as sf
    import torch

    writer = trainer.accelerator.get_tracker("tensorboard", unwrap=True)
    for path in sorted(folder.glob("*.wav"))[:AUDIO_TO_TENSORBOARD]:
        wav, rate = sf.read(str(path), dtype="float32")
        writer.add_audio(f"quality/{path.stem}", torch.from_numpy(wav), trainer.step, sample_rate=rate)
