"""The command line: a fast --help, and `env` as text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_help_does_not_import_torch():
    probe = run("-c", "import sys; from click.testing import CliRunner; from qwen_swe.cli import main; "
                      "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
                      "assert 'init-tiny' in r.output and 'parity' in r.output; "
                      "print(sorted(m for m in ('torch', 'transformers', 'qwen_tts') if m in sys.modules))")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_env_json_and_text():
    result = run("-m", "qwen_swe", "env", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["packages"]["torch"] and info["packages"]["qwen-tts"] == "0.1.1"
    assert info["device"] == "cpu" and info["bf16_supported"] is True
    assert info["attention_implementations"]["sdpa"] == "available"
    assert info["bitsandbytes"] == "loads"
    assert "cpu_adam" in info["deepspeed_ops"]
    from qwen_swe.envinfo import render

    text = render(info)  # the text view of the same facts
    assert "bf16 supported:  yes" in text and "deepspeed ops" in text and "qwen-tts       0.1.1" in text
