"""Messages from libraries that read like failures to a new user but are not: each is silenced here, with why.

qwen_tts's SoX banner is silenced where qwen_tts is imported (`modeling.import_sox_quietly`). Anything else a run
prints is either ours or a library telling the user something they can act on.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Iterator


def quiet_cpu_accelerator() -> None:
    """On a machine where torch sees no GPU, tell DeepSpeed it is the CPU: it would choose the same on its own, but
    with a warning in every process ("Setting accelerator to CPU ... we were unable to detect it"). Must run before
    deepspeed is imported."""
    import torch

    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def quiet_training_warnings() -> None:
    # DeepSpeed ZeRO gathers with a torch function torch has deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)
    # A skipped update (non-finite numbers, or no usable sample) still steps the schedule, on purpose: step counts
    # are optimizer steps, skipped or not.
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`",
                            category=UserWarning)


def quiet_launcher_warnings() -> None:
    """accelerate's launcher warns "Port 29500 is already in use" when another job on the machine holds its default
    rendezvous port, then finds a free one itself: a second run on one machine (or a test beside another) is a normal
    case, not a failure. Where the free port cannot be used either, the launch fails with its own error."""
    warnings.filterwarnings("ignore", message=r"Port `\d+` is already in use", category=UserWarning)


@contextmanager
def quiet_generation_notes() -> Iterator[None]:
    """transformers' generate() says "Setting `pad_token_id` to `eos_token_id`" on every call, because the released
    generation configs name no pad id; nothing a user can act on. Its logging is raised to errors for the call."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(before)
