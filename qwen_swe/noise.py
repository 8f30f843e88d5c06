"""Messages from libraries that read like failures to a new user but are not: each is silenced here, with why.

qwen_tts's SoX banner is silenced where qwen_tts is imported (`modeling.import_sox_quietly`). Anything else a run
prints is either ours or a library telling the user something they can act on.
"""

from __future__ import annotations

import os
import warnings


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
