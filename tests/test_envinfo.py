"""`qwen-swe env` (envinfo.py): the facts as JSON and as text, for whatever machine runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import torch


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_env_json_and_text():
    result = run("-m", "qwen_swe", "env", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["packages"]["torch"] and info["packages"]["qwen-tts"] == "0.1.1"
    if torch.cuda.is_available():
        expected_device = "rocm" if torch.version.hip else "cuda"
        expected_bf16 = bool(torch.cuda.is_bf16_supported())
    else:
        expected_device, expected_bf16 = "cpu", True
    assert info["device"] == expected_device and info["bf16_supported"] is expected_bf16
    assert info["bf16_matmul_time_vs_fp32"] > 0  # measured, not assumed
    assert info["attention_implementations"]["sdpa"] == "available"
    assert info["bitsandbytes"] == "loads"
    assert "cpu_adam" in info["deepspeed_ops"]
    from qwen_swe.envinfo import render

    text = render(info)  # the text view of the same facts
    assert f"bf16 supported:  {'yes' if info['bf16_supported'] else 'no'}" in text and "deepspeed ops" in text and "qwen-tts       0.1.1" in text
