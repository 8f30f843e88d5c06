"""cli/quality.py: `eval` and `compare` refuse what is missing before loading a model, naming the option that fixes
it."""

from __future__ import annotations

from click.testing import CliRunner

from qwen_swe.cli import main

from ..helpers import eval_report, write_eval


def test_eval_and_compare_commands_explain_what_is_missing(tmp_path):
    """Refused before any model is loaded, with the option that fixes it."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    runner = CliRunner()
    no_shards = runner.invoke(main, ["eval", str(model), "--out", str(tmp_path / "e")])
    assert no_shards.exit_code != 0 and "the held-out loss needs --shards" in no_shards.output
    bad_layout = runner.invoke(main, ["eval", str(model), "--out", str(tmp_path / "e"), "--layouts", "streamin"])
    assert bad_layout.exit_code != 0 and "streamin: choose from non_streaming" in bad_layout.output
    evaluated = write_eval(tmp_path / "e1", eval_report("a"))
    folder_without_out = runner.invoke(main, ["compare", str(evaluated), str(model)])
    assert folder_without_out.exit_code != 0 and "give --out so compare can evaluate it" in folder_without_out.output
    bad_gate = runner.invoke(main, ["compare", str(evaluated), str(evaluated), "--gates", "loudness"])
    assert bad_gate.exit_code != 0 and "unknown gate(s) loudness" in bad_gate.output
