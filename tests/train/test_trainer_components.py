"""The trainer's components in one process: hooks see the loop's events and can stop a run (checkpoint, exit 0),
`run.log_every` thins metrics.jsonl, the checkpointer keeps the best eval, and `train/` stands without `quality/`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.train.hooks import TrainerHook

from ..launching import ROOT, environment
from .conftest import fresh_accelerate_state_reset


class Recorder(TrainerHook):
    name = "recorder"

    def __init__(self, stop_at: int):
        self.stop_at, self.events = stop_at, []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.step))

    def on_step_end(self, trainer, record):
        self.events.append(("step", record["step"]))
        if record["step"] == self.stop_at:
            trainer.request_stop("recorder says enough")

    def on_eval(self, trainer, results):
        assert results["step"] == trainer.step and results["loss"] == trainer.last_eval["loss"]
        self.events.append(("eval", results["step"]))

    def on_train_end(self, trainer, exit_code):
        self.events.append(("end", exit_code))


def test_hooks_see_the_loop_and_stop_it_with_a_checkpoint(tiny_06b, tmp_path, fresh_accelerate_state):
    from qwen_swe.train.config import load_config
    from qwen_swe.train.trainer import Trainer

    shards = synthetic_shards(tmp_path / "shards", shards=2, per_shard=12, eval_samples=4)
    run_dir = tmp_path / "run"
    config = load_config(None, "smoke", [f"model.path={tiny_06b}", f"data.shards={shards}",
                                         f"run.output_dir={run_dir}", "run.max_steps=8", "run.eval_every=2",
                                         "run.eval_batches=1", "run.checkpoint_every=100", "run.log_every=3",
                                         "run.tensorboard=false", "train.freeze=[text_embedding]",
                                         "data.frame_budget=120"])
    recorder = Recorder(stop_at=5)
    assert Trainer(config, hooks=[recorder]).run() == 0
    assert recorder.events == [("start", 0), ("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("step", 4),
                               ("eval", 4), ("step", 5), ("end", 0)]
    # stopped after step 5 with a checkpoint (the regular cadence, every 100, would not have saved one)
    assert (run_dir / "checkpoints" / "step-00000005" / "COMPLETE").is_file()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["health"] == "interrupted" and "recorder says enough" in status["message"]
    # run.log_every=3 keeps step 3, and steps 1 and 5, which measured per-layer statistics (the smoke preset's
    # activation_stats_every=4 arms the steps after 0 and 4 completed steps); steps 1-5 were finite, the last is 8
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 3, 5]
    assert ["talker.0" in " ".join(record) for record in records] == [True, False, True]
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert best["checkpoint"] == "step-00000005" and best["eval_loss"] == status["last_eval"]["loss"]


def test_a_synthesis_request_without_its_hook_is_said(tiny_06b, tmp_path, fresh_accelerate_state, capsys):
    from qwen_swe.train.config import load_config
    from qwen_swe.train.trainer import Trainer

    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=8, eval_samples=2)
    config = load_config(None, "smoke", [f"model.path={tiny_06b}", f"data.shards={shards}",
                                         f"run.output_dir={tmp_path / 'run'}", "run.max_steps=1",
                                         "run.eval_every=1", "run.eval_batches=1", "run.synth_every_evals=1",
                                         "run.tensorboard=false", "train.freeze=[text_embedding]"])
    assert Trainer(config).run() == 0
    assert "run.synth_every_evals is set but this trainer has no synthesis hook" in capsys.readouterr().out


def test_data_retokenize_reaches_the_reader(tiny_06b, tmp_path, fresh_accelerate_state):
    """Shards whose prompt ids came from another tokenizer: refused before training starts (a message naming the
    knob, no traceback from inside the loop), trained with it set."""
    from qwen_swe.train.config import ConfigError, load_config
    from qwen_swe.train.trainer import Trainer

    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=8)
    index = json.loads((shards / "index.json").read_text())
    index["text_tokenizer"] = {"fingerprint": "another-tokenizer"}
    (shards / "index.json").write_text(json.dumps(index))
    required = [f"model.path={tiny_06b}", f"data.shards={shards}", "run.max_steps=1", "run.eval_every=0",
                "run.tensorboard=false", "train.freeze=[text_embedding]"]
    with pytest.raises(ConfigError, match="data.retokenize=true"):
        Trainer(load_config(None, "smoke", required + [f"run.output_dir={tmp_path / 'refused'}"]))
    fresh_accelerate_state_reset()
    config = load_config(None, "smoke", required + [f"run.output_dir={tmp_path / 'run'}", "data.retokenize=true"])
    assert Trainer(config).run() == 0
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["step"] == 1


def test_import_graph_has_no_upward_arrows():
    """train/ never loads quality/; the shard format never loads the layout; the CLI's --help loads no torch."""
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('qwen_swe', 'torch')))))")

    def loaded(module: str) -> set[str]:
        result = subprocess.run([sys.executable, "-c", probe, module], capture_output=True, text=True, cwd=ROOT,
                                env=environment(), timeout=120)
        assert result.returncode == 0, result.stderr
        return set(result.stdout.split())

    trainer = loaded("qwen_swe.train.trainer")
    assert "qwen_swe.train.trainer" in trainer and not any(m.startswith("qwen_swe.quality") for m in trainer)
    assert not any(m.startswith("qwen_swe.cli") for m in trainer)
    shard_format = loaded("qwen_swe.data.shard_format")
    assert "qwen_swe.layout" not in shard_format and "torch" not in shard_format
    for light in ("qwen_swe.cli", "qwen_swe.train.config", "qwen_swe.train.precision", "qwen_swe.model_shapes"):
        assert "torch" not in loaded(light), light
