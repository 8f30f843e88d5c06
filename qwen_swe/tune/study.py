"""A study: Optuna over short training runs; each trial is a real run of the same Trainer in its own run folder.

The study folder:

    study.db                 Optuna's SQLite storage: trials, parameters, intermediate values, states
    base.yaml, space.yaml    the run config every trial starts from and the search space (a resume refuses others)
    trials/trial-0007/       trial 7's run folder (config.yaml, metrics.jsonl, status.json, report.json; its
                             checkpoints are deleted when it ends unless --keep-checkpoints)
    best.yaml, report.md, plots/*.png    written after the trials (report.py)

Sampling is TPE, seeded (`--seed`): an uninterrupted single-process study draws the same trials every time; a
process that resumes or joins the study seeds with the seed plus the trials already there, so it draws anew. The
pruner (median by default) reads the objective at every held-out eval of a trial (the held-out loss, or a quality
metric at every quality round) and stops a trial that does worse than the trials before it at the same step; the
trial's run then ends as finished with the reason ("pruned by the tuner at step 4 ...").

Resuming (`--resume`): finished and pruned trials stay; a trial interrupted by SIGTERM/Ctrl-C is marked failed and
queued again with the same parameters; a trial whose process died without a word (kill -9, a lost node) keeps its
"running" state until its heartbeat is `3 x --heartbeat` seconds old, then it is failed and retried the same way.
Several processes may run trials against one study (`--resume` in each): SQLite serialises them, the heartbeat
tells a live trial from a dead one, and each process stops when the study holds `--trials` finished trials.

Several processes per trial (`qwen-swe launch ... -m qwen_swe tune ...`): rank 0 owns the study and each trial
(samples it, reports to the pruner, records it); it broadcasts the trial's parameters to the other ranks, which run
the same Trainer and receive every pruning decision from rank 0 (the pattern Optuna documents for
torch.distributed). So a trial can be a 2-GPU DeepSpeed run.
"""

from __future__ import annotations

import gc
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..files import write_text_atomic
from ..train.config import QUALITY_METRICS, ConfigError, RunConfig, load_config
from ..train.hooks import TrainerHook, from_main_process
from .space import SearchSpace, load_space

STUDY_NAME = "qwen-swe"
STUDY_DB = "study.db"
BASE_CONFIG = "base.yaml"
SPACE_FILE = "space.yaml"
TRIALS_DIR = "trials"
PRUNERS = ("median", "percentile", "none")
FINISHED_STATES = ("COMPLETE", "PRUNED")
FAILURES_IN_A_ROW = 3  # failed trials in a row after which the study stops: something is wrong beyond parameters


@dataclass
class StudySettings:
    study_dir: Path
    trials: int = 0  # finished (complete or pruned) trials the study should hold; 0: what the study was started with
    objective: Optional[str] = None  # a QUALITY_METRICS name; None: heldout_loss, or what the study was started with
    # Sampler and pruner settings: None takes what the study was started with (stored in it), else the default.
    seed: Optional[int] = None  # TPE seed (default 0)
    pruner: Optional[str] = None  # median (default) | percentile | none
    pruner_startup_trials: Optional[int] = None  # complete trials before the pruner judges anyone (default 2)
    pruner_warmup_steps: Optional[int] = None  # steps of a trial before the pruner judges it (default 0)
    random_trials: Optional[int] = None  # TPE samples at random for this many trials first (default 10)
    heartbeat_seconds: int = 60
    # A trial's checkpoints are deleted when it ends (a 1.7B trial's weights and optimizer state are tens of GB, and
    # best.yaml trains the winner again); true keeps them.
    keep_checkpoints: bool = False
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # trials to run first (parameter values)


SEARCH_DEFAULTS = {"seed": 0, "pruner": "median", "pruner_startup_trials": 2, "pruner_warmup_steps": 0,
                   "random_trials": 10}


def _resolve_search_settings(settings: StudySettings, stored: dict[str, Any]) -> dict[str, Any]:
    """Fill the sampler and pruner settings: given ones win, then the study's stored ones, then the defaults."""
    for name, default in SEARCH_DEFAULTS.items():
        if getattr(settings, name) is None:
            setattr(settings, name, stored.get(name, default))
    return {name: getattr(settings, name) for name in SEARCH_DEFAULTS}


@dataclass
class TrialResult:
    exit_code: int
    steps: int
    value: Optional[float]  # the objective at the trial's end
    stop_reason: Optional[str]
    pruned: bool
    interrupted: bool
    seconds: float


class StudyStopped(ValueError):
    """The study cannot go on (bad data, a run config a trial refused); the message says why and what to do."""


class TrialFailed(Exception):
    """This trial failed for a reason that belongs to its parameters (out of memory, an invalid combination): the
    study records it as failed and goes on."""


class TrialInterrupted(Exception):
    def __init__(self, number: int, params: dict[str, Any]):
        super().__init__(f"trial {number} interrupted")
        self.number, self.params = number, params


# ------------------------------------------------------------------------------------------ opening a study
def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study speaks through `say`
    return optuna


def storage_for(study_dir: Path, heartbeat_seconds: int = 60) -> Any:
    """The study's SQLite storage, with heartbeats: a trial whose process died is failed and queued again (at most
    three times) once its heartbeat is three intervals old."""
    import warnings

    _optuna()
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are marked experimental
        return RDBStorage(f"sqlite:///{(Path(study_dir) / STUDY_DB).resolve()}",
                          heartbeat_interval=heartbeat_seconds,
                          grace_period=3 * heartbeat_seconds,
                          heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=3))


def _sampler_and_pruner(settings: StudySettings, trials_so_far: int = 0) -> tuple[Any, Any]:
    """TPE seeded with the study's seed plus the trials it already holds: a process that resumes or joins a study
    draws anew instead of repeating the first process's draws."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=settings.seed + trials_so_far, n_startup_trials=settings.random_trials)
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                             n_warmup_steps=settings.pruner_warmup_steps)
    elif settings.pruner == "percentile":  # stricter: keeps only trials in the best quarter at each step
        pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=settings.pruner_startup_trials,
                                                 n_warmup_steps=settings.pruner_warmup_steps)
    elif settings.pruner == "none":
        pruner = optuna.pruners.NopPruner()
    else:
        raise ConfigError(f"--pruner: choose one of {', '.join(PRUNERS)}, got {settings.pruner!r}")
    return sampler, pruner


def check_objective(objective: str, base: RunConfig) -> None:
    """The objective must be something every trial measures."""
    if objective not in QUALITY_METRICS:
        raise ConfigError(f"--objective: unknown metric {objective!r}; choose one of {', '.join(QUALITY_METRICS)}")
    if not base.run.eval_every:
        raise ConfigError("run.eval_every: 0, but trials are judged on held-out evals; set run.eval_every (e.g. a "
                          "quarter of run.max_steps)")
    if objective != "heldout_loss":
        if not base.run.quality.every_evals:
            raise ConfigError(f"--objective {objective}: a quality metric needs the quality loop in every trial; set "
                              "run.quality.every_evals (and run.quality.asr for wer/cer)")
        if objective in ("wer", "cer") and not base.run.quality.asr:
            raise ConfigError(f"--objective {objective}: needs run.quality.asr (an ASR model folder)")


def open_study(settings: StudySettings, base: Optional[RunConfig], space: Optional[SearchSpace], resume: bool,
               say: Callable[[str], None] = print) -> tuple[Any, RunConfig, SearchSpace]:
    """Create the study (refusing a folder that holds one, unless resuming) or load it (refusing a changed run
    config, space or objective). Returns the study, the base run config and the space it runs."""
    optuna = _optuna()
    folder = Path(settings.study_dir)
    exists = (folder / STUDY_DB).is_file()
    if exists and not resume:
        raise ConfigError(f"--study-dir: {folder} holds a study already; continue it (or join it from another "
                          "process) with --resume, or choose another --study-dir")
    if exists:
        storage = storage_for(folder, settings.heartbeat_seconds)
        loaded = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        search = _resolve_search_settings(settings, loaded.user_attrs.get("search") or {})
        sampler, pruner = _sampler_and_pruner(settings, len(loaded.get_trials(deepcopy=False)))
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)
        base, space = _check_unchanged(study, folder, base, space, settings)
        study.set_user_attr("search", search)
        if settings.trials:
            study.set_user_attr("trials", settings.trials)
        settings.trials = settings.trials or int(study.user_attrs.get("trials", 0))
        settings.objective = study.user_attrs["objective"]
        _say_running(study, settings, say)
        return study, base, space
    if resume:
        say(f"--resume: no study in {folder} yet; starting one")
    if base is None or space is None:
        raise ConfigError("a new study needs a run config (--config and/or --preset with overrides) and --space")
    if settings.trials <= 0:
        raise ConfigError("--trials: how many finished trials the study should hold, e.g. --trials 20")
    settings.objective = settings.objective or "heldout_loss"
    search = _resolve_search_settings(settings, {})
    sampler, pruner = _sampler_and_pruner(settings)
    check_objective(settings.objective, base)
    space.check(base)
    from ..quality.training_audio import training_hooks

    try:
        training_hooks(base)  # the quality loop checks its sentences and model folders
    except ValueError as error:
        raise ConfigError(str(error)) from error
    for values in settings.enqueue:
        unknown = set(values) - {p.name for p in space.params}
        if unknown:
            raise ConfigError(f"--enqueue: {', '.join(sorted(unknown))} not in the search space "
                              f"({', '.join(p.name for p in space.params)})")
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage_for(folder, settings.heartbeat_seconds)
    write_text_atomic(folder / BASE_CONFIG, base.to_yaml())
    import yaml

    write_text_atomic(folder / SPACE_FILE, yaml.safe_dump(space.source, sort_keys=False, allow_unicode=True))
    direction = "minimize" if QUALITY_METRICS[settings.objective] == "lower" else "maximize"
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner,
                                direction=direction)
    study.set_user_attr("objective", settings.objective)
    study.set_user_attr("trials", settings.trials)
    study.set_user_attr("search", search)
    for values in settings.enqueue:
        study.enqueue_trial(values)
    say(f"study {folder}: {settings.trials} trials, objective {settings.objective} ({direction}), "
        f"{len(space.params)} parameter(s), TPE seed {settings.seed}, pruner {settings.pruner}")
    return study, base, space


def _check_unchanged(study: Any, folder: Path, base: Optional[RunConfig], space: Optional[SearchSpace],
                     settings: StudySettings) -> tuple[RunConfig, SearchSpace]:
    from ..train.provenance import fingerprint_changes

    stored_base = load_config(folder / BASE_CONFIG)
    stored_space = load_space(folder / SPACE_FILE)
    problems = []
    if base is not None:
        problems += [f"run config {line}" for line in
                     fingerprint_changes(_flat(stored_base.to_dict()), _flat(base.to_dict()))]
    if space is not None and space.source != stored_space.source:
        problems.append(f"search space: {stored_space.source} -> {space.source}")
    stored_objective = study.user_attrs.get("objective")
    if settings.objective and settings.objective != stored_objective:
        problems.append(f"objective: {stored_objective} -> {settings.objective}")
    if problems:
        raise ConfigError(f"--resume: {folder} was started with another setup:\n  " + "\n  ".join(problems)
                          + "\nresume without --config/--space/--objective (the study keeps its own), or start a "
                            "new study in another --study-dir")
    return stored_base, stored_space


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted names ({"optim.lr": ..., "data.layouts.icl": ...}), to list what differs."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _say_running(study: Any, settings: StudySettings, say: Callable[[str], None]) -> None:
    counts = trial_counts(study)
    say(f"study {settings.study_dir}: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
        f"{counts.get('FAIL', 0)} failed, {counts.get('WAITING', 0)} queued of {settings.trials}")
    running = [t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    if running:
        say(f"trial(s) {', '.join(map(str, running))} marked running: another process is on them, or their process "
            f"died; a trial without a heartbeat for {3 * settings.heartbeat_seconds} s is failed and run again")


def trial_counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def finished_trials(study: Any) -> int:
    counts = trial_counts(study)
    return sum(counts.get(state, 0) for state in FINISHED_STATES)


def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / TRIALS_DIR / f"trial-{number:04d}"


# ------------------------------------------------------------------------------------------ one trial
def comparable_loss(results: dict[str, Any], weight: float, reference_weight: float) -> float:
    """The held-out loss at the study's sub-talker weight: a trial that searches objective.sub_talker_weight trains
    (and reports) codebook-0 loss + its own weight x sub-talker loss, and a smaller weight would win on that alone."""
    if weight == reference_weight:
        return results["loss"]
    return results["codebook0_loss"] + reference_weight * results["sub_talker_loss"]


class TrialReporter(TrainerHook):
    """Reports the objective to the pruner at every held-out eval (or quality round) and stops a pruned trial.
    Rank 0 holds the Optuna trial and decides; the other ranks (trial None) receive its decision."""

    name = "tuning trial"

    def __init__(self, trial: Any, objective: str, quality: Optional[Any] = None,
                 reference_weight: Optional[float] = None):
        self.trial, self.objective, self.quality = trial, objective, quality
        self.reference_weight = reference_weight  # the study's sub-talker weight (heldout_loss is scored at it)
        self.pruned_at: Optional[int] = None

    def current_value(self, trainer: Any, results: dict[str, Any]) -> Optional[float]:
        if self.objective == "heldout_loss":
            weight = trainer.config.objective.sub_talker_weight
            value = comparable_loss(results, weight, weight if self.reference_weight is None else self.reference_weight)
        else:
            rounds = self.quality.rounds if self.quality is not None else []
            scored_now = bool(rounds) and rounds[-1]["step"] == trainer.step
            value = self.quality.last_metrics().get(self.objective) if scored_now else None
        return float(value) if value is not None and math.isfinite(value) else None

    def on_eval(self, trainer: Any, results: dict[str, Any]) -> None:
        value = self.current_value(trainer, results)
        if value is None:
            return
        prune = False
        if self.trial is not None:
            self.trial.report(value, trainer.step)
            prune = self.trial.should_prune()
        prune = from_main_process(prune)
        if prune:
            self.pruned_at = trainer.step
            trainer.request_stop(f"pruned by the tuner at step {trainer.step} ({self.objective} {value:.4g} is "
                                 "worse than the trials before it at this step)", finished=True)


def _fresh_accelerator_state() -> None:
    """Each trial builds its own Accelerator; accelerate's process-wide state (not the process group) starts
    clean, so that a trial's accumulation or DeepSpeed settings are its own."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def _keep_process_group(accelerator: Any) -> None:
    """The job's process group outlives each trial: accelerate's end_training would take it down at the end of the
    trial's run (and DeepSpeed keeps its own handles to it), so a trial only closes its trackers."""

    def end_training() -> None:
        for tracker in accelerator.trackers:
            tracker.finish()

    accelerator.end_training = end_training


def run_trial(config: RunConfig, objective: str, trial: Any = None, extra_hooks: Iterable[TrainerHook] = (),
              reference_weight: Optional[float] = None) -> TrialResult:
    """One trial's run through the Trainer (every rank calls this; rank 0 passes the Optuna trial).
    `reference_weight`: the study's sub-talker weight, at which the held-out loss is compared."""
    from ..quality.training_audio import training_hooks
    from ..train.trainer import Trainer

    _fresh_accelerator_state()
    started = time.time()
    hooks = training_hooks(config)
    quality = next((hook for hook in hooks if hook.name == "quality"), None)
    reporter = TrialReporter(trial, objective, quality, reference_weight)
    trainer = Trainer(config, hooks=[*hooks, reporter, *extra_hooks])
    _keep_process_group(trainer.accelerator)
    try:
        exit_code = trainer.run()
        if objective == "heldout_loss":
            value = reporter.current_value(trainer, trainer.last_eval) if trainer.last_eval else None
        else:
            last = quality.last_metrics() if quality is not None else None
            value = last.get(objective) if last else None
        finished = trainer.step >= trainer.max_steps or trainer.stop_finishes
        return TrialResult(exit_code=exit_code, steps=trainer.step, value=value,
                           stop_reason=trainer.stop_requested if trainer.stop_finishes else None,
                           pruned=reporter.pruned_at is not None, interrupted=exit_code == 0 and not finished,
                           seconds=time.time() - started)
    finally:
        del trainer
        _release_memory()


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ ranks
def _world() -> Any:
    """This job's processes (accelerate's PartialState; it sets up the process group under a launcher)."""
    from accelerate import PartialState

    return PartialState()


class _StopBetweenTrials:
    """SIGTERM/SIGINT outside a trial (a trial's Trainer handles them inside): no next trial is started."""

    def __init__(self, say: Callable[[str], None]):
        self.requested, self.say = False, say
        self.previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def install(self) -> None:
        for signum in self.previous:
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True
        self.say(f"received {signal.Signals(signum).name}: no further trials; continue with --resume")


# ------------------------------------------------------------------------------------------ the study
@dataclass
class StudyOutcome:
    finished: int  # complete + pruned trials in the study
    target: int
    interrupted: bool
    report: Optional[Path] = None
    best_config: Optional[Path] = None


def tune(settings: StudySettings, base: Optional[RunConfig], space: Optional[SearchSpace], resume: bool = False,
         say: Callable[[str], None] = print, extra_hooks: Iterable[TrainerHook] = ()) -> StudyOutcome:
    """Run trials until the study holds `settings.trials` finished ones (or a stop), then write the report.

    Every rank of a launched job calls this; rank 0 owns the study. `extra_hooks` are added to every trial's
    Trainer (tests use them to interrupt a trial)."""
    world = _world()
    study, setup, failure = None, None, None
    if world.is_main_process:
        try:
            study, base, space = open_study(settings, base, space, resume, say)
            setup = (base, space, settings)
        except ConfigError as error:
            failure = str(error)
    setup, failure = from_main_process((setup, failure))
    if failure is not None:
        raise ConfigError(failure)
    base, space, settings = setup
    if not world.is_main_process:
        finished, interrupted = _follow(settings, base, space, extra_hooks)
        return StudyOutcome(finished=finished, target=settings.trials, interrupted=interrupted)
    stop = _StopBetweenTrials(say)
    ending: tuple[str, int, bool] = ("done", 0, True)  # what the other ranks hear if this rank fails
    try:
        interrupted = _lead(study, settings, base, space, say, stop, list(extra_hooks))
        ending = ("done", finished_trials(study), interrupted)
    finally:
        from_main_process(ending)
        stop.restore()
    from .report import write_report

    paths = write_report(study, settings.study_dir, base, space, say)
    finished = ending[1]
    if interrupted:
        say(f"study interrupted with {finished} of {settings.trials} trials finished; continue with the same command "
            "plus --resume")
    else:
        say(f"study holds {finished} finished trials; report {paths.get('report')}")
    return StudyOutcome(finished=finished, target=settings.trials, interrupted=interrupted,
                        report=paths.get("report"), best_config=paths.get("best"))


def _lead(study: Any, settings: StudySettings, base: RunConfig, space: SearchSpace, say: Callable[[str], None],
          stop: _StopBetweenTrials, extra_hooks: list[TrainerHook]) -> bool:
    """Rank 0's loop: one trial at a time through `study.optimize` (heartbeat, stale-trial retry); True when
    interrupted."""

    def objective(trial: Any) -> float:
        values = space.suggest(trial)
        folder = trial_dir(settings.study_dir, trial.number)
        trial.set_user_attr("run_dir", str(folder))
        try:
            config = space.trial_config(base, values, folder)
        except ConfigError as error:
            raise TrialFailed(f"trial {trial.number}: {values} make an invalid run config: {error}") from error
        say(f"trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        from_main_process(("trial", trial.number, values))
        try:
            result = run_trial(config, settings.objective, trial, extra_hooks, base.objective.sub_talker_weight)
        except _out_of_memory_errors() as error:
            raise TrialFailed(f"trial {trial.number}: out of memory ({error}); the study goes on") from error
        if not settings.keep_checkpoints:
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("seconds", round(result.seconds, 1))
        if result.stop_reason:
            trial.set_user_attr("stop_reason", result.stop_reason)
        return _judge(trial, result, folder, say)

    failures = 0
    while finished_trials(study) < settings.trials:
        if stop.requested:
            return True
        stop.install()
        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        except TrialInterrupted as interruption:
            study.enqueue_trial(interruption.params, user_attrs={"retry_of": interruption.number})
            say(f"trial {interruption.number} interrupted: marked failed, queued to run again on --resume")
            return True
        stop.install()  # the trial's Trainer took the signal handlers over
        failures = failures + 1 if study.get_trials(deepcopy=False)[-1].state.name == "FAIL" else 0
        if failures >= FAILURES_IN_A_ROW:
            raise StudyStopped(f"{failures} trials in a row failed (their errors are above); fix the cause, then "
                               "continue with --resume")
    return False


def _judge(trial: Any, result: TrialResult, folder: Path, say: Callable[[str], None]) -> float:
    """The trial's value, or the exception that gives it its state."""
    import optuna

    from ..train.trainer import EXIT_BAD_DATA, EXIT_NON_FINITE

    if result.interrupted:
        raise TrialInterrupted(trial.number, dict(trial.params))
    if result.exit_code == EXIT_BAD_DATA:
        raise StudyStopped(f"trial {trial.number} stopped on bad data (see {folder / 'bad_samples'}); the shards "
                           "need fixing before the study can go on")
    if result.exit_code == EXIT_NON_FINITE:
        trial.set_user_attr("stop_reason", "non-finite loss or gradients")
        say(f"trial {trial.number}: non-finite numbers; pruned (these parameters diverge)")
        raise optuna.TrialPruned("non-finite loss or gradients")
    if result.pruned:
        say(f"trial {trial.number}: {result.stop_reason}")
        raise optuna.TrialPruned(result.stop_reason)
    if result.value is None or not math.isfinite(result.value):
        raise TrialFailed(f"trial {trial.number}: no {trial.study.user_attrs.get('objective')} measured "
                          f"(see {folder})")
    say(f"trial {trial.number}: {trial.study.user_attrs.get('objective')} {result.value:.6g} after {result.steps} "
        f"steps ({result.seconds:.0f} s)")
    return float(result.value)


def _follow(settings: StudySettings, base: RunConfig, space: SearchSpace,
            extra_hooks: Iterable[TrainerHook]) -> tuple[int, bool]:
    """Ranks other than 0: run each trial rank 0 announces, until it says the study is done (finished trials,
    interrupted)."""
    while True:
        message = from_main_process(None)
        if message[0] == "done":
            return message[1], message[2]
        _, number, values = message
        config = space.trial_config(base, values, trial_dir(settings.study_dir, number))
        run_trial(config, settings.objective, None, extra_hooks, base.objective.sub_talker_weight)


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.OutOfMemoryError,)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
