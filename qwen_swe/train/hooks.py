"""Trainer hooks: work that runs at fixed points of the training loop without the trainer knowing what it is.

In-training synthesis (`qwen_swe.quality.training_audio.TensorBoardSynthesis`) is one; a quality loop or a tuning
trial's pruner plugs in the same way. The caller that builds the trainer passes its hooks (`qwen-swe train` wires
the ones the run config asks for), so `qwen_swe.train` never imports what its hooks need.

A hook gets the trainer itself and may read: `config`, `accelerator`, `main` (true on the main process),
`run_dir`, `step`, `wrapper` (the official `Qwen3TTSModel` around the very network being trained), `device_type`,
`zero_stage`, `last_eval`, and call `say(...)` (prints on the main process) and `request_stop(reason)` (checkpoint
and stop after this step). Every method is called on every rank; a hook that works on one process only must keep
the ranks in step itself (`accelerator.wait_for_everyone()`). A hook must not change the training RNG streams or
the weights.
"""

from __future__ import annotations

from typing import Any, Iterable


class TrainerHook:
    """Override what you need; each method defaults to doing nothing."""

    name = "hook"

    def on_train_start(self, trainer: Any) -> None:
        """After setup and resume, before the first step of this process."""

    def on_step_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """After each optimizer step (`record` is the step record metrics.jsonl gets)."""

    def on_eval(self, trainer: Any, results: dict[str, Any]) -> None:
        """After each held-out eval during training (`results`: step, loss, accuracies)."""

    def on_train_end(self, trainer: Any, exit_code: int) -> None:
        """When the loop ends, for whatever reason (finished, interrupted, stopped on non-finite numbers)."""


class Hooks:
    """Calls each hook in order."""

    def __init__(self, hooks: Iterable[TrainerHook] = ()):
        self.hooks = list(hooks)

    def names(self) -> set[str]:
        return {hook.name for hook in self.hooks}

    def on_train_start(self, trainer: Any) -> None:
        for hook in self.hooks:
            hook.on_train_start(trainer)

    def on_step_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_step_end(trainer, record)

    def on_eval(self, trainer: Any, results: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_eval(trainer, results)

    def on_train_end(self, trainer: Any, exit_code: int) -> None:
        for hook in self.hooks:
            hook.on_train_end(trainer, exit_code)


SLOW_STEP_ENV = "QWEN_SWE_DRILL_SLOW_STEP"  # seconds every step lasts at least: a stop drill's long step


class SlowStepDrill(TrainerHook):
    """Makes every step last `seconds` longer, for drills of the stop path on steps longer than a launcher's grace
    period (a real model's step plus its checkpoint can take minutes). Set through QWEN_SWE_DRILL_SLOW_STEP."""

    name = "slow-step drill"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, trainer: Any, record: dict[str, Any]) -> None:
        import time

        time.sleep(self.seconds)


def drill_hooks_from_env() -> list[TrainerHook]:
    """The drills the environment asks for; none in a normal run."""
    import os

    seconds = os.environ.get(SLOW_STEP_ENV)
    return [SlowStepDrill(float(seconds))] if seconds else []
