"""data/verify.py: `shards inspect` (hours, speakers) and `shards verify` naming corrupted, truncated and missing
shards."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from qwen_swe.cli import main


def test_inspect_prints_hours_and_speakers(reference_build):
    runner = CliRunner()
    text = runner.invoke(main, ["shards", "inspect", str(reference_build)])
    assert text.exit_code == 0, text.output
    assert "train" in text.output and "3 speakers" in text.output and " h " in text.output
    info = json.loads(runner.invoke(main, ["shards", "inspect", str(reference_build), "--json"]).output)
    assert info["splits"]["train"]["samples"] == 6 and info["splits"]["eval"]["speakers"] == 1
    assert info["splits"]["train"]["hours"] > 0.001


def test_verify_passes_and_names_corruption(reference_build, tmp_path):
    runner = CliRunner()
    good = runner.invoke(main, ["shards", "verify", str(reference_build), "--no-progress"])
    assert good.exit_code == 0 and "OK" in good.output, good.output

    corrupt = tmp_path / "corrupt"
    shutil.copytree(reference_build, corrupt)
    entries = json.loads((corrupt / "train" / "train-000001.entries.json").read_text(encoding="utf-8"))
    key = entries[1]["key"]
    offset, size = entries[1]["members"]["codes.npy"]
    tar_path = corrupt / "train" / "train-000001.tar"
    data = bytearray(tar_path.read_bytes())
    data[offset + size - 8:offset + size] = b"\xff" * 8  # codes become -1: outside the codebook
    tar_path.write_bytes(bytes(data))
    result = runner.invoke(main, ["shards", "verify", str(corrupt), "--no-progress"])
    assert result.exit_code == 1
    assert f"train/train-000001.tar key {key}" in result.output and "outside" in result.output
    assert "train/train-000001.tar: sha256 differs" in result.output

    truncated = tmp_path / "truncated"
    shutil.copytree(reference_build, truncated)
    tar_path = truncated / "train" / "train-000002.tar"
    tar_path.write_bytes(tar_path.read_bytes()[:1500])
    last_key = json.loads((truncated / "train" / "train-000002.entries.json").read_text())[-1]["key"]
    result = runner.invoke(main, ["shards", "verify", str(truncated), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 1 and not report["ok"]
    named = {(p["shard"], p["key"]) for p in report["problems"]}
    assert ("train/train-000002.tar", None) in named and ("train/train-000002.tar", last_key) in named

    missing = tmp_path / "missing"
    shutil.copytree(reference_build, missing)
    (missing / "eval" / "eval-000000.tar").unlink()
    result = runner.invoke(main, ["shards", "verify", str(missing), "--no-progress"])
    assert result.exit_code == 1 and "eval/eval-000000.tar: shard file is missing" in result.output
