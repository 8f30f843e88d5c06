"""A run folder belongs to one run and says how that run ended: no start over another run's checkpoints, an honest
`--resume auto` with nothing to resume, a crash recorded in status.json, a dead run called dead by `qwen-swe status`,
and user mistakes named without a traceback."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.config import ConfigError, load_config
from qwen_swe.train.hooks import TrainerHook
from qwen_swe.train.monitor import STALE_AFTER_SECONDS, render_status

from .conftest import fresh_accelerate_state_reset


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return synthetic_shards(tmp_path_factory.mktemp("shards"), shards=1, per_shard=8)


def config_for(model, shards, run_dir, *extra):
    return load_config(None, "smoke", [f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}",
                                       "run.max_steps=2", "run.eval_every=0", "run.checkpoint_every=2",
                                       "run.tensorboard=false", "train.freeze=[text_embedding]", *extra])


def steps_logged(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_auto_with_nothing_to_resume_says_so_and_starts_clean(tiny_06b, shards, tmp_path,
                                                                      fresh_accelerate_state, capsys):
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a run that died before its first checkpoint left two metric lines behind
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 1.0}\n')
    assert Trainer(config_for(tiny_06b, shards, run_dir), resume="auto").run() == 0
    assert "--resume auto: no complete checkpoint" in capsys.readouterr().out
    assert steps_logged(run_dir) == [1, 2]  # not 1, 2, 1, 2


def test_a_fresh_start_never_adopts_another_runs_checkpoints(tiny_06b, shards, tmp_path, fresh_accelerate_state):
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    assert Trainer(config_for(tiny_06b, shards, run_dir)).run() == 0
    before = (run_dir / "metrics.jsonl").read_text()
    fresh_accelerate_state_reset()
    with pytest.raises(ConfigError, match=r"holds checkpoints of an earlier run \(newest: step-00000002\); "
                                          r"continue it with --resume auto"):
        Trainer(config_for(tiny_06b, shards, run_dir, "optim.lr=1e-4"))
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing of the earlier run was touched


class Explodes(TrainerHook):
    def on_step_end(self, trainer, record):
        raise RuntimeError("the disk is full")


def test_a_crash_is_recorded_and_a_silent_run_is_called_dead(tiny_06b, shards, tmp_path, fresh_accelerate_state):
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the disk is full"):
        Trainer(config_for(tiny_06b, shards, run_dir), hooks=[Explodes()]).run()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["health"] == "crashed" and status["error"] == "RuntimeError: the disk is full"
    assert "error:        RuntimeError: the disk is full" in render_status(run_dir)
    # a run killed without a word (kill -9, a lost node) stops updating status.json
    status.update(health="training", updated=time.time() - STALE_AFTER_SECONDS - 60)
    (run_dir / "status.json").write_text(json.dumps(status))
    view = render_status(run_dir)
    assert "health:       not responding: no update for 16 min" in view and "eta:" not in view


def test_train_names_missing_paths_and_unwritable_folders_without_a_traceback(tiny_06b, shards, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["train", "--preset", "smoke", f"model.path={tmp_path / 'nope'}",
                                   f"data.shards={shards}", f"run.output_dir={tmp_path / 'run'}"])
    assert missing.exit_code == 1 and "model.path:" in missing.output and "is not a directory" in missing.output
    assert "Traceback" not in missing.output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = runner.invoke(main, ["train", "--preset", "smoke", f"model.path={tiny_06b}",
                                      f"data.shards={shards}", f"run.output_dir={blocker / 'run'}"])
    assert unwritable.exit_code == 1 and "run.output_dir: cannot create" in unwritable.output
    assert "Traceback" not in unwritable.output


def test_a_second_job_on_the_same_folder_is_refused(tiny_06b, shards, tmp_path, fresh_accelerate_state):
    from qwen_swe.train.run_lock import RunFolderLock
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other_job = RunFolderLock(run_dir)
    assert other_job.acquire() is None
    with pytest.raises(ConfigError, match=r"is in use by another job \(pid \d+ on .+\); wait for it to end"):
        Trainer(config_for(tiny_06b, shards, run_dir))
    other_job.release()
    fresh_accelerate_state_reset()
    assert Trainer(config_for(tiny_06b, shards, run_dir)).run() == 0  # the lock ends with its job


def test_resume_passes_over_a_damaged_checkpoint_and_export_names_the_file(tiny_06b, shards, tmp_path,
                                                                          fresh_accelerate_state, capsys):
    from qwen_swe.export import ExportError, locate_checkpoint
    from qwen_swe.train.trainer import Trainer

    run_dir = tmp_path / "run"
    assert Trainer(config_for(tiny_06b, shards, run_dir, "run.max_steps=4", "schedule.total_steps=4")).run() == 0
    uninterrupted = dict(zip(steps_logged(run_dir), [json.loads(line)["loss"] for line in
                                                      (run_dir / "metrics.jsonl").read_text().splitlines()]))
    newest = run_dir / "checkpoints" / "step-00000004"
    damaged = max((p for p in newest.iterdir() if p.name != "COMPLETE"), key=lambda p: p.stat().st_size)
    damaged.write_bytes(damaged.read_bytes()[:100])  # a copy that stopped half way
    with pytest.raises(ExportError, match=rf"damaged checkpoint.*\n  .*{damaged.name}: 100 bytes, \d+ when saved"):
        locate_checkpoint(newest)
    with pytest.raises(ValueError, match=rf"{damaged.name}: 100 bytes"):
        Trainer(config_for(tiny_06b, shards, run_dir, "run.max_steps=4", "schedule.total_steps=4"),
                resume=str(newest))
    fresh_accelerate_state_reset()
    capsys.readouterr()
    resumed = Trainer(config_for(tiny_06b, shards, run_dir, "run.max_steps=4", "schedule.total_steps=4"),
                      resume="auto")
    assert resumed.resume_from.name == "step-00000002"
    assert f"checkpoint step-00000004 is damaged ({damaged}: 100 bytes" in capsys.readouterr().out
    assert resumed.run() == 0
    losses = {json.loads(line)["step"]: json.loads(line)["loss"] for line in
              (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert losses == uninterrupted  # steps 3 and 4 again, exactly as the first time
