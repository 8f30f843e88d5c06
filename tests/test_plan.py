"""The memory planner: exact parameter counts, estimates that move the right way, the CLI, recommendations."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from qwen_swe.cli import main
from qwen_swe.model_shapes import model_config_dict
from qwen_swe.plan import (
    GB,
    HOSTS,
    SAVERS,
    ModelShape,
    Settings,
    estimate,
    parameter_counts,
    preset_shape,
    cpu_host,
    recommend,
    render,
    resolve_host,
)
from qwen_swe.plan import _apply


def instantiate(config: dict, device: str = "meta"):
    """A real Qwen3TTSForConditionalGeneration (on the meta device: shapes without memory)."""
    from qwen_swe.modeling import import_qwen_tts

    import_qwen_tts()
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    with torch.device(device):
        return Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**config))


def medium_config() -> dict:
    """Released 0.6B layer shapes with fewer layers: between the tiny and the released model."""
    config = model_config_dict("0.6b")
    config["talker_config"]["num_hidden_layers"] = 3
    config["talker_config"]["code_predictor_config"]["num_hidden_layers"] = 2
    return config


@pytest.mark.parametrize("name,config", [
    ("tiny 0.6b", model_config_dict("0.6b", tiny=True)),
    ("tiny 1.7b", model_config_dict("1.7b", tiny=True)),
    ("tiny custom voice", model_config_dict("0.6b", tiny=True, model_type="custom_voice")),
    ("medium 0.6b", medium_config()),
    ("released 0.6b", model_config_dict("0.6b")),
    ("released 1.7b", model_config_dict("1.7b")),
])
def test_parameter_counts_match_instantiated_models(name, config):
    model = instantiate(config)
    counts = parameter_counts(ModelShape.from_config(config))
    assert counts["total"] == sum(p.numel() for p in model.parameters()), name
    talker = model.talker
    assert counts["text_embedding"] == talker.model.text_embedding.weight.numel()
    assert counts["text_projection"] == sum(p.numel() for p in talker.text_projection.parameters())
    assert counts["code_predictor_embeddings"] == sum(
        p.numel() for p in talker.code_predictor.model.codec_embedding.parameters())
    assert counts["code_predictor_heads"] == sum(p.numel() for p in talker.code_predictor.lm_head.parameters())
    speaker = sum(p.numel() for p in model.speaker_encoder.parameters()) if model.speaker_encoder else 0
    assert counts["speaker_encoder"] == speaker


def test_lora_trainable_count_matches_model_setup():
    from qwen_swe.train.config import LoraSection
    from qwen_swe.train.model_setup import apply_lora

    config = model_config_dict("0.6b", tiny=True)
    model = instantiate(config)
    model.requires_grad_(True)
    peft_model, _ = apply_lora(model, LoraSection(r=8))
    for name, parameter in peft_model.named_parameters():
        if "speaker_encoder" in name:
            parameter.requires_grad_(False)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    settings = Settings(mode="lora", lora_rank=8, precision="fp32", frame_budget=16)
    result = estimate(ModelShape.from_config(config), settings, HOSTS["h100-80gb"])
    assert result.trainable_parameters == trainable
    # fp32 weights: base + adapters + the trainable copies of text_projection and the codec rows
    assert result.gpu["weights"] == 4 * total


def released(name: str = "1.7b") -> ModelShape:
    return preset_shape(name)


def test_zero2_over_eight_gpus_needs_less_per_gpu_than_one():
    one = estimate(released(), Settings(zero=2, gpus_per_host=1), HOSTS["h100-80gb"])
    eight = estimate(released(), Settings(zero=2, gpus_per_host=8), HOSTS["h100-80gb"])
    assert eight.gpu["optimizer_states"] == pytest.approx(one.gpu["optimizer_states"] / 8)
    assert eight.gpu_total < one.gpu_total
    zero3 = estimate(released(), Settings(zero=3, gpus_per_host=8), HOSTS["h100-80gb"])
    assert zero3.gpu["weights"] < eight.gpu["weights"]


def test_offload_moves_memory_from_gpu_to_host():
    base = Settings(zero=2, gpus_per_host=1)
    kept = estimate(released(), base, HOSTS["r9700-32gb"])
    offloaded = estimate(released(), dataclasses.replace(base, offload="optimizer"), HOSTS["r9700-32gb"])
    assert offloaded.gpu_total < kept.gpu_total
    assert offloaded.host_total > kept.host_total
    assert offloaded.host_ram["offloaded_optimizer"] > 0
    params = estimate(released(), Settings(zero=3, offload="optimizer+params"), HOSTS["r9700-32gb"])
    assert params.gpu["weights"] == 0 and params.host_ram["offloaded_weights"] > 0


def test_checkpointing_lowers_activations_and_frames_scale_them():
    plain = estimate(released(), Settings(), HOSTS["h100-80gb"])
    checkpointed = estimate(released(), Settings(gradient_checkpointing=True), HOSTS["h100-80gb"])
    assert checkpointed.gpu["activations"] < plain.gpu["activations"] / 3
    half = estimate(released(), Settings(frame_budget=1024), HOSTS["h100-80gb"])
    assert half.gpu["activations"] < 0.6 * plain.gpu["activations"]


def test_eight_bit_adam_needs_less_than_fp32_adam():
    fp32 = estimate(released(), Settings(optimizer="adamw"), HOSTS["r9700-32gb"])
    eight = estimate(released(), Settings(optimizer="adamw_8bit"), HOSTS["r9700-32gb"])
    assert eight.gpu["optimizer_states"] < fp32.gpu["optimizer_states"] / 3
    assert eight.gpu_total < fp32.gpu_total
    frozen = estimate(released(), Settings(freeze_text_embedding=True), HOSTS["r9700-32gb"])
    assert frozen.trainable_parameters == fp32.trainable_parameters - fp32.parameters["text_embedding"]


def test_full_17b_on_r9700_does_not_fit_and_the_recommendation_does():
    settings = Settings(precision="bf16-mixed", frame_budget=2048)
    host = HOSTS["r9700-32gb"]
    assert not estimate(released(), settings, host).fits
    advice = recommend(released(), settings, host)
    assert not advice.fits_as_given and advice.savers
    assert advice.estimate.fits and advice.estimate.gpu_total <= 0.9 * 32 * GB
    again = estimate(released(), Settings(**advice.settings), host)  # the recommended settings, re-estimated
    assert again.fits and again.gpu_total == pytest.approx(advice.estimate.gpu_total)
    # nothing cheaper fits: every single saver that costs less than the pick leaves the setup too large
    pick = (advice.changes_training, advice.slowdown)
    for name, saver in SAVERS.items():
        applied = _apply(settings, (name,))
        if applied is not None and (saver.changes_training, saver.slowdown) < pick:
            assert not estimate(released(), applied, host).fits, name
    # with no device large enough, the planner says so instead of recommending
    assert recommend(released(), settings, dataclasses.replace(host, gpu_memory=1 * GB)).estimate is None


def test_impossible_settings_are_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--optimizer adamw_8bit"):
        estimate(released(), Settings(zero=2, optimizer="adamw_8bit"), HOSTS["h100-80gb"])
    with pytest.raises(ValueError, match="--offload"):
        estimate(released(), Settings(offload="optimizer"), HOSTS["h100-80gb"])


def test_cli_table_and_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["plan", "--model", "1.7b", "--host", "r9700-32gb"])
    assert result.exit_code == 0, result.output
    assert "does NOT fit" in result.output and "recommendation: add" in result.output
    result = runner.invoke(main, ["plan", "--model", "1.7b", "--host", "h100-80gb", "--gpus", "8", "--zero", "2",
                                  "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["fits"] is True and payload["recommendation"]["fits_as_given"] is True
    assert payload["gpu_total_gb"] == pytest.approx(sum(payload["gpu_gb"].values()), abs=0.01)
    # a model folder: its config.json is read
    (tmp_path / "config.json").write_text(json.dumps(model_config_dict("0.6b", tiny=True)))
    result = runner.invoke(main, ["plan", "--model", str(tmp_path), "--gpu-memory", "8GB", "--json",
                                  "--no-recommend"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["parameters"]["total"] == parameter_counts(ModelShape.from_config(
        model_config_dict("0.6b", tiny=True)))["total"]
    assert payload["gpu_capacity_gb"] == 8
    result = runner.invoke(main, ["plan", "--model", "2b"])
    assert result.exit_code != 0 and "0.6b" in result.output


def test_hosts_take_binary_sizes_and_refuse_bad_ones(monkeypatch):
    card = resolve_host("r9700-32gb", gpu_memory="24GB")
    assert card.gpu_memory == 24 * 2**30 and card.host_ram == HOSTS["r9700-32gb"].host_ram
    assert card.name == "r9700-32gb (24GB cards)"
    assert resolve_host("h100-80gb", host_ram="1.5TiB").host_ram == 1.5 * 2**40
    monkeypatch.setattr("qwen_swe.plan.machine_ram", lambda: 7 * GB)
    assert resolve_host("cpu").gpu_memory == resolve_host("cpu").host_ram == 7 * GB
    assert resolve_host("cpu", host_ram="16g").host_ram == 16 * GB
    with pytest.raises(ValueError, match="--host: unknown host 'a100'"):
        resolve_host("a100")
    with pytest.raises(ValueError, match=r"--gpu-memory: '24XB' is not a size; write e.g. 32GB"):
        resolve_host("r9700-32gb", gpu_memory="24XB")
    with pytest.raises(ValueError, match="--host-ram: '0' ?: a memory size must be positive"):
        resolve_host("r9700-32gb", host_ram="0")
    with pytest.raises(ValueError, match=r"--gpu-memory: '24' is 24 bytes, less than 1 GiB; give a unit, e.g. 24GB"):
        resolve_host("r9700-32gb", gpu_memory="24")  # a bare number is bytes: memory that small means a lost unit
    result = CliRunner().invoke(main, ["plan", "--gpu-memory", "24 bytes please"])
    assert result.exit_code == 1 and "--gpu-memory: '24 bytes please' is not a size" in result.output


def test_sub_talker_frame_sampling_is_modelled_and_recommended_before_a_smaller_batch():
    """The code predictor holds most of the activations (16 positions per frame): scoring a share of the frames
    drops its part in proportion; the recommendation reaches for it before halving the frame budget."""
    from qwen_swe.plan import batch_shape, step_flops
    from qwen_swe.train.config.schema import PRESETS, SAMPLED_SUB_TALKER_FRAMES

    host = HOSTS["r9700-32gb"]
    every = estimate(released(), Settings(), host)
    quarter = estimate(released(), Settings(sub_talker_frames=0.25), host)
    assert quarter.batch["scored_frames"] == every.batch["target_frames"] // 4
    assert quarter.forward_backward_peak < 0.75 * every.forward_backward_peak
    flops = step_flops(released(), batch_shape(Settings()), 1500)
    sampled = step_flops(released(), batch_shape(Settings(sub_talker_frames=0.0625)), 1500)
    assert sampled["talker"] == flops["talker"] and sampled["code_predictor"] == pytest.approx(
        flops["code_predictor"] / 16, rel=0.01)
    advice = recommend(released(), Settings(), host)
    assert "sub_talker_frames" in advice.savers and advice.settings["sub_talker_frames"] == SAMPLED_SUB_TALKER_FRAMES
    assert "--sub-talker-frames 0.25" in render(every, advice)
    assert PRESETS["pilot"]["objective"]["sub_talker_frames"] == SAMPLED_SUB_TALKER_FRAMES  # one value for both
    with pytest.raises(ValueError, match="--sub-talker-frames: must be in"):
        estimate(released(), Settings(sub_talker_frames=0.0), host)


def test_the_cpu_path_of_8_bit_adam_is_not_estimated_and_each_plan_names_its_optimizer_path():
    with pytest.raises(ValueError, match="8-bit AdamW on GPUs only"):
        estimate(released(), Settings(optimizer="adamw_8bit"), cpu_host(64 * GB))
    advice = recommend(released(), Settings(precision="fp32"), cpu_host(24 * GB))
    assert "adamw_8bit" not in advice.savers  # combinations the planner cannot model here are not offered
    gpu = estimate(released(), Settings(optimizer="adamw_8bit"), HOSTS["r9700-32gb"])
    assert any("bitsandbytes 8-bit AdamW, its GPU path" in note for note in gpu.notes)
