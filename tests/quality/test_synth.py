"""quality/synth.py through `qwen-swe synth`: a custom voice speaks, with its record and settings, and the errors
name the fix (no Swedish row, unknown speaker, a checkpoint outside its run)."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from qwen_swe.cli import main


def test_synth_command_custom_voice_and_its_errors(tiny_custom, tmp_path):
    model = tmp_path / "custom"
    shutil.copytree(tiny_custom, model)
    runner = CliRunner()
    args = ["synth", str(model), "--out", str(tmp_path / "out"), "--text", "Hej på dig!", "--max-new-tokens", "3"]

    no_swedish = runner.invoke(main, args + ["--speaker", "alva"])
    assert no_swedish.exit_code != 0
    assert f"language swedish is not registered in {model / 'config.json'}: run `qwen-swe add-language" \
        in no_swedish.output

    from qwen_swe.language import add_language_to_folder

    add_language_to_folder(model, "swedish")
    unknown = runner.invoke(main, args + ["--speaker", "nils"])
    assert unknown.exit_code != 0 and "speaker nils not in the model: available alva, bertil" in unknown.output

    done = runner.invoke(main, args + ["--speaker", "alva", "--greedy", "--subtalker-greedy", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output[done.output.index("{"):])
    (record,) = summary["files"]
    assert summary["settings"]["do_sample"] is False and summary["settings"]["max_new_tokens"] == 3
    assert record["file"] == "000_alva.wav" and (tmp_path / "out" / record["file"]).is_file()
    assert record["cut"] == (record["frames"] >= 2) and record["eos_reached"] == (not record["cut"])
    assert {"seconds", "rms_dbfs", "peak", "silence_rate"} <= set(record)

    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000010"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("10\n")
    (checkpoint / "trainer_state.json").write_text("{}")
    refused = runner.invoke(main, ["synth", str(checkpoint), "--out", str(tmp_path / "x"), "--speaker", "alva"])
    # a checkpoint goes through the exporter first, which names what a real one needs
    assert refused.exit_code != 0 and "a checkpoint must stay inside its run directory" in refused.output
