"""Trainer hooks: work that runs at fixed points of the training loop without the trainer knowing what it is.

In-training synthesis (`qwen_swe.quality.training_audio.TensorBoardSynthesis`) is one; a quality loop or a tuning
trial's pruner plugs in the same way. The caller that builds the trainer passes its hooks (`qwen-swe train` wires
the ones the run config asks for), so `qwen_swe.train` never imports what its hooks need.

A hook gets the trainer itself and may read: `config`, `accelerator`, `main` (true on the main process),
`run_dir`, `step`, `wrapper` (the official `Qwen3TTSModel` around the very network being trained), `device_type`,
`zero_stage`, `last_eval`, and call `say(...)` (prints on the main process) and `request_stop(reason, finished)`
(checkpoint and stop after this step; `finished=True` ends the run as finished with the reason, e.g. a quality gate
met, instead of as interrupted). Every method is called on every rank; a hook that works on one process only must
keep the ranks in step itself (`accelerator.wait_for_everyone()`, or broadcast what it decided). A hook must not
change the training RNG streams or the weights.

A hook with counters (rounds scored, patience) makes them part of the trainer state: `state_dict()` is saved in
every checkpoint under the hook's name and handed back to `load_state_dict()` on resume. A hook may ask for a
checkpoint at a step (`wants_checkpoint`), and one hook may choose which checkpoint is `best` instead of the
held-out loss (`judges_best` and `best_record`: the quality loop keeps its best round). `report()` adds the hook's
summary to report.json.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional


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

    judges_best = False  # true: this hook, not the held-out loss, decides which checkpoint is `best`

    def state_dict(self) -> Optional[dict[str, Any]]:
        """What a resumed run needs to continue this hook exactly (JSON-serialisable), or None for nothing."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict()` returned when the checkpoint being resumed was saved."""

    def wants_checkpoint(self, step: int) -> bool:
        """True to have a checkpoint saved at `step` whatever `run.checkpoint_every` says."""
        return False

    def best_record(self, step: int) -> Optional[dict[str, Any]]:
        """With `judges_best`: what best.json records when the checkpoint saved at `step` is the new best, else
        None."""
        return None

    def report(self) -> Optional[dict[str, Any]]:
        """This hook's summary for report.json (under its name), or None."""
        return None


def from_main_process(value: Any) -> Any:
    """`value` as the main process (rank 0) has it, on every rank (nothing to do in one process): how work done on
    the main process alone (scoring a quality round, owning a tuning trial) lets every rank decide alike."""
    from accelerate import PartialState

    if PartialState().num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


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

    def state_dict(self) -> dict[str, Any]:
        """{hook name: its state} for the hooks that keep one (saved in trainer_state.json)."""
        states = {hook.name: hook.state_dict() for hook in self.hooks}
        return {name: state for name, state in states.items() if state is not None}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for hook in self.hooks:
            if hook.name in states:
                hook.load_state_dict(states[hook.name])

    def wants_checkpoint(self, step: int) -> bool:
        return any(hook.wants_checkpoint(step) for hook in self.hooks)

    def best_judge(self) -> Optional[TrainerHook]:
        """The hook that decides which checkpoint is `best`, if one does (else the held-out loss decides)."""
        return next((hook for hook in self.hooks if hook.judges_best), None)

    def report(self) -> dict[str, Any]:
        reports = {hook.name: hook.report() for hook in self.hooks}
        return {name: report for name, report in reports.items() if report is not None}


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
