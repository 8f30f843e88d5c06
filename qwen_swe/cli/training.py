"""`qwen-swe train`, `status` and `diagnose-non-finite`: run training and look at a run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Run config YAML (see `qwen-swe train --help` and configs in the README).")
@click.option("--preset", type=click.Choice(["smoke", "pilot", "full"]), default=None,
              help="Start from a preset: smoke (seconds on CPU), pilot (bounded Hemma run), full.")
@click.option("--resume", default=None, help="'auto' (newest complete checkpoint of the run, if any) or a path.")
@click.option("--allow-changes", default="", help="Comma-separated changes to accept when resuming "
              "(e.g. optim.lr,world_size,shards_fingerprint); anything else that changed is refused.")
@click.argument("overrides", nargs=-1)
def train(config_path: str | None, preset: str | None, resume: str | None, allow_changes: str,
          overrides: tuple[str, ...]) -> None:
    """Train a Swedish Qwen3-TTS from shards. OVERRIDES are dotted assignments: optim.lr=1e-4 run.max_steps=200.

    \b
    One process:        qwen-swe train --config run.yaml
    Several processes:  qwen-swe launch --config_file accelerate_configs/cpu_zero2.yaml -m qwen_swe train ...
    Stop:               SIGTERM or Ctrl-C (to `qwen-swe train`, `qwen-swe launch` or the ranks): checkpoint, exit 0
    Resume:             the same command plus --resume auto
    Watch:              qwen-swe status RUN_DIR   and   tensorboard --logdir RUN_DIR/tb
    Train until good:   run.quality.every_evals=5 run.quality.thresholds.speaker_similarity=0.75 run.quality.patience=4
                        (every 5th eval: synthesise, score, keep the best round as `best`, stop when good or stuck)
    Exit codes: 0 finished or stopped cleanly by SIGTERM/SIGINT (resumable), 3 stopped on non-finite numbers,
    4 stopped on more bad samples than data.max_bad_samples allows (listed in RUN_DIR/bad_samples/).
    """
    from ..launcher import die_with_launcher
    from ..quality.training_audio import training_hooks
    from ..train.config import load_config

    die_with_launcher()  # under a launcher: its death stops this rank (checkpoint, exit) instead of orphaning it
    from ..train.trainer import Trainer

    try:
        config = load_config(config_path, preset, list(overrides))
        config.check_paths()  # a missing model folder or shard index is named before anything loads
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    allowed = tuple(item.strip() for item in allow_changes.split(",") if item.strip())
    try:
        trainer = Trainer(config, resume=resume, allow_changes=allowed, hooks=training_hooks(config))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    sys.exit(trainer.run())


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": []})
@click.argument("accelerate_args", nargs=-1, type=click.UNPROCESSED)
def launch(accelerate_args: tuple[str, ...]) -> None:
    """`accelerate launch` with a clean stop: the same arguments, e.g.

    \b
      qwen-swe launch --config_file accelerate_configs/cpu_zero2.yaml -m qwen_swe train --config run.yaml

    SIGTERM or Ctrl-C to this command asks the ranks themselves to finish their step, checkpoint and exit 0, however
    long that takes (plain `accelerate launch` kills them after 30 s and exits 1); a second signal kills at once.
    The exit code is the ranks' (0 finished or stopped cleanly, 3 non-finite, 4 bad data). `qwen-swe launch
    --help` shows accelerate's own options.
    """
    from ..launcher import supervise

    sys.exit(supervise(accelerate_args))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print status.json as it is.")
def status(run_dir: str, as_json: bool) -> None:
    """Where a training run stands: step, ETA, last losses, throughput, last eval, checkpoints, health."""
    from ..train.monitor import STATUS, render_status

    if as_json:
        click.echo((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
        return
    try:
        click.echo(render_status(run_dir))
    except ValueError as error:
        raise click.ClickException(str(error)) from error


@click.command("diagnose-non-finite")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--bundle", default=None, type=click.Path(exists=True, file_okay=False),
              help="A diagnostics/non_finite_step* folder (default: the newest).")
@click.option("--json", "as_json", is_flag=True)
def diagnose_non_finite(run_dir: str, bundle: str | None, as_json: bool) -> None:
    """Replay the batch that stopped a run from its last checkpoint and name the first non-finite module."""
    from ..train.diagnose import diagnose, render

    try:
        report = diagnose(run_dir, bundle)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


COMMANDS = (train, launch, status, diagnose_non_finite)
