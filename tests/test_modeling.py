"""modeling.py: loading model folders; qwen_tts imports without banners that read like failures."""

from __future__ import annotations

import subprocess
import sys

from .launching import ROOT, environment


def test_qwen_tts_imports_without_the_sox_banner(tmp_path):
    # a machine without the SoX program, here or not: the probe's shell finds nothing on an empty PATH
    without_sox = environment(PATH=str(tmp_path))
    probe = "from qwen_swe.modeling import import_qwen_tts; import_qwen_tts(); import sox; print('ok')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                            env=without_sox, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    assert "SoX could not be found" not in result.stderr and "sox: not found" not in result.stderr
    # without the quiet import, the same probe does print it (the test would notice the banner coming back)
    plain = subprocess.run([sys.executable, "-c", "import sox"], capture_output=True, text=True, cwd=ROOT,
                           env=without_sox, timeout=300)
    assert "SoX could not be found" in plain.stderr
