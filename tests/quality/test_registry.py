"""quality/registry.py through `qwen-swe compare --registry` and `rollback`: promote, keep, refuse a stale current
model, roll back, and the history."""

from __future__ import annotations

import json

from click.testing import CliRunner

from qwen_swe.cli import main

from ..helpers import eval_report, write_eval


def test_compare_command_promotes_keeps_and_rolls_back(tmp_path):
    models = {name: tmp_path / "models" / name for name in ("v1", "v2", "v3")}
    for folder in models.values():
        folder.mkdir(parents=True)
    evals = {"v1": write_eval(tmp_path / "e1", eval_report(str(models["v1"]))),
             "v2": write_eval(tmp_path / "e2", eval_report(str(models["v2"]), cer=0.05)),
             "v3": write_eval(tmp_path / "e3", eval_report(str(models["v3"]), heldout_loss=2.5))}
    registry = tmp_path / "registry"
    runner = CliRunner()

    promoted = runner.invoke(main, ["compare", str(evals["v1"]), str(evals["v2"]), "--registry", str(registry)])
    assert promoted.exit_code == 0, promoted.output
    assert "PROMOTE" in promoted.output
    assert (registry / "current").resolve() == models["v2"] and (registry / "previous").resolve() == models["v1"]
    assert json.loads((evals["v2"] / "comparison.json").read_text())["verdict"] == "promote"

    kept = runner.invoke(main, ["compare", str(evals["v2"]), str(evals["v3"]), "--registry", str(registry), "--json"])
    assert kept.exit_code == 1
    assert json.loads(kept.output)["verdict"] == "keep"
    assert (registry / "current").resolve() == models["v2"]  # the worse model was not promoted

    stale = runner.invoke(main, ["compare", str(evals["v1"]), str(evals["v3"]), "--registry", str(registry)])
    assert stale.exit_code != 0 and "compare the candidate against the current model" in stale.output

    rolled = runner.invoke(main, ["rollback", str(registry)])
    assert rolled.exit_code == 0, rolled.output
    assert (registry / "current").resolve() == models["v1"] and (registry / "previous").resolve() == models["v2"]
    events = [e["event"] for e in json.loads((registry / "registry.json").read_text())["history"]]
    assert events == ["init", "promote", "keep", "rollback"]
