"""train/model_setup.py: LoRA, freezing, gradient checkpointing and precision applied to the model, and setup errors
that name the field."""

from __future__ import annotations

import re

import pytest
import torch

from qwen_swe.layout import SequenceLayout
from qwen_swe.objective import TalkerObjective
from qwen_swe.train.config import ConfigError
from qwen_swe.train.model_setup import prepare_model
from qwen_swe.train.optim import build_optimizer, build_scheduler, param_groups

from ..helpers import random_samples
from .configs import config_with, load_tiny


def batch_for(wrapper, model, layout_name: str = "streaming", seed: int = 1):
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    samples = random_samples(model, 3, seed=seed, languages=("swedish",))
    return layout.collate([layout.build(s, layout_name) for s in samples])


def test_lora_trains_adapters_projection_and_codec_rows_only(tiny_06b):
    from peft.tuners.lora import LoraLayer

    wrapper = load_tiny(tiny_06b)
    model, summary = prepare_model(wrapper.model, config_with("train.mode=lora"), "cpu")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    allowed = re.compile(r"\.lora_[AB]\.|talker\.text_projection\.modules_to_save\.|"
                         r"talker\.model\.codec_embedding\.modules_to_save\.")
    assert trainable and all(allowed.search(n) for n in trainable), [n for n in trainable if not allowed.search(n)]
    assert any("codec_embedding.modules_to_save" in n for n in trainable)
    assert any("text_projection.modules_to_save" in n for n in trainable)
    base = model.get_base_model()
    assert isinstance(base.talker.model.layers[0].self_attn.q_proj, LoraLayer)
    assert isinstance(base.talker.model.layers[0].mlp.down_proj, LoraLayer)
    assert not any(isinstance(m, LoraLayer) for m in base.talker.code_predictor.modules())
    assert summary["lora"]["wrapped_in_code_predictor"] == 0
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".speaker_encoder." in n)
    # The objective still reaches every module it needs through the peft wrapper.
    out = TalkerObjective(model)(batch_for(wrapper, base))
    assert torch.isfinite(out["loss"])


def test_lora_checkpointing_8bit_bf16_pure_loss_falls(tiny_06b):
    wrapper = load_tiny(tiny_06b)
    config = config_with("train.mode=lora", "train.gradient_checkpointing=true", "optim.name=adamw_8bit",
                         "train.precision=bf16-pure", "optim.lr=1e-2", "schedule.name=constant",
                         "schedule.warmup_steps=0")
    model, summary = prepare_model(wrapper.model, config, "cpu")
    base = model.get_base_model()
    assert summary["precision"]["weights"] == "bf16" and summary["gradient_checkpointing"] == "non-reentrant"
    assert base.talker.model.gradient_checkpointing and base.talker.code_predictor.model.gradient_checkpointing
    assert base.talker.model.norm.weight.dtype == torch.float32
    assert base.talker.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert base.talker.model.layers[0].self_attn.q_proj.lora_A["default"].weight.dtype == torch.float32
    objective = TalkerObjective(model).train()
    optimizer = build_optimizer(param_groups(objective, config), config, "cpu")
    scheduler = build_scheduler(optimizer, config)
    assert type(optimizer).__name__ == "AdamW8bit"
    batch = batch_for(wrapper, base)
    losses = []
    for step in range(6):
        out = objective(batch)
        out["loss"].backward()
        if step == 0:  # every trainable tensor gets a gradient through the checkpointed, frozen-embedding graph
            assert all(p.grad is not None for p in objective.parameters() if p.requires_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out["loss"].detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.1, losses


def test_gradient_checkpointing_changes_nothing(tiny_17b):
    from qwen_swe.train.model_setup import enable_gradient_checkpointing

    wrapper = load_tiny(tiny_17b)
    model, _ = prepare_model(wrapper.model, config_with(), "cpu")
    objective = TalkerObjective(model).train()
    batch = batch_for(wrapper, model, "icl")

    def loss_and_grads():
        objective.zero_grad(set_to_none=True)
        out = objective(batch)
        out["loss"].backward()
        return out["loss"].detach(), {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}

    plain_loss, plain = loss_and_grads()
    enable_gradient_checkpointing(model)
    assert model.talker.model.layers[0].gradient_checkpointing
    checkpointed_loss, checkpointed = loss_and_grads()
    assert torch.allclose(plain_loss, checkpointed_loss, atol=1e-6)
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5), name


def test_bf16_pure_keeps_named_modules_fp32(tiny_06b):
    wrapper = load_tiny(tiny_06b)
    model, summary = prepare_model(wrapper.model, config_with("train.precision=bf16-pure"), "cpu")
    for name, parameter in model.named_parameters():
        keep = any(s in name for s in ("norm", "codec_head", "lm_head"))
        assert parameter.dtype == (torch.float32 if keep else torch.bfloat16), name
    assert model.talker.model.rotary_emb.inv_freq.dtype == torch.float32  # buffers are not weights
    hidden, logits = TalkerObjective(model).talker_forward(batch_for(wrapper, model))
    assert hidden.dtype == torch.bfloat16 and logits.dtype == torch.float32  # heads keep fp32 logits
    assert summary["param_dtypes"]["float32"] < summary["param_dtypes"]["bfloat16"]


def test_bf16_mixed_keeps_fp32_weights_and_runs_under_autocast(tiny_06b):
    wrapper = load_tiny(tiny_06b)
    model, summary = prepare_model(wrapper.model, config_with("train.precision=bf16-mixed"), "cpu")
    assert summary["precision"] == {"name": "bf16-mixed", "weights": "fp32", "autocast": "bf16"}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = TalkerObjective(model)(batch_for(wrapper, model))
    assert torch.isfinite(out["loss"])


def test_setup_errors_name_the_field(tiny_06b):
    wrapper = load_tiny(tiny_06b)
    with pytest.raises(ConfigError, match=re.escape("train.freeze[0]: 'no_such_module' matches no parameter")):
        prepare_model(wrapper.model, config_with("train.freeze=[no_such_module]"), "cpu")
    with pytest.raises(ConfigError, match=re.escape("data.language: 'klingon' is not a language of this model")):
        prepare_model(wrapper.model, config_with("data.language=klingon"), "cpu")
    with pytest.raises(ConfigError, match=re.escape("optim.name: deepspeed needs `accelerate launch`")):
        build_optimizer([], config_with("optim.name=deepspeed"), "cpu")
