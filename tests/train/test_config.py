"""train/config/: YAML round trip, overrides and their typing, validation naming the field, presets, paths."""

from __future__ import annotations

import re

import pytest
import yaml

from qwen_swe.train.config import PRESETS, ConfigError, load_config

from .configs import REQUIRED, config_with


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


def test_check_paths_names_missing_folders(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_with(f"model.path={tmp_path / 'nope'}", f"data.shards={tmp_path}").check_paths()
    assert "model.path:" in str(error.value) and "data.shards: no index.json" in str(error.value)


SOURCES = ["model.path=/m", "run.output_dir=/o", "data.sources.nst=/data/nst", "data.sources.rixvox=/data/rixvox"]


@pytest.mark.parametrize("overrides, message", [
    (["data.shards=/s"], "data.shards and data.sources: give one shard folder or several sources, not both"),
    (["data.weights.nts=1"], "data.weights: unknown source(s) nts; data.sources names nst, rixvox"),
    (["data.weights.nst=-1"], "data.weights: the weights at step 0 must be >= 0"),
    (["data.weights.nst=1", "data.schedule={0: {nst: 1}}"], "data.weights and data.schedule: give fixed weights"),
    (["data.schedule={0: {nst: 0}}"], "data.schedule: the weights at step 0 must be >= 0 and not all 0"),
    (["data.schedule={0: {nst: 1}, 100: {rixvx: 1}}"], "data.schedule: weights name unknown source(s) rixvx"),
    (["data.sources.en/replay=/d"], "data.sources: name sources with letters, digits, - and _"),
])
def test_sources_and_their_weights_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, None, SOURCES + overrides)


def test_a_curriculum_is_one_config_block(tmp_path):
    """The README's curriculum: studio speech first, varied speech blended in from step 2000."""
    path = tmp_path / "run.yaml"
    path.write_text("model: {path: /m}\nrun: {output_dir: /o}\n"
                    "data:\n  sources: {nst: /data/nst, rixvox: /data/rixvox, english: /data/en}\n"
                    "  schedule:\n    0: {nst: 1.0, english: 0.05}\n    2000: {nst: 0.3, rixvox: 0.7, english: 0.05}\n")
    config = load_config(path, None, ["data.schedule.4000={rixvox: 1}"])
    mixture = config.data.mixture()
    assert mixture.weights_at(0) == pytest.approx([1 / 1.05, 0, 0.05 / 1.05])
    assert mixture.weights_at(1000)[1] == pytest.approx(0.35 / 1.05)
    assert mixture.weights_at(4000) == [0.0, 1.0, 0.0]
    assert config.data.folders() == {"nst": "/data/nst", "rixvox": "/data/rixvox", "english": "/data/en"}
    with pytest.raises(ConfigError, match=re.escape("data.sources.rixvox: no index.json in '/data/rixvox'")):
        config.check_paths()
    with pytest.raises(ConfigError, match="data.weights: weighs the sources of data.sources, which names none"):
        load_config(None, None, ["model.path=/m", "run.output_dir=/o", "data.shards=/s", "data.weights.nst=1"])
