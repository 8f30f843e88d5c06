"""qwen-swe: teach Qwen3-TTS to speak Swedish. See README.md."""

__version__ = "0.1.0"
