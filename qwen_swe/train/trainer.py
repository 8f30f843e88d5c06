"""The training loop: shards -> objective -> optimizer, under Accelerate (single process, DDP, DeepSpeed ZeRO).

The step reads on one screen (`Trainer.train_step`): fetch `accumulation` micro-batches, agree across ranks that
everyone has a usable batch and a finite loss, backward, clip, check the gradient norm, step. Everything else -
checkpoints, eval, the non-finite guard, metrics - hangs off the loop in small methods.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from ..data.stream import ShardIndex, ShardStream, StreamConfig, StreamPosition, make_loader, stream_position
from ..layout import Batch, SequenceLayout
from ..objective import ScoreTally, TalkerObjective
from . import checkpoint as ckpt
from .config import RunConfig, math_fingerprint
from .monitor import MetricsLog, StatusFile, memory_usage
from .numerics import ActivationStats, NonFiniteGuard

log = logging.getLogger("qwen_swe.train")

EXIT_OK = 0
EXIT_NON_FINITE = 3
MANIFEST = "run_manifest.json"
FAULT_ENV = "QWEN_SWE_INJECT_NONFINITE"  # "module=<name>;keys=<k1,k2>": a test hook, see install_fault_injection


def file_fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def model_fingerprint(model_dir: Path) -> str:
    return file_fingerprint([model_dir / "config.json", *sorted(model_dir.glob("model*.safetensors"))])


def git_revision() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def install_fault_injection(objective: TalkerObjective, spec: str) -> Any:
    """Make one module's output infinite whenever the current batch holds one of the named sample keys.

    Stands in for a poisoned sample in tests and drills; replaying the same batch reproduces it, which is what
    `qwen-swe diagnose-non-finite` relies on. Returns an object whose `.keys` the loop sets for every batch.
    """
    fields = dict(part.split("=", 1) for part in spec.split(";") if "=" in part)
    module_name, poisoned = fields["module"], set(fields.get("keys", "").split(","))
    module = dict(objective.named_modules())[module_name]

    class Injector:
        keys: list[str] = []

        @staticmethod
        def hook(_module, _inputs, output):
            if poisoned & set(Injector.keys):
                hidden = output[0] if isinstance(output, tuple) else output
                poisoned_hidden = hidden * float("inf")
                return (poisoned_hidden, *output[1:]) if isinstance(output, tuple) else poisoned_hidden
            return output

    module.register_forward_hook(Injector.hook)
    return Injector


class Trainer:
    def __init__(self, config: RunConfig, resume: Optional[str] = None, allow_changes: tuple[str, ...] = ()):
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, ProjectConfiguration, set_seed

        self.config = config
        self.run_dir = Path(config.run.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mixed = "bf16" if config.train.precision == "bf16-mixed" else "no"
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        self.accelerator = Accelerator(
            gradient_accumulation_steps=config.optim.accumulation,
            mixed_precision=None if deepspeed else mixed,  # DeepSpeed takes precision from its own config
            # one scheduler step per optimizer step (by default accelerate steps it once per process under DDP)
            step_scheduler_with_optimizer=False,
            log_with="tensorboard" if config.run.tensorboard else None,
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "tb")),
        )
        self.is_deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        self.main = self.accelerator.is_main_process
        self.say = self.accelerator.print
        set_seed(config.run.seed, device_specific=True)
        self.resume_from = ckpt.resolve_resume(self.run_dir, resume)
        self.allow_changes = set(allow_changes)
        self.train_index = ShardIndex(config.data.shards, config.data.train_split)
        self.manifest = self._manifest()
        # Refuse an incompatible resume before spending minutes loading a model.
        self.reshard = self._check_resume_compatible() if self.resume_from is not None else False
        self._build()

    # ------------------------------------------------------------------------------------------ setup
    def _build(self) -> None:
        from ..modeling import load_model
        from .model_setup import prepare_model, resolve_attn_implementation
        from .optim import build_optimizer, build_scheduler, param_groups

        config, accelerator = self.config, self.accelerator
        self.device_type = accelerator.device.type
        precision = config.train.precision
        if self.is_deepspeed:  # DeepSpeed's own config decides the weights' dtype
            ds = accelerator.state.deepspeed_plugin.deepspeed_config
            precision = "bf16-pure" if ds.get("bf16", {}).get("enabled") else "fp32"
        # flash-attn takes bf16/fp16 only: an fp32 run keeps sdpa even where flash-attn is installed
        attn, warning = resolve_attn_implementation(config.model.attn_implementation, self.device_type, precision)
        if warning:
            self.say(f"warning: {warning}")
        wrapper = load_model(config.model.path, attn_implementation=attn)
        model, self.model_summary = prepare_model(wrapper.model, config, self.device_type)
        self.layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
        # The official wrapper around the very network being trained (peft injects LoRA layers in place), so
        # in-training synthesis hears the current weights through the same generate() users call.
        self.wrapper = wrapper
        self.synth_warned = False  # the reason in-training synthesis is skipped is said once
        self.synth_voice = None  # the held-out voice in-training synthesis uses, found on first use
        objective = TalkerObjective(model, sub_talker_weight=config.objective.sub_talker_weight,
                                    mask_suppressed_logits=config.objective.mask_suppressed_logits)
        self.fault = install_fault_injection(objective, os.environ[FAULT_ENV]) if os.environ.get(FAULT_ENV) else None
        self.activations = ActivationStats(objective)
        if not self.is_deepspeed:
            objective.to(accelerator.device)  # so the optimizer sees device parameters (fused AdamW on CUDA)
        optimizer = build_optimizer(param_groups(objective, config), config, self.device_type)
        scheduler = build_scheduler(optimizer, config)
        self.objective, self.optimizer, self.scheduler = accelerator.prepare(objective, optimizer, scheduler)
        self.group_names = [g.get("name", f"group{i}") for i, g in enumerate(self.optimizer.param_groups)]

        self.eval_index = ShardIndex(config.data.shards, config.data.eval_split) if config.run.eval_every > 0 else None
        self.stream_config = StreamConfig(
            frame_budget=config.data.frame_budget, pool_size=config.data.pool_size, max_samples=config.data.max_samples,
            seed=config.run.seed, layouts=dict(config.data.layouts), language=config.data.language,
            on_bad_sample=config.data.on_bad_sample,
        )
        self.max_steps = config.run.max_steps or config.schedule.total_steps
        self.step = 0
        self.epoch, self.batches_done = 0, 0
        self.best_eval: Optional[float] = None
        self.last_eval: Optional[dict] = None
        self.guard = NonFiniteGuard(patience=config.run.non_finite_patience)
        self.metrics = MetricsLog(self.run_dir)
        self.status = StatusFile(self.run_dir, self.max_steps, enabled=self.main)
        self.stop_requested = False
        self.manifest["model_setup"] = self.model_summary

    def _manifest(self) -> dict[str, Any]:
        import importlib.metadata as md

        versions = {}
        for name in ("qwen-swe", "torch", "transformers", "accelerate", "deepspeed", "peft", "bitsandbytes",
                     "qwen-tts", "webdataset"):
            try:
                versions[name] = md.version(name)
            except md.PackageNotFoundError:
                versions[name] = None
        precision = self.config.train.precision
        if self.is_deepspeed:
            ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
            precision = f"deepspeed-{'bf16' if ds.get('bf16', {}).get('enabled') else 'fp32'} (fp32 master weights)"
        return {
            "versions": versions,
            "git_revision": git_revision(),
            "model_fingerprint": model_fingerprint(Path(self.config.model.path)),
            "shards_fingerprint": self.train_index.fingerprint,
            "seed": self.config.run.seed,
            "world_size": self.accelerator.num_processes,
            "distributed_type": str(self.accelerator.distributed_type),
            "precision_strategy": precision,
            "math": math_fingerprint(self.config),
        }

    # ------------------------------------------------------------------------------------------ resume
    def _check_resume_compatible(self) -> bool:
        """Refuse changed math, data or world size unless allowed; returns True when the reader may re-shard."""
        saved = ckpt.read_json(self.run_dir / MANIFEST)
        differences = {}
        for key, value in saved["math"].items():
            if self.manifest["math"].get(key) != value:
                differences[key] = (value, self.manifest["math"].get(key))
        for key in ("model_fingerprint", "shards_fingerprint", "world_size", "seed"):
            if saved.get(key) != self.manifest[key]:
                differences[key] = (saved.get(key), self.manifest[key])
        refused = [k for k in differences if k not in self.allow_changes]
        if refused:
            listing = "\n".join(f"  {k}: was {differences[k][0]!r}, now {differences[k][1]!r}" for k in refused)
            raise SystemExit(f"refusing to resume {self.resume_from}: the run changed\n{listing}\n"
                             f"resume unchanged, or name what you mean to change: --allow-changes "
                             + ",".join(refused))
        return bool({"world_size", "shards_fingerprint"} & set(differences))

    def _resume(self) -> None:
        path = self.resume_from
        self.accelerator.load_state(str(path))
        state = ckpt.read_json(path / ckpt.STATE_FILE)
        self.step, self.best_eval = state["step"], state.get("best_eval")
        self.last_eval = state.get("last_eval")
        self.guard.total = state.get("non_finite_total", 0)
        rank = self.accelerator.process_index
        position_file = path / f"data_position_rank{rank}.json"
        if not position_file.exists():  # the saved run had fewer ranks: continue from rank 0's position
            position_file = path / "data_position_rank0.json"
        saved_position = StreamPosition.from_state_dict(ckpt.read_json(position_file))
        current = stream_position(self.train_index, self.stream_config, 0, 0, rank, self.accelerator.num_processes)
        self.epoch, self.batches_done = saved_position.resume_start(current, allow_reshard=self.reshard)
        if self.main:
            self.metrics.truncate(state.get("metrics_offset", 0))
        self.say(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batches_done})")

    # ------------------------------------------------------------------------------------------ data
    def train_batches(self) -> Iterator[Batch]:
        """Micro-batches forever, epoch after epoch, starting at the restored position."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        while True:
            stream = ShardStream(self.train_index, self.layout, self.stream_config, epoch=self.epoch,
                                 start=self.batches_done, rank=rank, world_size=world)
            for batch in make_loader(stream, num_workers=self.config.data.num_workers):
                self.batches_done += 1
                yield batch
            self.epoch, self.batches_done = self.epoch + 1, 0

    def _all(self, flag: bool) -> bool:
        """True when `flag` holds on every rank (one tiny all-reduce)."""
        value = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() == self.accelerator.num_processes)

    # ------------------------------------------------------------------------------------------ the step
    def train_step(self, batches: Iterator[Batch]) -> dict[str, Any]:
        accelerator, objective = self.accelerator, self.objective
        started = time.perf_counter()
        waited, totals, keys, layouts, finite = 0.0, {}, [], [], True
        sums = {"frames": 0.0, "positions": 0.0, "padded": 0.0}
        arm = self.config.run.activation_stats_every and self.step % self.config.run.activation_stats_every == 0
        self.activations.armed = bool(arm)
        for _ in range(self.config.optim.accumulation):
            fetch = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - fetch
            if not self._all(not batch.is_empty):  # a rank's whole batch was unusable: everyone skips it
                continue
            keys += batch.keys
            layouts.append({"layout": batch.extra.get("layout"), "keys": batch.keys})
            if self.fault is not None:
                self.fault.keys = batch.keys
            with accelerator.accumulate(objective):
                out = objective(batch.to(accelerator.device))
                ok = self._all(bool(torch.isfinite(out["loss"]).item()))
                finite = finite and ok
                if ok:
                    accelerator.backward(out["loss"])
            for name in ("loss", "codebook0_loss", "sub_talker_loss", "codebook0_accuracy", "sub_talker_accuracy"):
                totals[name] = totals.get(name, 0.0) + float(out[name].detach()) / self.config.optim.accumulation
            sums["frames"] += float(out["frames"])
            sums["positions"] += float(out["positions"])
            sums["padded"] += float(out["padded_positions"])
        if not keys:  # every micro-batch was skipped on some rank: no update, nothing to report but that
            totals = {name: float("nan") for name in ("loss", "codebook0_loss", "sub_talker_loss",
                                                       "codebook0_accuracy", "sub_talker_accuracy")}
            finite = False
        grad_norm = None
        if finite:
            limit = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else float("inf")  # 0: no clipping
            grad_norm = accelerator.clip_grad_norm_(objective.parameters(), limit)
            grad_norm = float(grad_norm) if grad_norm is not None else None
            finite = grad_norm is None or math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
        self.scheduler.step()  # step counts are optimizer steps, skipped or not
        layer_stats = self.activations.take() if arm else {}  # before zero_grad: it reads the gradients
        self.optimizer.zero_grad(set_to_none=True)
        self.activations.armed = False
        elapsed = time.perf_counter() - started
        names = sorted(totals)
        everyone = accelerator.reduce(torch.tensor([sums["frames"], sums["positions"], sums["padded"], len(keys)]
                                                   + [totals[n] for n in names],
                                                   device=accelerator.device, dtype=torch.float64), reduction="sum")
        frames, positions, padded, samples, *summed = everyone.tolist()
        totals = {n: value / accelerator.num_processes for n, value in zip(names, summed)}  # the job's mean
        record = {"step": self.step + 1, "epoch": self.epoch, **totals, "grad_norm": grad_norm,
                  "finite": finite, "frames_per_s": frames / elapsed, "samples_per_s": samples / elapsed,
                  "padding_efficiency": positions / max(padded, 1.0), "data_wait_fraction": waited / elapsed,
                  **{f"lr/{n}": lr for n, lr in zip(self.group_names, self.scheduler.get_last_lr())},
                  **memory_usage(self.device_type)}
        record.update(layer_stats)
        record["_keys"], record["_batches"] = keys, layouts
        return record

    # ------------------------------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        accelerator = self.accelerator
        stream = ShardStream(self.eval_index, self.layout, self.stream_config, epoch=0, start=0,
                             rank=accelerator.process_index, world_size=accelerator.num_processes)
        self.objective.eval()
        tally = ScoreTally(device=accelerator.device)
        for number, batch in enumerate(make_loader(stream, num_workers=0)):
            if number >= self.config.run.eval_batches:
                break
            if not self._all(not batch.is_empty):
                continue
            tally.add(self.objective(batch.to(accelerator.device)), len(batch.keys))
        self.objective.train()
        total = ScoreTally(accelerator.reduce(tally.sums, reduction="sum"))
        return {"step": self.step, **total.means()}

    def synthesize_to_tensorboard(self) -> None:
        """Main process: a few Swedish sentences in a held-out voice, logged as audio. Never fails the run."""
        zero3 = self.is_deepspeed and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        if zero3 or not self.config.run.tensorboard:
            if not self.synth_warned:
                self.say("warning: run.synth_every_evals needs TensorBoard and whole weights on one process "
                         "(not ZeRO-3); skipping in-training synthesis")
                self.synth_warned = True
            return
        if self.main:
            from ..quality.training_audio import default_voice, synthesize_for_tensorboard

            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            started = time.time()
            # Sampling draws from the global RNGs: fork them so a run with synthesis trains exactly like one without.
            devices = [self.accelerator.device] if self.device_type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                try:
                    if self.synth_voice is None:  # scanning the eval split for it reads every sample's json
                        self.synth_voice = default_voice(self.wrapper, self.config.data.shards,
                                                         self.config.data.eval_split)
                    results = synthesize_for_tensorboard(self.wrapper, writer, self.step, voice=self.synth_voice,
                                                         max_sentences=self.config.run.synth_sentences)
                    self.say(f"step {self.step}: synthesised {len(results)} sentence(s) for TensorBoard in "
                             f"{time.time() - started:.1f} s")
                except Exception as error:  # a synthesis problem must not cost the training run
                    self.say(f"warning: in-training synthesis failed at step {self.step}: {error}")
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        rank = self.accelerator.process_index
        position = stream_position(self.train_index, self.stream_config, self.epoch, self.batches_done, rank,
                                   self.accelerator.num_processes)
        state = {"step": self.step, "epoch": self.epoch, "best_eval": self.best_eval, "last_eval": self.last_eval,
                 "non_finite_total": self.guard.total, "metrics_offset": self.metrics.offset()}
        better = self.last_eval is not None and (self.best_eval is None or self.last_eval["loss"] <= self.best_eval)
        if better:
            state["best_eval"] = self.best_eval = self.last_eval["loss"]
        path = ckpt.save_checkpoint(
            self.accelerator, self.run_dir, self.step, state,
            {f"data_position_rank{rank}.json": position.state_dict()},
            keep_last=self.config.run.keep_last,
        )
        if better and self.main:
            ckpt.record_best(self.run_dir, path, self.best_eval)
            ckpt.apply_retention(self.run_dir, self.config.run.keep_last)
        self.status.update(self.step, last_checkpoint=str(path))
        return path

    # ------------------------------------------------------------------------------------------ the loop
    def _on_signal(self, signum, _frame) -> None:
        self.stop_requested = True
        self.say(f"\nreceived {signal.Signals(signum).name}: finishing this step, then checkpointing")

    def _log(self, record: dict[str, Any]) -> None:
        private = {k: record.pop(k) for k in [k for k in record if k.startswith("_")]}
        if self.main:
            self.metrics.append(record)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and v is not None
                   and k not in ("step",)}
        self.accelerator.log({f"train/{k}": v for k, v in scalars.items()}, step=record["step"])
        record.update(private)

    def _write_diagnostic_bundle(self, record: dict[str, Any]) -> Path:
        rank = self.accelerator.process_index
        folder = self.run_dir / "diagnostics" / f"non_finite_step{self.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        latest = ckpt.find_latest(self.run_dir)
        ckpt.write_json_atomic(folder / f"rank{rank}.json", {
            "step": self.step, "rank": rank, "keys": record["_keys"], "batches": record["_batches"],
            "events": self.guard.events,
            "checkpoint": str(latest) if latest else None, "loss": str(record.get("loss")),
            "grad_norm": str(record.get("grad_norm")),
        })
        if self.main:
            self.config.save_yaml(folder / "config.yaml")
        return folder

    def run(self) -> int:
        config, accelerator = self.config, self.accelerator
        if self.main:
            self.config.save_yaml(self.run_dir / "config.yaml")
        if self.resume_from is not None:
            self._resume()
        elif self.main:
            ckpt.write_json_atomic(self.run_dir / MANIFEST, self.manifest)
        if config.run.tensorboard:
            accelerator.init_trackers("qwen-swe", config={"precision": self.manifest["precision_strategy"]})
            if self.main:
                writer = accelerator.get_tracker("tensorboard", unwrap=True)
                writer.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```", self.step)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.say(f"training {self.max_steps} steps from step {self.step}: {self.accelerator.num_processes} "
                 f"process(es), {self.manifest['distributed_type']}, precision {self.manifest['precision_strategy']}")
        self.status.update(self.step, health="training", epoch=self.epoch)
        batches = self.train_batches()
        progress = self._progress()
        exit_code = EXIT_OK
        while self.step < self.max_steps:
            record = self.train_step(batches)
            self.step += 1
            self._log(record)
            stop = self.guard.observe(self.step, record["finite"], record["loss"], record["grad_norm"],
                                      record["_keys"])
            if not record["finite"]:
                self.say(f"step {self.step}: non-finite loss/gradient ({record['loss']}, grad norm "
                         f"{record['grad_norm']}); update skipped; batch keys {record['_keys'][:8]}")
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.3f}", fps=f"{record['frames_per_s']:.0f}")
            if stop:
                folder = self._write_diagnostic_bundle(record)
                message = (f"{self.guard.consecutive} non-finite steps in a row; diagnostic bundle in {folder}; "
                           f"run: qwen-swe diagnose-non-finite --run {self.run_dir}")
                self.status.update(self.step, health="stopped: non-finite", message=message,
                                   non_finite_total=self.guard.total)
                self.say(message)
                exit_code = EXIT_NON_FINITE
                break
            if self.eval_index is not None and self.step % config.run.eval_every == 0:
                self.last_eval = self.evaluate()
                accelerator.log({f"eval/{k}": v for k, v in self.last_eval.items() if k != "step"}, step=self.step)
                self.say(f"step {self.step}: eval loss {self.last_eval['loss']:.4f}")
                evals_done = self.step // config.run.eval_every
                if config.run.synth_every_evals and evals_done % config.run.synth_every_evals == 0:
                    self.synthesize_to_tensorboard()
            stop_now = not self._all(not self.stop_requested)
            if self.step % config.run.checkpoint_every == 0 or self.step == self.max_steps or stop_now:
                path = self.save()
                if stop_now:
                    message = (f"stopped by signal at step {self.step}; checkpoint {path}; resume with the same "
                               f"command plus --resume auto")
                    self.status.update(self.step, health="interrupted", message=message)
                    self.say(message)
                    break
            self.status.update(self.step, health="training", epoch=self.epoch, last_eval=self.last_eval,
                               non_finite_total=self.guard.total)
        if progress is not None:
            progress.close()
        if exit_code == EXIT_OK and self.step >= self.max_steps:
            self._finish()
        accelerator.end_training()
        return exit_code

    def _progress(self):
        if not self.main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    def _finish(self) -> None:
        if self.eval_index is not None and (self.last_eval is None or self.last_eval["step"] != self.step):
            self.last_eval = self.evaluate()
        report = {"steps": self.step, "epoch": self.epoch, "last_eval": self.last_eval, "best_eval": self.best_eval,
                  "non_finite_total": self.guard.total, "last_checkpoint": str(ckpt.find_latest(self.run_dir)),
                  "manifest": self.manifest}
        if self.main:
            ckpt.write_json_atomic(self.run_dir / "report.json", report)
        self.status.update(self.step, health="finished", last_eval=self.last_eval, non_finite_total=self.guard.total)
        self.say(f"finished {self.step} steps; report {self.run_dir / 'report.json'}")
