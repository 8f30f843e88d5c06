"""The training loop: shards -> objective -> optimizer, under Accelerate (single process, DDP, DeepSpeed ZeRO).

The trainer wires components with one job each and keeps the step and the loop on one screen each:
- `precision.resolve_precision`: weight dtype, autocast, attention kernels, what the DeepSpeed config means;
- `provenance`: the run manifest and whether a resume may continue;
- `Checkpointer`: when to save, what, which to keep, which is best, resuming;
- `MetricsProcessor` (monitor.py): the step record reduced across ranks, metrics.jsonl, TensorBoard, status;
- `HeldOutEvaluator`: the held-out eval every `run.eval_every` steps;
- `NonFiniteGuard` (numerics.py): counting non-finite steps, the diagnostic bundle, fault injection for drills;
- hooks (hooks.py): what the caller plugs in, such as in-training synthesis.

`train_step`: fetch `accumulation` micro-batches, draw their sub-talker frames, agree across ranks on the ones
everyone can run and on the step's target counts (one all-reduce), forward + backward each with its share of the
step's mean loss (exact gradient weighting) and the accumulation boundary on the last one, clip, check that every
loss and the gradient norm are finite (one all-reduce), step. Nothing is read back to the host per micro-batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch

from ..data.mixture import open_training_index
from ..data.stream import ShardIndex, ShardStream, StreamConfig, make_loader, over_budget, stream_position
from ..files import write_json_atomic
from ..layout import Batch, SequenceLayout
from ..noise import quiet_cpu_accelerator, quiet_training_warnings
from ..objective import StepTargets, TalkerObjective, count_targets, frame_sampling_generator, sample_sub_talker_frames
from .checkpointer import Checkpointer, Progress
from .config import ConfigError, RunConfig
from .evaluator import HeldOutEvaluator, flat_eval_scalars
from .hooks import Hooks, TrainerHook, drill_hooks_from_env
from .monitor import REPORT, MetricsProcessor, StepTally
from .numerics import ActivationStats, NonFiniteGuard, fault_injection_from_env, write_diagnostic_bundle
from .precision import (mixed_precision_for_accelerator, resolve_attn_implementation, resolve_precision,
                        slow_bf16_warning)
from .provenance import MANIFEST, build_manifest, check_resume_compatible
from .run_lock import RunFolderLock

log = logging.getLogger("qwen_swe.train")

EXIT_OK = 0
EXIT_NON_FINITE = 3
EXIT_BAD_DATA = 4
BAD_SAMPLES_DIR = "bad_samples"  # bad_samples/rank{R}.jsonl: every sample a rank skipped, with the step
SHARE_JUDGED_AFTER = 100  # samples read before a share budget (data.max_bad_samples < 1) is judged
SIGNAL_STOP = "signal"  # the stop reason SIGTERM/SIGINT give


@dataclass
class StepOutcome:
    """One optimizer step on this rank, before the record is reduced across ranks."""

    tally: StepTally
    grad_norm: Optional[float]
    finite: bool
    layer_stats: dict[str, float]


class Trainer:
    def __init__(self, config: RunConfig, resume: Optional[str] = None, allow_changes: Iterable[str] = (),
                 hooks: Iterable[TrainerHook] = ()):
        quiet_cpu_accelerator()  # before accelerate imports deepspeed
        quiet_training_warnings()
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, ProjectConfiguration

        self.config = config
        self.run_dir = Path(config.run.output_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"run.output_dir: cannot create {self.run_dir} ({error.strerror or error}); choose a "
                              "folder this user can write") from error
        self.accelerator = Accelerator(
            gradient_accumulation_steps=config.optim.accumulation,
            mixed_precision=mixed_precision_for_accelerator(config.train.precision),
            # one scheduler step per optimizer step (by default accelerate steps it once per process under DDP)
            step_scheduler_with_optimizer=False,
            log_with="tensorboard" if config.run.tensorboard else None,
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "tb")),
        )
        self.is_deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed else None
        self.zero_stage = plugin.zero_stage if plugin is not None else 0
        self.precision = resolve_precision(config.train.precision, plugin.deepspeed_config if plugin else None)
        self.main = self.accelerator.is_main_process
        self.say = self.accelerator.print
        self.hooks = Hooks([*hooks, *drill_hooks_from_env()])
        self.lock = RunFolderLock(self.run_dir)
        holder = self.lock.acquire() if self.main else None
        if not self._all(holder is None):
            raise ConfigError(f"run.output_dir: {self.run_dir} is in use by another job ({holder or 'held by it'}); "
                              "wait for it to end or stop it, or choose another run.output_dir")
        try:
            self._setup(config, resume, allow_changes)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, config: RunConfig, resume: Optional[str], allow_changes: Iterable[str]) -> None:
        from accelerate.utils import set_seed

        set_seed(config.run.seed, device_specific=True)
        self.max_steps = config.run.max_steps
        if self.max_steps <= 0:  # load_config resolves 0 to schedule.total_steps; a hand-built config may not
            raise ConfigError("run.max_steps: 0 steps to train; set it, or build the config with load_config, which "
                              "takes schedule.total_steps for 0")
        self.progress = Progress()
        self.checkpointer = Checkpointer(self.accelerator, self.run_dir, config.run, self.max_steps, hooks=self.hooks)
        self.resume_from = self.checkpointer.resume_point(resume, self.say)
        self._check_fresh_start(resume)
        # one shard folder, or several sources mixed by weight (data/mixture.py)
        self.mixture = config.data.mixture()
        self.train_index = open_training_index(config.data.shards, config.data.sources, self.mixture,
                                               config.data.train_split)
        check_shard_files(self.train_index)
        self.manifest = build_manifest(config, shards_fingerprint=self.train_index.fingerprint,
                                       world_size=self.accelerator.num_processes,
                                       distributed_type=str(self.accelerator.distributed_type),
                                       precision_label=self.precision.label)
        # Refuse an incompatible resume before spending minutes loading a model.
        self.reshard = False
        if self.resume_from is not None:
            saved = json.loads((self.run_dir / MANIFEST).read_text(encoding="utf-8"))
            self.reshard = check_resume_compatible(saved, self.manifest, self.resume_from, allow_changes)
        self._build()

    def _check_fresh_start(self, resume: Optional[str]) -> None:
        """A run folder belongs to one run: never start over on top of another run's checkpoints, and say when
        `--resume auto` finds nothing to resume."""
        if self.resume_from is not None:
            return
        newest = self.checkpointer.latest()
        if newest is not None:
            raise ConfigError(f"run.output_dir: {self.run_dir} holds checkpoints of an earlier run (newest: "
                              f"{newest.name}); continue it with --resume auto, or start this run in another "
                              "run.output_dir (or delete that folder first)")
        if resume == "auto":
            self.say(f"--resume auto: no complete checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0")

    @property
    def step(self) -> int:
        return self.progress.step

    @property
    def last_eval(self) -> Optional[dict[str, Any]]:
        return self.progress.last_eval

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources training draws from (none for a single shard folder)."""
        return tuple(self.train_index.names) if self.mixture is not None else ()

    # ------------------------------------------------------------------------------------------ setup
    def _build(self) -> None:
        from ..modeling import load_model
        from .model_setup import prepare_model
        from .optim import build_optimizer, build_scheduler, param_groups

        config, accelerator = self.config, self.accelerator
        self.device_type = accelerator.device.type
        attn, warning = resolve_attn_implementation(config.model.attn_implementation, self.device_type,
                                                    self.precision.mode)
        if warning:
            self.say(f"warning: {warning}")
        slow = slow_bf16_warning(self.precision, self.device_type) if self.device_type == "cpu" else None
        if slow:
            self.say(f"warning: {slow}")
        wrapper = load_model(config.model.path, attn_implementation=attn)
        model, self.manifest["model_setup"] = prepare_model(wrapper.model, config, self.device_type, self.precision)
        self.layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
        # The official wrapper around the very network being trained (peft injects LoRA layers in place), so hooks
        # that synthesise hear the current weights through the same generate() users call.
        self.wrapper = wrapper
        objective = TalkerObjective(model, sub_talker_weight=config.objective.sub_talker_weight,
                                    mask_suppressed_logits=config.objective.mask_suppressed_logits)
        self.fault = fault_injection_from_env(objective)
        self.activations = ActivationStats(objective)
        if not self.is_deepspeed:
            objective.to(accelerator.device)  # so the optimizer sees device parameters (fused AdamW on CUDA)
        optimizer = build_optimizer(param_groups(objective, config), config, self.device_type)
        scheduler = build_scheduler(optimizer, config)
        self.objective, self.optimizer, self.scheduler = accelerator.prepare(objective, optimizer, scheduler)
        self.group_names = [g.get("name", f"group{i}") for i, g in enumerate(self.optimizer.param_groups)]
        self.stream_config = StreamConfig(
            frame_budget=config.data.frame_budget, pool_size=config.data.pool_size, max_samples=config.data.max_samples,
            seed=config.run.seed, layouts=dict(config.data.layouts), language=config.data.language,
            on_bad_sample=config.data.on_bad_sample, retokenize=config.data.retokenize,
            accumulation=config.optim.accumulation,
        )
        # What planning an epoch refuses (too few samples for the processes, another tokenizer's shards) is said
        # now, as a message naming the field, rather than as a traceback from inside the loop.
        try:
            ShardStream(self.train_index, self.layout, self.stream_config, rank=accelerator.process_index,
                        world_size=accelerator.num_processes)
        except ValueError as error:
            where = "data.sources" if config.data.sources else f"data.shards ({config.data.shards})"
            raise ConfigError(f"{where}: {error}") from error
        self._warn_over_budget()
        self.evaluator = HeldOutEvaluator(accelerator, config, self.layout, self.stream_config, self._all, self.say)
        for index in self.evaluator.indexes.values():
            check_shard_files(index)
        self.guard = NonFiniteGuard(patience=config.run.non_finite_patience)
        self.metrics = MetricsProcessor(accelerator, self.run_dir, self.max_steps, config.run.log_every,
                                        self.device_type, config.objective.sub_talker_weight, self.source_names)
        # Each micro-batch's loss is already its share of the step's mean over all micro-batches and ranks; undo
        # the averaging the stack adds on top: accelerate (or DeepSpeed) divides by the accumulation, DDP (or
        # ZeRO) averages over ranks.
        self.loss_multiplier = float(config.optim.accumulation * accelerator.num_processes)
        self.stop_requested: Optional[str] = None
        self.stop_finishes = False  # the requested stop ends the run as finished (see request_stop)

    # ------------------------------------------------------------------------------------------ data
    def _warn_over_budget(self) -> None:
        """Say when a sample is longer than data.frame_budget: it trains alone, over the memory the budget plans."""
        budget = self.stream_config.frame_budget
        longer = over_budget(self.train_index, budget, self.stream_config.with_reference)
        if longer:
            cost, key, shard = longer[0]
            self.say(f"warning: {len(longer)} training sample(s) are longer than data.frame_budget={budget} frames "
                     f"(longest: {key} in {shard.name}, {cost} frames); each goes in a batch of its own and needs "
                     f"more memory than the budget plans for. Raise data.frame_budget to {cost}, or rebuild the "
                     "shards with a lower --max-seconds to leave them out")

    def train_batches(self) -> Iterator[Batch]:
        """Micro-batches forever, epoch after epoch, starting at the restored position."""
        rank, world, progress = self.accelerator.process_index, self.accelerator.num_processes, self.progress
        while True:
            stream = ShardStream(self.train_index, self.layout, self.stream_config, epoch=progress.epoch,
                                 start=progress.batches_done, rank=rank, world_size=world)
            for batch in make_loader(stream, num_workers=self.config.data.num_workers):
                progress.batches_done += 1
                yield batch
            progress.epoch, progress.batches_done = progress.epoch + 1, 0

    def _all(self, flag: bool | torch.Tensor) -> bool:
        """True when `flag` holds on every rank (one tiny all-reduce)."""
        value = torch.as_tensor(flag, dtype=torch.float32, device=self.accelerator.device).reshape(1)
        return bool(self.accelerator.reduce(value, reduction="sum").item() == self.accelerator.num_processes)

    # ------------------------------------------------------------------------------------------ the step
    def train_step(self, batches: Iterator[Batch]) -> StepOutcome:
        accelerator, objective = self.accelerator, self.objective
        tally = StepTally(accumulation=self.config.optim.accumulation, sources=self.source_names)
        every = self.config.run.activation_stats_every
        self.activations.armed = bool(every and self.step % every == 0)
        micro = [tally.fetch(batches) for _ in range(tally.accumulation)]
        scored = [self._sample_frames(batch, index) for index, batch in enumerate(micro)]
        runnable, targets = self._plan_step(scored)
        for position, index in enumerate(runnable):
            if self.fault is not None:
                self.fault.keys = micro[index].keys
            with self._micro_step(boundary=position == len(runnable) - 1):
                out = objective(scored[index].to(accelerator.device), targets=targets)
                accelerator.backward(out["loss"] * self.loss_multiplier)
            tally.add(micro[index], out, target_frames=int(micro[index].sub_frames.numel()))
        grad_norm, finite = None, False
        if runnable:
            limit = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else float("inf")  # 0: no clipping
            norm = accelerator.clip_grad_norm_(objective.parameters(), limit)
            norm_finite = True if norm is None else torch.isfinite(torch.as_tensor(norm, device=accelerator.device))
            finite = self._all(norm_finite & tally.finite_losses())  # every loss and the gradient norm finite
            grad_norm = float(norm) if norm is not None else None
        if finite:
            self.optimizer.step()
        self.scheduler.step()  # step counts are optimizer steps, skipped or not
        layer_stats = self.activations.take() if self.activations.armed else {}  # before zero_grad: reads gradients
        self.optimizer.zero_grad(set_to_none=True)
        self.activations.armed = False
        return StepOutcome(tally, grad_norm, finite, layer_stats)

    def _sample_frames(self, batch: Batch, index: int) -> Batch:
        """The micro-batch with its sub-talker frames drawn (`objective.sub_talker_frames`), from a generator seeded
        by (run seed, step, micro-batch, rank) so that a resumed run draws the same frames."""
        share = self.config.objective.sub_talker_frames
        if share >= 1.0 or batch.is_empty:
            return batch
        generator = frame_sampling_generator(self.config.run.seed, self.step, index, self.accelerator.process_index)
        return sample_sub_talker_frames(batch, share, generator)

    def _plan_step(self, micro: list[Batch]) -> tuple[list[int], StepTargets]:
        """Which micro-batches every rank can run (a rank whose micro-batch held no usable sample makes everyone
        pass over that one: DeepSpeed needs the same backward calls on every rank), and the step's targets over
        those on all ranks. One all-reduce for the step, before any forward."""
        counts = torch.tensor([[0.0 if batch.is_empty else 1.0, *count_targets(batch)] for batch in micro],
                              dtype=torch.float64, device=self.accelerator.device)
        summed = self.accelerator.reduce(counts, reduction="sum").tolist()
        runnable = [index for index, (usable, _, _) in enumerate(summed) if usable == self.accelerator.num_processes]
        return runnable, StepTargets(sum(summed[i][1] for i in runnable), sum(summed[i][2] for i in runnable))

    @contextmanager
    def _micro_step(self, boundary: bool) -> Iterator[None]:
        """One micro-batch's forward and backward, with the accumulation boundary (the gradient all-reduce, and
        under DeepSpeed its optimizer step) on the last micro-batch that runs, decided here rather than by
        accelerate's counter, which a passed-over micro-batch would shift for the rest of the run. accelerate reads
        the flag from its gradient state (its DeepSpeed wrapper sets the engine's boundary from it, its optimizer
        wrapper steps only on it); `no_sync` keeps DDP from all-reducing before the boundary."""
        self.accelerator.gradient_state._set_sync_gradients(boundary)
        try:
            with contextlib.nullcontext() if boundary else self.accelerator.no_sync(self.objective):
                yield
        finally:
            self.accelerator.gradient_state._set_sync_gradients(True)

    def step_record(self, outcome: StepOutcome) -> dict[str, Any]:
        """The job's record of the step just counted (reduced across ranks): what metrics.jsonl gets."""
        learning_rates = dict(zip(self.group_names, self.scheduler.get_last_lr()))
        record = self.metrics.step_record(self.step, self.progress.epoch, outcome.tally, outcome.grad_norm,
                                          outcome.finite, learning_rates, outcome.layer_stats)
        if self.mixture is not None:  # the weights this step's batches were drawn with (step is already counted)
            for name, weight in zip(self.mixture.names, self.mixture.weights_at(self.step - 1)):
                record[f"source/{name}/weight"] = weight
        return record

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Train until run.max_steps, a stop request (signal or hook) or too many non-finite steps; the exit code.
        A crash is written to status.json (health "crashed", the error) before it propagates."""
        try:
            return self._run()
        except BaseException as error:
            self.metrics.status.update(self.step, health="crashed", error=f"{type(error).__name__}: {error}"[:2000])
            raise
        finally:
            self.lock.release()

    def _run(self) -> int:
        self._start()
        batches, exit_code = self.train_batches(), EXIT_OK
        while self.step < self.max_steps:
            outcome = self.train_step(batches)
            self.progress.step += 1
            record = self.step_record(outcome)
            self._count_source_frames(record)
            self.metrics.write(record, keep=bool(outcome.layer_stats))
            if self._observe_data(record, outcome.tally):
                exit_code = EXIT_BAD_DATA
                break
            if self._observe_numerics(record, outcome.tally):
                exit_code = EXIT_NON_FINITE
                break
            self.hooks.on_step_end(self, record)
            if self.evaluator.due(self.step):
                self._evaluate()
            stopping = not self._all(self.stop_requested is None)
            if self.checkpointer.due(self.step, stopping):
                path = self.save()
                if stopping:
                    if not self.stop_finishes:
                        self._interrupted(path)
                    break
            self.metrics.status.update(self.step, health="training", epoch=self.progress.epoch,
                                       last_eval=self.last_eval, non_finite_total=self.guard.total,
                                       bad_samples=self.progress.bad_samples, **self._source_status(record))
        self.metrics.close()
        if exit_code == EXIT_OK and (self.step >= self.max_steps or self.stop_finishes):
            self._finish()
        self.hooks.on_train_end(self, exit_code)
        self.accelerator.end_training()
        return exit_code

    def _count_source_frames(self, record: dict[str, Any]) -> None:
        """A mixture's frames trained on so far, by source (kept in checkpoints with the rest of the progress)."""
        frames = self.progress.source_frames
        for name in self.source_names:
            frames[name] = frames.get(name, 0.0) + record[f"source/{name}/frames"]

    def _source_status(self, record: dict[str, Any]) -> dict[str, Any]:
        """status.json's view of the sources: frames trained on so far, their share, weight and last loss."""
        if self.mixture is None:
            return {}
        frames = self.progress.source_frames
        total = sum(frames.values()) or 1.0
        return {"sources": {name: {"frames": frames.get(name, 0.0), "share": frames.get(name, 0.0) / total,
                                   "weight": record.get(f"source/{name}/weight"),
                                   "loss": record.get(f"source/{name}/loss")} for name in self.mixture.names}}

    def request_stop(self, reason: str, finished: bool = False) -> None:
        """Checkpoint after the current step and stop (signals and hooks call this; any rank may). `finished`: the
        run is done (a quality gate met, a tuning trial pruned): it ends as finished, `reason` in status.json,
        report.json and the log, rather than as interrupted and waiting for --resume."""
        self.stop_requested, self.stop_finishes = reason, finished

    # ------------------------------------------------------------------------------------------ around the loop
    def _start(self) -> None:
        config, accelerator = self.config, self.accelerator
        if self.main:
            config.save_yaml(self.run_dir / "config.yaml")
        if self.resume_from is not None:
            self._resume()
        elif self.main:
            # Starting at step 0: whatever metrics.jsonl holds never reached a checkpoint (the folder holds none;
            # otherwise the Trainer refused to start), so it is a timeline that did not happen.
            self.metrics.log.truncate(0)
            write_json_atomic(self.run_dir / MANIFEST, self.manifest)
        if config.run.tensorboard:
            accelerator.init_trackers("qwen-swe", config={"precision": self.precision.label})
            if self.main:
                writer = accelerator.get_tracker("tensorboard", unwrap=True)
                writer.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```", self.step)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if config.run.synth_every_evals and "synthesis" not in self.hooks.names():
            self.say("warning: run.synth_every_evals is set but this trainer has no synthesis hook (qwen-swe train "
                     "adds it); no audio will be synthesised")
        self.say(f"training {self.max_steps} steps from step {self.step}: {accelerator.num_processes} "
                 f"process(es), {self.manifest['distributed_type']}, precision {self.precision.label}")
        self.metrics.status.update(self.step, health="training", epoch=self.progress.epoch)
        self.metrics.start(self.step)
        self.hooks.on_train_start(self)

    def _resume(self) -> None:
        path, progress, accelerator = self.resume_from, self.progress, self.accelerator
        saved_position, metrics_offset = self.checkpointer.restore(path, progress, self.objective)
        self.guard.total = progress.non_finite_total
        current = stream_position(self.train_index, self.stream_config, 0, 0, accelerator.process_index,
                                  accelerator.num_processes)
        progress.epoch, progress.batches_done = saved_position.resume_start(current, allow_reshard=self.reshard)
        if self.main:
            self.metrics.log.truncate(metrics_offset)
        forget_bad_samples_after(self.run_dir / BAD_SAMPLES_DIR / f"rank{accelerator.process_index}.jsonl",
                                 self.step)
        self.say(f"resumed from {path} at step {self.step} (epoch {progress.epoch}, batch {progress.batches_done})")

    def save(self) -> Path:
        self.progress.non_finite_total = self.guard.total
        position = stream_position(self.train_index, self.stream_config, self.progress.epoch,
                                   self.progress.batches_done, self.accelerator.process_index,
                                   self.accelerator.num_processes)
        path = self.checkpointer.save(self.progress, position, self.metrics.log.offset())
        self.metrics.status.update(self.step, last_checkpoint=str(path))
        return path

    def _evaluate(self) -> None:
        results = self.progress.last_eval = self.evaluator.evaluate(self.objective, self.step)
        self.accelerator.log(flat_eval_scalars(results), step=self.step)
        by_source = ", ".join(f"{name} {means['loss']:.4f}" for name, means in (results.get("sources") or {}).items())
        self.say(f"step {self.step}: eval loss {results['loss']:.4f}" + (f" ({by_source})" if by_source else ""))
        self.hooks.on_eval(self, results)

    def _observe_data(self, record: dict[str, Any], tally: StepTally) -> bool:
        """Count skipped samples (listed per rank under bad_samples/) and data-skipped steps; True when the run has
        met more bad samples than `data.max_bad_samples` allows (it then says where and stops)."""
        progress = self.progress
        progress.samples_read += record["samples"] + record["bad_samples"]
        progress.bad_samples += record["bad_samples"]
        if tally.bad_samples:
            folder = self.run_dir / BAD_SAMPLES_DIR
            folder.mkdir(exist_ok=True)
            with open(folder / f"rank{self.accelerator.process_index}.jsonl", "a", encoding="utf-8") as listing:
                for bad in tally.bad_samples:
                    listing.write(json.dumps({"step": self.step, **bad}) + "\n")
        if record["data_skipped"]:
            progress.data_skipped_steps += 1
            self.say(f"step {self.step}: no usable sample in this step's batches (bad samples skipped, listed in "
                     f"{self.run_dir / BAD_SAMPLES_DIR}); no update")
        budget = self.config.data.max_bad_samples
        over = budget and (progress.bad_samples > budget if budget >= 1 else
                           progress.samples_read >= SHARE_JUDGED_AFTER
                           and progress.bad_samples > budget * progress.samples_read)
        if not over:
            return False
        shards = sorted({Path(bad["shard"]).name for bad in tally.bad_samples})
        message = (f"{progress.bad_samples} bad samples of {progress.samples_read} read, more than "
                   f"data.max_bad_samples={budget:g} allows (latest in {', '.join(shards) or 'other ranks'}; all "
                   f"listed in {self.run_dir / BAD_SAMPLES_DIR}); run "
                   + ", ".join(f"`qwen-swe shards verify {folder}`" for folder in self.config.data.folders().values())
                   + ", rebuild or restore the shards, or raise data.max_bad_samples")
        self.metrics.status.update(self.step, health="stopped: bad data", message=message,
                                   bad_samples=progress.bad_samples)
        self.say(message)
        return True

    def _observe_numerics(self, record: dict[str, Any], tally: StepTally) -> bool:
        """Count a non-finite step; after `run.non_finite_patience` in a row, leave the diagnostic bundle and stop.
        A step that had nothing to score (a data skip) is not a numerics event."""
        if record["data_skipped"]:
            return False
        stop = self.guard.observe(self.step, record["finite"], record["loss"], record["grad_norm"], tally.keys)
        if not record["finite"]:
            self.say(f"step {self.step}: non-finite loss/gradient ({record['loss']}, grad norm "
                     f"{record['grad_norm']}); update skipped; batch keys {tally.keys[:8]}")
        if not stop:
            return False
        folder = write_diagnostic_bundle(self.run_dir, self.step, self.accelerator.process_index, self.guard,
                                         tally.keys, tally.batches, self.checkpointer.latest(), record.get("loss"),
                                         record.get("grad_norm"))
        if self.main:
            self.config.save_yaml(folder / "config.yaml")
        message = (f"{self.guard.consecutive} non-finite steps in a row; diagnostic bundle in {folder}; "
                   f"run: qwen-swe diagnose-non-finite --run {self.run_dir}")
        self.metrics.status.update(self.step, health="stopped: non-finite", message=message,
                                   non_finite_total=self.guard.total)
        self.say(message)
        return True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.request_stop(SIGNAL_STOP)
        self.say(f"\nreceived {signal.Signals(signum).name}: finishing this step, then checkpointing")

    def _interrupted(self, path: Path) -> None:
        reason = self.stop_requested or "another process asked to stop"
        message = (f"stopped {'by signal' if reason == SIGNAL_STOP else f'({reason})'} at step {self.step}; "
                   f"checkpoint {path}; resume with the same command plus --resume auto")
        self.metrics.status.update(self.step, health="interrupted", message=message)
        self.say(message)

    def _finish(self) -> None:
        if self.evaluator.enabled and (self.last_eval is None or self.last_eval["step"] != self.step):
            self.progress.last_eval = self.evaluator.evaluate(self.objective, self.step)
        reason = self.stop_requested if self.stop_finishes else "run.max_steps reached"
        report = {"steps": self.step, "stop_reason": reason, "epoch": self.progress.epoch,
                  "last_eval": self.last_eval, "best_eval": self.progress.best_eval,
                  "non_finite_total": self.guard.total,
                  "samples_read": self.progress.samples_read, "bad_samples": self.progress.bad_samples,
                  "data_skipped_steps": self.progress.data_skipped_steps,
                  "last_checkpoint": str(self.checkpointer.latest()), **self.hooks.report(),
                  "manifest": self.manifest}
        if self.main:
            write_json_atomic(self.run_dir / REPORT, report)
        self.metrics.status.update(self.step, health="finished", last_eval=self.last_eval,
                                   non_finite_total=self.guard.total, message=reason)
        self.say(f"finished {self.step} steps ({reason}); report {self.run_dir / REPORT}")


def check_shard_files(index: ShardIndex) -> None:
    """Refuse to start on shards that are missing or changed in size: the run would meet them as bad samples."""
    problems = index.file_problems()
    if problems:
        listing = "\n".join(f"  {line}" for line in problems[:20]) + (
            f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ValueError(f"{index.index_path}: {len(problems)} of {len(index.shards)} shard(s) of split "
                         f"{index.split!r} cannot be read as recorded:\n{listing}\nrestore them, or rebuild the "
                         f"shards (`qwen-swe shards verify {index.dataset_dir}` checks every file)")


def forget_bad_samples_after(listing: Path, step: int) -> None:
    """A resumed run replays the steps after its checkpoint: drop their lines so that none is listed twice."""
    if not listing.is_file():
        return
    kept = [line for line in listing.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
    listing.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
