"""`qwen-swe tune`: search hyper-parameters with short training runs (Optuna), then hand over best.yaml."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..train.config.schema import QUALITY_METRICS


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="The run config every trial starts from (short runs: run.max_steps, schedule.total_steps).")
@click.option("--preset", type=click.Choice(["smoke", "pilot", "full"]), default=None,
              help="Start the trials' run config from a preset (as `qwen-swe train --preset`).")
@click.option("--space", "space_path", type=click.Path(exists=True, dir_okay=False),
              help="Search space YAML: run-config fields and their ranges (see README, 'Tune').")
@click.option("--trials", type=int, default=0,
              help="Finished (complete or pruned) trials the study should hold. On --resume: default as started.")
@click.option("--study-dir", required=True, type=click.Path(file_okay=False),
              help="The study folder: study.db (SQLite), trials/, best.yaml, report.md, plots/.")
@click.option("--resume", is_flag=True, help="Continue the study in --study-dir (or join it from another process).")
@click.option("--objective", type=click.Choice(list(QUALITY_METRICS)), default=None,
              help="What trials are ranked by: heldout_loss (default; the last held-out eval) or a quality metric "
              "of the last quality round (needs run.quality in the run config).")
@click.option("--seed", type=int, default=None, help="TPE sampler seed [default: 0, or as the study started].")
@click.option("--pruner", type=click.Choice(["median", "percentile", "none"]), default=None,
              help="Stop trials that do worse than earlier trials at the same eval step [default: median].")
@click.option("--pruner-startup-trials", type=int, default=None,
              help="Complete trials before the pruner judges any trial [default: 2].")
@click.option("--pruner-warmup-steps", type=int, default=None, help="Steps of a trial before the pruner judges it "
              "[default: 0].")
@click.option("--random-trials", type=int, default=None,
              help="Trials TPE samples at random before it models the results [default: 10].")
@click.option("--enqueue", "enqueue_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML list of parameter mappings to try first (e.g. the settings you use today).")
@click.option("--heartbeat", type=int, default=60, show_default=True,
              help="Seconds between a running trial's heartbeats; a trial silent for 3x this is retried.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep each trial's checkpoints (deleted when the trial "
              "ends by default: best.yaml trains the winner again).")
@click.option("--report-only", is_flag=True, help="Only rewrite best.yaml, report.md and plots/ from the study.")
@click.argument("overrides", nargs=-1)
def tune(config_path: str | None, preset: str | None, space_path: str | None, trials: int, study_dir: str,
         resume: bool, objective: str | None, seed: int | None, pruner: str | None,
         pruner_startup_trials: int | None, pruner_warmup_steps: int | None, random_trials: int | None,
         enqueue_path: str | None, heartbeat: int, keep_checkpoints: bool,
         report_only: bool, overrides: tuple[str, ...]) -> None:
    """Search hyper-parameters: each trial is a short real training run (same trainer) in STUDY/trials/trial-N.

    OVERRIDES are dotted assignments applied to the run config, as for `qwen-swe train`.

    Sampler and pruner settings are stored with the study: a --resume keeps them unless given again.

    \b
    A study of 20 trials (TPE, median pruner on the held-out loss at every eval):
      qwen-swe tune --config short.yaml --space space.yaml --trials 20 --study-dir studies/lr
    Interrupted (Ctrl-C, SIGTERM) or crashed? The same command plus --resume; another process on this machine can join
    --resume on the same folder. Trials of several GPUs each (rank 0 owns the trial, the others follow):
      qwen-swe launch --config_file accelerate_configs/h100_x8_zero2.yaml -m qwen_swe tune --config ...
    Then train the winner:
      qwen-swe train --config studies/lr/best.yaml run.max_steps=20000 schedule.total_steps=20000 \\
        run.output_dir=runs/long
    Watch live: optuna-dashboard sqlite:///studies/lr/study.db  (pip install optuna-dashboard)
    """
    from ..launcher import die_with_launcher
    from ..train.config import ConfigError, load_config
    from ..train.config.loader import read_yaml_file
    from ..tune.space import load_space
    from ..tune.study import STUDY_DB, StudySettings, StudyStopped, open_study
    from ..tune.study import tune as run_study

    die_with_launcher()
    settings = StudySettings(study_dir=Path(study_dir), trials=trials, objective=objective, seed=seed, pruner=pruner,
                             pruner_startup_trials=pruner_startup_trials, pruner_warmup_steps=pruner_warmup_steps,
                             random_trials=random_trials, heartbeat_seconds=heartbeat,
                             keep_checkpoints=keep_checkpoints)
    try:
        given = config_path is not None or preset is not None or bool(overrides)
        base = load_config(config_path, preset, list(overrides)) if given else None
        if base is not None:
            base.check_paths()
        space = load_space(space_path) if space_path else None
        if enqueue_path:
            settings.enqueue = read_yaml_file(Path(enqueue_path), "enqueue file") or []
            if not isinstance(settings.enqueue, list) or not all(isinstance(e, dict) for e in settings.enqueue):
                raise ConfigError(f"{enqueue_path}: expected a YAML list of mappings (parameter: value)")
        if report_only:
            from ..tune.report import write_report

            if not (Path(study_dir) / STUDY_DB).is_file():
                raise ConfigError(f"--report-only: no study in {study_dir}")
            study, base, space = open_study(settings, base, space, resume=True, say=click.echo)
            write_report(study, Path(study_dir), base, space, say=click.echo)
            return
        outcome = run_study(settings, base, space, resume=resume, say=click.echo)
    except (ValueError, StudyStopped) as error:
        raise click.ClickException(str(error)) from error
    sys.exit(0 if outcome.finished >= outcome.target or outcome.interrupted else 1)


COMMANDS = (tune,)
