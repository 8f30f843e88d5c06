#!/usr/bin/env bash
# Build (or reuse) the CPU development environment and link it as ./.venv.
#
# Why not a plain `pip install -e .`: with no torch installed, pip resolves `torch` to a multi-GB CUDA build, PyPI's
# torchaudio is a CUDA build whose compiled libraries fail to load on CPU, and qwen-tts pulls gradio (demo only).
# So: the CPU torch wheel first, torchaudio with --no-deps and without its compiled libs (qwen_tts only uses the
# pure-Python torchaudio.compliance.kaldi), qwen-tts with --no-deps, then every other dependency from the lock file.
#
# The environment lives in a cache directory keyed by the hash of everything that decides its contents, so a fresh
# clone (CI) reuses it in seconds and a change to a pin builds a new one beside it. A build happens in a temporary
# directory and is renamed into place only when complete, so an interrupted build is never reused.
#
# Environment: QWEN_SWE_CACHE (default ~/.cache/qwen-swe), PYTHON (default python3.11 or python3).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cache="${QWEN_SWE_CACHE:-$HOME/.cache/qwen-swe}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

torch_pin="torch==2.13.0"
torchaudio_pin="torchaudio==2.11.0"
qwen_tts_pin="qwen-tts==0.1.1"
deepspeed_pin="deepspeed==0.19.8"

key=$( { "$python" --version; uname -m; echo "$torch_pin $torchaudio_pin $qwen_tts_pin $deepspeed_pin";
         cat requirements/cpu-lock.txt; } | sha256sum | cut -c1-16)
venv="$cache/venv-$key"

if [ ! -f "$venv/.complete" ]; then
  echo "[setup] building the environment in $venv (one time, a few minutes)"
  mkdir -p "$cache"
  tmp="$cache/.building-$key-$$"
  rm -rf "$tmp"
  # venvs are not relocatable: build at the final path, guarded by a lock, and mark complete at the end.
  exec 9>"$cache/.lock-$key"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    pip="$venv/bin/pip"
    "$pip" install --quiet "$torch_pin"
    "$pip" install --quiet -r requirements/cpu-lock.txt
    "$pip" install --quiet --no-deps "$torchaudio_pin" "$qwen_tts_pin"
    rm -f "$venv"/lib/python3*/site-packages/torchaudio/lib/*.so
    # deepspeed ships only an sdist whose setup imports torch: build it against the torch installed above.
    "$pip" install --quiet --no-build-isolation "$deepspeed_pin"
    touch "$venv/.complete"
  fi
  flock -u 9
fi

# espeak-ng renders transcripts for `qwen-swe ingest`'s offline aligner, and its tests make their long recordings
# with espeak-ng and sox: system packages, installed once where apt is available and we may use it.
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing espeak-ng and sox (Debian packages)"
    apt-get install -y -q espeak-ng sox libsox-fmt-all >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng sox libsox-fmt-all >/dev/null 2>&1; } \
      || echo "[setup] warning: could not install espeak-ng and sox; qwen-swe ingest and its tests need them"
  else
    echo "[setup] warning: espeak-ng and sox are missing; qwen-swe ingest and its tests need them" \
      "(apt install espeak-ng sox)"
  fi
fi

ln -sfn "$venv" .venv
# The editable install provides the `qwen-swe` console script; it is cheap, so it is redone for every clone.
.venv/bin/pip install --quiet --no-deps --no-build-isolation -e . >/dev/null
echo "[setup] environment ready: .venv -> $venv"
