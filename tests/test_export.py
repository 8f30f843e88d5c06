"""`qwen-swe export`: a LoRA run's checkpoint becomes folders the official qwen_tts API loads and speaks Swedish with,
in both modes; the merged weights compute what the LoRA network computed; the guards refuse what cannot be exported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.model_card import read_front_matter

from .helpers import random_samples
from .launching import launch

STEPS = 3


def train(args: list[str]) -> subprocess.CompletedProcess:
    return launch([sys.executable, "-m", "qwen_swe", "train", *args])


def cli(args: list[str]):
    """`qwen-swe ...` in this process (the model code is already imported here)."""
    from click.testing import CliRunner

    from qwen_swe.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def lora_run(tiny_06b, tmp_path_factory):
    """A short single-process LoRA run on synthetic shards (speakers spk0..spk2), with its own copy of the base."""
    root = tmp_path_factory.mktemp("export")
    base = root / "base"
    shutil.copytree(tiny_06b, base)
    shards = synthetic_shards(root / "shards", shards=2, per_shard=12)
    run_dir = root / "run"
    trained = train(["--preset", "smoke", f"model.path={base}", f"data.shards={shards}",
                   f"run.output_dir={run_dir}", f"run.max_steps={STEPS}", f"schedule.total_steps={STEPS}",
                   "run.eval_every=0", "data.frame_budget=200", "train.mode=lora", "train.freeze=[text_embedding]"])
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    return {"base": base, "shards": shards, "run": run_dir}


def objective_for(network):
    from qwen_swe.objective import TalkerObjective

    return TalkerObjective(network).eval()


def trained_lora_network(run_dir: Path):
    """The LoRA network exactly as training left it (adapters separate, not merged)."""
    from qwen_swe.export import load_source, rebuild_trained_model

    _, network = rebuild_trained_model(load_source(run_dir), merge_lora=False)
    assert hasattr(network, "peft_config")
    return network


def test_lora_export_loads_in_qwen_tts_speaks_swedish_and_equals_the_lora_forward(lora_run, tmp_path):
    from qwen_swe.layout import SequenceLayout
    from qwen_swe.modeling import import_qwen_tts, load_model

    out = tmp_path / "base-export"
    result = cli(["export", str(lora_run["run"]), "--out", str(out), "--dtype", "float32", "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.stdout)
    assert summary["step"] == STEPS and summary["mode"] == "base"

    # the official API loads it unchanged and clones a voice in Swedish
    Qwen3TTSModel = import_qwen_tts().Qwen3TTSModel
    model = Qwen3TTSModel.from_pretrained(str(out), dtype=torch.float32)
    assert "swedish" in model.get_supported_languages()
    reference = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    torch.manual_seed(0)
    wavs, sample_rate = model.generate_voice_clone(text="Hej, hur mår du i dag?", language="swedish",
                                                   ref_audio=(reference, 24000), x_vector_only_mode=True,
                                                   max_new_tokens=24)
    assert sample_rate == 24000 and wavs[0].ndim == 1 and wavs[0].size > 0

    # merged weights compute what the LoRA network computed, and training changed the talker
    exported = load_model(out).model.eval()
    lora = trained_lora_network(lora_run["run"]).eval()
    base = load_model(lora_run["base"]).model.eval()
    layout = SequenceLayout(exported.config, model.processor.tokenizer)
    batch = layout.collate([layout.build(s, "streaming") for s in random_samples(exported, 3, seed=5)])
    with torch.no_grad():
        _, merged_logits = objective_for(exported).talker_forward(batch)
        _, lora_logits = objective_for(lora).talker_forward(batch)
        merged_loss = objective_for(exported)(batch)["loss"]
        lora_loss = objective_for(lora)(batch)["loss"]
    torch.testing.assert_close(merged_logits, lora_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged_loss, lora_loss, rtol=1e-6, atol=1e-6)
    q_proj = "talker.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(exported.state_dict()[q_proj], base.state_dict()[q_proj])

    card = read_front_matter(out / "README.md")
    assert card["base_model"] == "base" and card["language"] == ["sv"] and "text-to-speech" in card["tags"]
    assert f"| steps | {STEPS}" in (out / "README.md").read_text()
    assert "sub-talker weight 0.3, sub-talker loss on 1 of the frames per step" in (out / "README.md").read_text()


def test_custom_voice_export_adds_speakers_at_free_rows_and_speaks(lora_run, tmp_path):
    from qwen_swe.data.shard_format import read_npy
    from qwen_swe.modeling import import_qwen_tts, load_model_config

    out = tmp_path / "voices"
    result = cli(["export", str(lora_run["run"]), "--out", str(out), "--mode", "custom-voice", "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    speakers = json.loads(result.stdout)["speakers"]
    assert sorted(speakers) == ["spk0", "spk1", "spk2"]

    base_config = load_model_config(lora_run["base"]).talker_config
    config = json.loads((out / "config.json").read_text())
    assert config["tts_model_type"] == "custom_voice" and config["dtype"] == "bfloat16"
    talker = config["talker_config"]
    taken_before = {int(v) for v in base_config.codec_language_id.values()} | {int(v) for v in
                                                                                 base_config.spk_id.values()}
    assert not set(speakers.values()) & taken_before  # nothing overwritten
    for name, row in base_config.spk_id.items():
        assert talker["spk_id"][name] == row
    assert "swedish" in talker["codec_language_id"]
    # which training speaker each voice was made from, for `qwen-swe eval --mode custom`
    assert config["qwen_swe"]["export"]["speaker_sources"] == {"spk0": "spk0", "spk1": "spk1", "spk2": "spk2"}

    # each row holds the fp32 mean of that speaker's x-vectors, read here straight from the tars
    import tarfile
    sums: dict[str, list[np.ndarray]] = {}
    for tar_path in sorted((lora_run["shards"] / "train").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[: -len(".json")]
                sums.setdefault(json.loads(data)["speaker"], []).append(read_npy(members[f"{key}.xvector.npy"]))
    from safetensors.torch import load_file
    rows = load_file(str(out / "model.safetensors"))["talker.model.codec_embedding.weight"].float()
    for name, row in speakers.items():
        expected = torch.from_numpy(np.mean(np.stack(sums[name]).astype(np.float64), axis=0)).float()
        torch.testing.assert_close(rows[row], expected, rtol=1e-2, atol=1e-2)  # stored in bf16
    assert not any(k.startswith("speaker_encoder.") for k in load_file(str(out / "model.safetensors")))

    model = import_qwen_tts().Qwen3TTSModel.from_pretrained(str(out), dtype=torch.float32)
    assert {"spk0", "spk1", "spk2"} <= set(model.get_supported_speakers())
    torch.manual_seed(0)
    wavs, sample_rate = model.generate_custom_voice(text="God morgon, Sverige!", speaker="spk1",
                                                    language="swedish", max_new_tokens=24)
    assert sample_rate == 24000 and wavs[0].size > 0
    assert read_front_matter(out / "README.md")["language"] == ["sv"]


def test_export_refuses_a_foreign_base_an_incomplete_checkpoint_and_a_missing_base(lora_run, tiny_17b, tmp_path):
    foreign = cli(["export", str(lora_run["run"]), "--out", str(tmp_path / "a"), "--base", str(tiny_17b)])
    assert foreign.exit_code != 0 and "not the base model this run trained" in foreign.output

    run_copy = tmp_path / "run"
    shutil.copytree(lora_run["run"], run_copy)
    checkpoint = next((run_copy / "checkpoints").glob("step-*"))
    (checkpoint / "COMPLETE").unlink()
    incomplete = cli(["export", str(checkpoint), "--out", str(tmp_path / "b")])
    assert incomplete.exit_code != 0 and "incomplete checkpoint" in incomplete.output

    config = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(config.replace(str(lora_run["base"]), str(tmp_path / "gone")))
    (checkpoint / "COMPLETE").write_text(f"{STEPS}\n")
    no_base = cli(["export", str(run_copy), "--out", str(tmp_path / "c")])
    assert no_base.exit_code != 0 and "base model folder" in no_base.output and "--base" in no_base.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_lora_checkpoint_holds_only_the_weights_that_train(lora_run):
    """Frozen weights are the base model's: a checkpoint stores the adapters and the trainable extras only (a 1.7B
    LoRA checkpoint held 7.8 GB of fp32 weights for 32M trainable parameters before)."""
    from safetensors import safe_open

    checkpoint = sorted((lora_run["run"] / "checkpoints").glob("step-*"))[-1]
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        parameters = [key for key in handle.keys() if "weight" in key or "bias" in key]
    assert any("lora_A" in key for key in parameters) and any("text_projection" in key for key in parameters)
    assert not any("base_layer" in key or "text_embedding" in key or "speaker_encoder" in key for key in parameters)
    base_bytes = (lora_run["base"] / "model.safetensors").stat().st_size
    assert (checkpoint / "model.safetensors").stat().st_size < base_bytes / 4
