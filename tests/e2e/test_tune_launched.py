"""`qwen-swe tune` under `accelerate launch` (2 CPU processes, DDP): rank 0 owns each trial and the other rank follows,
through a complete trial and a pruned one, with the quality loop scoring on the main process in every trial."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from qwen_swe.data.synthetic import synthetic_shards

from ..launching import ROOT, launch


def test_two_process_trials_rank0_owns_the_trial_and_the_other_rank_follows(tiny_06b, tmp_path):
    import optuna

    from qwen_swe.tune.study import STUDY_NAME, storage_for

    shards = synthetic_shards(tmp_path / "shards", shards=1, per_shard=8, eval_samples=3)
    run = {"model": {"path": str(tiny_06b)}, "data": {"shards": str(shards), "num_workers": 0},
           "train": {"freeze": ["text_embedding"]}, "schedule": {"warmup_steps": 1, "total_steps": 4},
           "run": {"output_dir": str(tmp_path / "unused"), "max_steps": 4, "eval_every": 2, "eval_batches": 2,
                   "checkpoint_every": 100, "keep_last": 1, "tensorboard": False, "activation_stats_every": 0,
                   "quality": {"every_evals": 1, "max_sentences": 1, "speakers": 1, "max_new_tokens": 4}}}
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "space.yaml").write_text("optim.lr: {choices: [0.003, 0.3]}\n")
    (tmp_path / "first.yaml").write_text("- {optim.lr: 0.003}\n- {optim.lr: 0.3}\n")
    study_dir = tmp_path / "study"
    result = launch([str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
                     str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"), "-m", "qwen_swe", "tune", "--preset", "smoke",
                     "--config", str(tmp_path / "short.yaml"), "--space", str(tmp_path / "space.yaml"),
                     "--enqueue", str(tmp_path / "first.yaml"), "--trials", "2", "--study-dir", str(study_dir),
                     "--pruner-startup-trials", "1"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert output.count("training 4 steps from step 0: 2 process(es), DistributedType.MULTI_CPU") == 2, output[-3000:]
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage_for(study_dir)).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    for trial, steps in zip(trials, (4, 2)):
        report = json.loads((study_dir / "trials" / f"trial-{trial.number:04d}" / "report.json").read_text())
        assert report["steps"] == trial.user_attrs["steps"] == steps
        assert [r["step"] for r in report["quality"]["rounds"]] == [2, 4][:steps // 2]
    assert trials[0].value == json.loads((study_dir / "trials" / "trial-0000" / "report.json").read_text()
                                         )["last_eval"]["loss"]
    assert (study_dir / "best.yaml").is_file() and (study_dir / "report.md").is_file()
