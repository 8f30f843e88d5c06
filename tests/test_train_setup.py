"""Run config, model preparation (language, LoRA, freezing, checkpointing, precision) and optimizer setup."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from qwen_swe.layout import SequenceLayout
from qwen_swe.objective import TalkerObjective
from qwen_swe.train.config import PRESETS, ConfigError, RunConfig, load_config
from qwen_swe.train.model_setup import prepare_model
from qwen_swe.train.precision import resolve_attn_implementation
from qwen_swe.train.optim import build_optimizer, build_scheduler, fill_deepspeed_config, param_groups
from qwen_swe.train.provenance import fingerprint_changes, math_fingerprint

from .helpers import random_samples

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["model.path=/models/tiny", "data.shards=/data/shards", "run.output_dir=/runs/test"]


def config_with(*overrides: str, preset: str | None = None) -> RunConfig:
    return load_config(None, preset, REQUIRED + list(overrides))


# ------------------------------------------------------------------------------------------ config
def test_yaml_round_trip(tmp_path):
    config = config_with("optim.lr=3e-4", "data.layouts.icl_non_streaming=0.25", r"train.freeze=[talker\.x]",
                         preset="pilot")
    path = tmp_path / "run.yaml"
    config.save_yaml(path)
    again = load_config(path, None, [])
    assert again == config
    assert again.to_yaml() == path.read_text(encoding="utf-8")
    assert yaml.safe_load(path.read_text())["optim"]["lr_multipliers"] == {r"talker\.text_projection": 5.0}


def test_overrides_reach_nested_dicts_and_lists():
    config = config_with("optim.lr=1e-4", "data.layouts.icl=0.5", r"train.freeze=[talker\.a, talker\.b]",
                         r"optim.lr_multipliers.talker\.codec_head=2", "optim.betas=[0.8, 0.9]",
                         "train.lora.r=4", "run.tensorboard=false", "data.language=no")
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)  # YAML reads 1e-4 as text
    assert config.data.layouts == {"streaming": 1.0, "non_streaming": 1.0, "icl": 0.5}  # one key set, others kept
    assert config.train.freeze == [r"talker\.a", r"talker\.b"]
    assert config.optim.lr_multipliers == {r"talker\.text_projection": 5.0, r"talker\.codec_head": 2.0}
    assert config.optim.betas == [0.8, 0.9] and config.train.lora.r == 4 and config.run.tensorboard is False
    assert config.data.language == "no"  # string fields take the text verbatim (YAML would make it false)
    assert config_with("data.layouts={icl: 1}").data.layouts == {"icl": 1.0}  # a whole mapping replaces


def test_yaml_file_values_are_typed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {path: /m}\ndata: {shards: /s}\nrun: {output_dir: /o}\noptim: {lr: 2e-5}\n"
                    "schedule: {total_steps: 1e4}\n")
    config = load_config(path, None, [])
    assert config.optim.lr == pytest.approx(2e-5)
    assert config.schedule.total_steps == 10000 and config.run.max_steps == 10000  # 0 resolves to total_steps


@pytest.mark.parametrize("overrides, message", [
    (["optim.lrr=1"], "unknown field 'optim.lrr' (did you mean 'optim.lr'?)"),
    (["lr=1"], "unknown field 'lr' (did you mean 'optim.lr'?)"),
    (["optim.lr=-1"], "optim.lr: must be > 0, got -1"),
    (["train.precision=fp16"], "train.precision: fp16 is not supported"),
    (["data.layouts.iclx=1"], "data.layouts: unknown layout 'iclx' (did you mean 'icl'?)"),
    (["optim.lr=fast"], "optim.lr: expected a number, got 'fast'"),
    (["run.max_steps=20", "schedule.total_steps=10", "schedule.warmup_steps=1"], "run.max_steps: must be <="),
    (["train.freeze=[(unclosed]"], "train.freeze[0]: not a valid regular expression"),
    (["optim.lr"], "override 'optim.lr': expected key=value"),
])
def test_validation_names_the_field(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_with(*overrides)


def test_missing_required_fields_are_all_named():
    with pytest.raises(ConfigError) as error:
        load_config(None, None, ["optim.lr=0"])
    text = str(error.value)
    for field in ("model.path: required", "data.shards: required", "run.output_dir: required",
                  "optim.lr: must be > 0"):
        assert field in text


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {path: /m}\nschedule: {warmup_step: 3}\n")
    with pytest.raises(ConfigError, match=re.escape("unknown field 'schedule.warmup_step' "
                                                    "(did you mean 'schedule.warmup_steps'?)")):
        load_config(path, None, [])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_load(preset):
    config = config_with(preset=preset)
    assert config.run.max_steps == config.schedule.total_steps
    if preset == "smoke":
        assert config.schedule.total_steps <= 20 and config.run.eval_every < config.schedule.total_steps
        assert config.run.checkpoint_every < config.schedule.total_steps
    if preset == "pilot":
        assert (config.train.precision, config.optim.name, config.train.gradient_checkpointing) == \
               ("bf16-mixed", "adamw_8bit", True)
    with pytest.raises(ConfigError, match="unknown preset 'smok' \\(did you mean 'smoke'\\?\\)"):
        load_config(None, "smok", REQUIRED)


def test_math_fingerprint_tracks_math_only():
    base = config_with()
    assert math_fingerprint(config_with("optim.lr=1e-4")) != math_fingerprint(base)
    assert math_fingerprint(config_with("data.layouts.icl=0")) != math_fingerprint(base)
    for knob in ("run.eval_every=7", "run.checkpoint_every=9", "run.output_dir=/elsewhere", "data.num_workers=0",
                 "run.max_steps=5", "run.keep_last=1", "train.gradient_checkpointing=true"):
        assert math_fingerprint(config_with(knob)) == math_fingerprint(base), knob
    changes = fingerprint_changes(math_fingerprint(base), math_fingerprint(config_with("optim.lr=1e-4")))
    assert changes == ["optim.lr: 2e-05 -> 0.0001"]
    # Inert knobs do not count: LoRA settings in full mode, fp32-kept modules unless the weights are bf16.
    assert math_fingerprint(config_with("train.lora.r=4")) == math_fingerprint(base)
    assert math_fingerprint(config_with("train.mode=lora", "train.lora.r=4")) != \
           math_fingerprint(config_with("train.mode=lora"))
    assert math_fingerprint(config_with("train.keep_fp32_modules=[norm]")) == math_fingerprint(base)


def test_check_paths_names_missing_folders(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_with(f"model.path={tmp_path / 'nope'}", f"data.shards={tmp_path}").check_paths()
    assert "model.path:" in str(error.value) and "data.shards: no index.json" in str(error.value)


# ------------------------------------------------------------------------------------------ model setup
def load_tiny(model_dir: Path):
    from qwen_swe.modeling import load_model

    return load_model(model_dir)


def batch_for(wrapper, model, layout_name: str = "streaming", seed: int = 1):
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    samples = random_samples(model, 3, seed=seed, languages=("swedish",))
    return layout.collate([layout.build(s, layout_name) for s in samples])


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


# ------------------------------------------------------------------------------------------ optimizer details
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


def test_attention_resolution():
    assert resolve_attn_implementation("auto", "cpu") == ("sdpa", None)
    assert resolve_attn_implementation("eager", "cpu") == ("eager", None)
    impl, warning = resolve_attn_implementation("flash_attention_2", "cpu")
    assert impl == "sdpa" and "needs a GPU" in warning
    assert resolve_attn_implementation("auto", "cuda", precision="fp32") == ("sdpa", None)


# ------------------------------------------------------------------------------------------ launcher configs
def test_deepspeed_and_accelerate_configs_are_consistent():
    for path in sorted((REPO / "ds_configs").glob("*.json")):
        ds = json.loads(path.read_text())
        assert not ds.get("fp16", {}).get("enabled", False), f"{path.name}: fp16 must never be enabled"
        assert ds["bf16"]["enabled"] is (not path.name.startswith("cpu_")), path.name
        assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_clipping"] == "auto"
        stage = ds["zero_optimization"]["stage"]
        if stage == 3:
            assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True, path.name
        assert ("optimizer" in ds) == ("offload" in path.name), path.name
        assert path.name in (REPO / "ds_configs" / "README.md").read_text(), f"{path.name} missing from README"
    for name in ("cpu_zero2", "cpu_zero3", "cpu_zero2_bf16", "cpu_ddp_bf16"):
        launch = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
        assert launch["num_processes"] == 2 and launch["use_cpu"] is False, name
        if launch["distributed_type"] == "DEEPSPEED":
            assert (REPO / launch["deepspeed_config"]["deepspeed_config_file"]).is_file(), name
        else:
            assert launch["mixed_precision"] == "bf16"
