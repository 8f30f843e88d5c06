"""The `qwen-swe` command group: --help lists the commands without importing torch."""

from __future__ import annotations

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
