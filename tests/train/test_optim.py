"""train/optim.py: parameter groups (decay, multipliers), the optimizer, the schedule, DeepSpeed config filling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from qwen_swe.objective import TalkerObjective
from qwen_swe.train.config import ConfigError
from qwen_swe.train.model_setup import prepare_model
from qwen_swe.train.optim import build_optimizer, build_scheduler, fill_deepspeed_config, param_groups

from .configs import config_with, load_tiny

REPO = Path(__file__).resolve().parents[2]


def test_full_mode_groups_decay_and_multipliers(tiny_06b):
    wrapper = load_tiny(tiny_06b)
    config = config_with(f"model.path={tiny_06b}")
    model, summary = prepare_model(wrapper.model, config, "cpu")
    assert summary["language"]["registered_now"] and "swedish" in model.config.talker_config.codec_language_id
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("speaker_encoder."))
    objective = TalkerObjective(model)
    groups = param_groups(objective, config)
    names = {id(p): n for n, p in objective.named_parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == sum(p.requires_grad for p in objective.parameters())
    for group in groups:
        group_names = [names[id(p)] for p in group["params"]]
        if group["weight_decay"] == 0.0:
            assert all(re.search(r"(norm|embedding)(\.\d+)?\.weight$|\.bias$", n) for n in group_names), group_names
        else:
            assert not any(re.search(r"norm|embedding|\.bias$", n) for n in group_names)
        projection = [n for n in group_names if ".text_projection." in n]
        assert group["lr"] == pytest.approx(config.optim.lr * (5.0 if projection else 1.0))
        assert not projection or len(projection) == len(group_names)
    assert {g["name"] for g in groups} >= {"default/decay", "default/no_decay", "talker.text_projection/decay"}
    optimizer = build_optimizer(groups, config, "cpu")
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults.get("fused")


def test_schedule_warms_up_then_decays():
    config = config_with("schedule.warmup_steps=10", "schedule.total_steps=100", "optim.lr=1.0")
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = build_optimizer([{"name": "x", "params": [parameter], "lr": 1.0, "weight_decay": 0.0}], config, "cpu")
    scheduler = build_scheduler(optimizer, config)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5, abs=0.02) and lrs[99] < 0.01


def test_deepspeed_config_filling_and_refusals():
    from accelerate.utils import DummyOptim, DummyScheduler

    config = config_with("optim.name=deepspeed", "optim.grad_clip=0.5")
    ds = json.loads((REPO / "ds_configs" / "zero2_offload.json").read_text())
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = build_optimizer([{"name": "x", "params": [parameter]}], config, "cpu", ds_config=ds)
    assert isinstance(optimizer, DummyOptim)
    assert ds["gradient_clipping"] == 0.5 and ds["train_micro_batch_size_per_gpu"] == 1
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.95] and ds["optimizer"]["params"]["eps"] == 1e-8
    scheduler = build_scheduler(optimizer, config, ds_config=ds)
    assert isinstance(scheduler, DummyScheduler) and scheduler.lr_scheduler_callable is not None
    ds["scheduler"] = {"type": "WarmupDecayLR"}
    assert build_scheduler(optimizer, config, ds_config=ds).total_num_steps == config.schedule.total_steps

    plain = json.loads((REPO / "ds_configs" / "zero2.json").read_text())
    with pytest.raises(ConfigError, match="optim.name: deepspeed needs a DeepSpeed config with an optimizer"):
        fill_deepspeed_config(dict(plain), config)
    with pytest.raises(ConfigError, match="optim.name: the DeepSpeed config names an optimizer"):
        fill_deepspeed_config(json.loads((REPO / "ds_configs" / "zero3_offload.json").read_text()), config_with())
    with pytest.raises(ConfigError, match="optim.name: adamw_8bit cannot run under DeepSpeed"):
        fill_deepspeed_config(dict(plain), config_with("optim.name=adamw_8bit"))
    mismatch = json.loads((REPO / "ds_configs" / "zero2_offload.json").read_text())
    mismatch["optimizer"]["params"]["betas"] = [0.9, 0.999]
    with pytest.raises(ConfigError, match=re.escape("optim.betas: the DeepSpeed config sets")):
        fill_deepspeed_config(mismatch, config)
