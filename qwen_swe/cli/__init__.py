"""`qwen-swe`: the command line. Thin by design: parse, call the library, print.

The commands live by concern in the modules of this package (model, training, shards, quality, export, plan);
this module holds the top-level group and registers them. Heavy imports (torch, transformers, qwen_tts) happen
inside the commands, so that `qwen-swe --help` stays fast.
"""

from __future__ import annotations

import click

from . import export, ingest, model, plan, quality, shards, training, tune


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="qwen-swe")
def main() -> None:
    """Teach Qwen3-TTS (12 Hz Base, 0.6B / 1.7B) to speak Swedish.

    \b
    Start here:
      qwen-swe env                          what this machine offers (GPU, bf16, attention, DeepSpeed, 8-bit Adam)
      qwen-swe init-tiny runs/tiny          a tiny random-weight model folder for trying things out
      qwen-swe add-language runs/tiny       register "swedish" as a language the model can be conditioned on
      qwen-swe parity --model runs/tiny     prove the training graph equals what inference runs
      qwen-swe ingest data/book --audio book.m4b --text book.txt   long recordings -> aligned clips
      qwen-swe shards build data/shards --model runs/tiny --manifest corpus.jsonl
      qwen-swe launch -m qwen_swe train --preset smoke model.path=runs/tiny data.shards=data/shards ...
      qwen-swe tune --config short.yaml --space space.yaml --trials 20 --study-dir studies/lr
    """


for _module in (model, training, shards, ingest, quality, export, plan, tune):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
