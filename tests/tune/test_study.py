"""`qwen-swe tune` on the tiny model: a 3-trial study in which the bad trial is pruned, interrupted by SIGTERM in a
trial and completed with --resume (finished trials kept, the interrupted one run again), best.yaml trained as is,
report.md and plots that show the study's numbers; a trial whose process died is retried once its heartbeat is
stale; trials that search the sub-talker weight compared at one weight; a quality metric as the objective."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import yaml
from click.testing import CliRunner

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.config import load_config
from qwen_swe.train.hooks import TrainerHook

from ..train.conftest import fresh_accelerate_state_reset

GOOD, ALSO_GOOD, BAD = ({"optim.lr": 3e-3, "optim.weight_decay": 0.0}, {"optim.lr": 3e-3, "optim.weight_decay": 0.05},
                        {"optim.lr": 0.3, "optim.weight_decay": 0.0})  # lr 0.3 wrecks the tiny model at once


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("tune-shards"), shards=1, per_shard=8, eval_samples=3)


def short_run(model, shards, output_dir, *extra):
    return load_config(None, "smoke", [f"model.path={model}", f"data.shards={shards}", f"run.output_dir={output_dir}",
                                       "run.max_steps=4", "schedule.total_steps=4", "schedule.warmup_steps=1",
                                       "run.eval_every=2", "run.checkpoint_every=100", "run.keep_last=1",
                                       "run.tensorboard=false", "run.activation_stats_every=0",
                                       "train.freeze=[text_embedding]", *extra])


class SigtermInTrial(TrainerHook):
    """Sends this process SIGTERM after step 1 of the trial whose run folder is `trial`: Ctrl-C in the middle."""

    name = "sigterm drill"

    def __init__(self, trial: str):
        self.trial, self.sent = trial, False

    def on_step_end(self, trainer, record):
        if trainer.run_dir.name == self.trial and trainer.step == 1 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_study_prunes_the_bad_trial_resumes_after_sigterm_and_hands_over_best_yaml(tiny_06b, shards, tmp_path):
    import optuna

    from qwen_swe.cli import main
    from qwen_swe.train.trainer import Trainer
    from qwen_swe.tune.space import parse_space
    from qwen_swe.tune.study import STUDY_NAME, StudySettings, storage_for, tune

    study_dir = tmp_path / "study"
    space = parse_space({"optim.lr": {"choices": [3e-3, 0.3]}, "optim.weight_decay": {"low": 0.0, "high": 0.1}})
    settings = StudySettings(study_dir=study_dir, trials=3, enqueue=[GOOD, ALSO_GOOD, BAD], pruner_startup_trials=1)
    said = []
    fresh_accelerate_state_reset()
    outcome = tune(settings, short_run(tiny_06b, shards, tmp_path / "unused"), space, say=said.append,
                   extra_hooks=[SigtermInTrial("trial-0001")])
    assert outcome.interrupted and outcome.finished == 1
    assert "trial 1 interrupted: marked failed, queued to run again on --resume" in said
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_for(study_dir))
    states = [(t.number, t.state.name) for t in study.trials]
    assert states == [(0, "COMPLETE"), (1, "FAIL"), (2, "WAITING"), (3, "WAITING")]
    first_value = study.trials[0].value
    interrupted = yaml.safe_load((study_dir / "trials" / "trial-0001" / "status.json").read_text())
    assert interrupted["health"] == "interrupted" and interrupted["step"] == 1  # it stopped the way any run stops
    assert not (study_dir / "trials" / "trial-0000" / "checkpoints").exists()  # trials leave no checkpoints behind

    # --resume through the CLI: the study keeps its own run config and space
    fresh_accelerate_state_reset()
    result = CliRunner().invoke(main, ["tune", "--study-dir", str(study_dir), "--resume"])
    assert result.exit_code == 0, result.output
    assert "1 complete, 0 pruned, 1 failed, 2 queued of 3" in result.output
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_for(study_dir))
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"]
    assert trials[0].value == first_value  # the finished trial was kept, not run again
    assert trials[2].params == BAD and trials[2].user_attrs["steps"] == 2  # pruned at the first eval
    assert "pruned by the tuner at step 2" in trials[2].user_attrs["stop_reason"]
    assert trials[3].params == ALSO_GOOD and trials[3].user_attrs["retry_of"] == 1  # the interrupted trial again
    pruned_status = yaml.safe_load((study_dir / "trials" / "trial-0002" / "status.json").read_text())
    assert pruned_status["health"] == "finished" and "pruned by the tuner" in pruned_status["message"]

    # report.md: the trials table holds the study's numbers; importances; plots
    report = (study_dir / "report.md").read_text()
    rows = {int(m.group(1)): m for m in re.finditer(r"^\| (\d+) \| (\w+) \| ([^|]*) \|", report, re.M)}
    assert sorted(rows) == [0, 1, 2, 3]
    for trial in trials:
        assert rows[trial.number].group(2) == trial.state.name.lower()
        if trial.value is not None:
            assert float(rows[trial.number].group(3)) == pytest.approx(trial.value, rel=1e-5)
    best = study.best_trial
    assert f"Trial {best.number}: heldout_loss **{best.value:.6g}**" in report
    assert "| `optim.weight_decay` |" in report  # importances over the complete trials
    for plot in ("optimization_history", "parallel_coordinate", "param_importances", "intermediate_values"):
        assert (study_dir / "plots" / f"{plot}.png").stat().st_size > 1000, plot

    # best.yaml is the best trial's run config in a run folder of its own, and trains as is
    best_yaml = load_config(study_dir / "best.yaml")
    trial_config = load_config(study_dir / "trials" / f"trial-{best.number:04d}" / "config.yaml")
    assert best_yaml.run.output_dir == str((study_dir / "best-run").resolve())
    best_yaml.run.output_dir = trial_config.run.output_dir
    assert best_yaml.to_dict() == trial_config.to_dict()
    fresh_accelerate_state_reset()
    assert Trainer(load_config(study_dir / "best.yaml")).run() == 0
    repeated = yaml.safe_load((study_dir / "best-run" / "report.json").read_text())
    assert repeated["last_eval"]["loss"] == pytest.approx(best.value, rel=1e-6)  # the same run again
    fresh_accelerate_state_reset()


def test_a_trial_whose_process_died_is_retried_once_its_heartbeat_is_stale(tiny_06b, shards, tmp_path):
    import optuna

    from qwen_swe.tune.space import parse_space
    from qwen_swe.tune.study import StudySettings, open_study

    settings = StudySettings(study_dir=tmp_path / "study", trials=2, heartbeat_seconds=1)
    space = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    study, _, _ = open_study(settings, short_run(tiny_06b, shards, tmp_path / "unused"), space, resume=False,
                             say=lambda _m: None)
    trial = study.ask()  # a process took a trial ...
    lr = trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    study._storage.record_heartbeat(trial._trial_id)  # ... beat once, and died
    said = []
    study, _, _ = open_study(StudySettings(study_dir=tmp_path / "study", heartbeat_seconds=1), None, None,
                             resume=True, say=said.append)
    assert "trial(s) 0 marked running" in said[-1] and "3 s is failed and run again" in said[-1]
    time.sleep(4.2)  # SQLite clocks heartbeats in whole seconds
    optuna.storages.fail_stale_trials(study)  # what every process of the study does before each trial
    died, retry = study.trials
    assert (died.state.name, retry.state.name) == ("FAIL", "WAITING")
    assert retry.params == {"optim.lr": lr} and retry.system_attrs["failed_trial"] == died.number


def test_trials_that_search_the_sub_talker_weight_are_compared_at_the_studys_weight():
    from qwen_swe.tune.study import comparable_loss

    results = {"loss": 3.4, "codebook0_loss": 3.0, "sub_talker_loss": 4.0}  # trained at weight 0.1
    assert comparable_loss(results, weight=0.1, reference_weight=0.1) == 3.4
    assert comparable_loss(results, weight=0.1, reference_weight=0.3) == pytest.approx(3.0 + 0.3 * 4.0)


def test_a_quality_metric_as_the_objective_is_read_at_every_quality_round(tiny_06b, shards, tmp_path):
    import json

    import optuna

    from qwen_swe.tune.space import parse_space
    from qwen_swe.tune.study import STUDY_NAME, StudySettings, storage_for, tune

    base = short_run(tiny_06b, shards, tmp_path / "unused", "run.quality.every_evals=1", "run.quality.speakers=1",
                     "run.quality.max_sentences=1", "run.quality.max_new_tokens=4")
    settings = StudySettings(study_dir=tmp_path / "study", trials=1, objective="speaker_similarity")
    fresh_accelerate_state_reset()
    outcome = tune(settings, base, parse_space({"optim.lr": {"choices": [3e-3]}}), say=lambda _m: None)
    fresh_accelerate_state_reset()
    assert outcome.finished == 1
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_for(tmp_path / "study"))
    (trial,) = study.trials
    rounds = json.loads((tmp_path / "study" / "trials" / "trial-0000" / "report.json").read_text())["quality"]["rounds"]
    assert study.direction.name == "MAXIMIZE"
    assert trial.intermediate_values == {r["step"]: r["metrics"]["speaker_similarity"] for r in rounds}
    assert sorted(trial.intermediate_values) == [2, 4] and trial.value == rounds[-1]["metrics"]["speaker_similarity"]
