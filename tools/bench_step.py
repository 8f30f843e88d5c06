"""Benchmark the training step; prints one JSON object (logs go to stderr).

Everything runs in one process on one tiny random-weight model (made in a temporary folder, Swedish registered) and
one synthetic RixVox-like shard set (lengths log-normal, median 8 s, clipped to 1-30 s, at 12.5 Hz times a frame
scale that keeps a CPU step short; the frame budget is scaled the same way, so batch shapes keep their proportions):

1. trainer_vs_bare: optimizer steps/s and real frames/s of `Trainer.train_step` against a bare loop (same weights,
   same pre-collated batches replayed identically, same optimizer and schedule; just backward, clip, step,
   zero_grad). Blocks alternate between the two and the headline is the median of the per-block ratios.
2. pipeline_vs_public_batching: real codec frames/s of the whole pipeline (the trainer's reader with frame-budget
   bucketing + its step) against the bare loop fed shuffled fixed-size batches padded to their longest sample, the
   way the public fine-tune script batches (collated with the same SequenceLayout, so only the batching differs).
3. resume_time: wall time from `Trainer(...)` to the end of the first step inside `Trainer.run()`, for a fresh start
   and for resumes at step N, as a ratio to the fresh start.

Usage: PYTHONPATH=. .venv/bin/python tools/bench_step.py [--profile] [--frame-scale 0.125] [--blocks 5] [--keep DIR]
(about two and a half minutes on two shared CPU cores; --help lists every knob)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_swe.model_shapes import FRAME_RATE  # noqa: E402 (after the path insert above)

log = logging.getLogger("bench_step")

GOALS = {
    "trainer_vs_bare": ">= 0.95 (trainer within 5% of the bare loop)",
    "pipeline_vs_public_batching": ">= 1.4",
    "resume_time": "time to the first batch within 1.25x of a fresh start for every N (same construction time), "
                   "and flat in N: the part after Trainer construction (checkpoint load, data position, reader seek) "
                   "varies by <= 0.25 s over N",
}
# Which batch goes where must not depend on the clock: every random choice below is seeded.
SEED = 0


# ------------------------------------------------------------------------------------------ plumbing
@contextlib.contextmanager
def stdout_kept_for_json() -> Iterator[Any]:
    """Point fd 1 at stderr while benchmarking (qwen_tts prints a banner, the trainer prints progress) and hand back
    a stream on the original stdout for the one JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(os.dup(saved), "w")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        real.close()


@contextlib.contextmanager
def signal_handlers_restored() -> Iterator[None]:
    """Trainer.run() installs SIGINT/SIGTERM handlers on a trainer that is gone afterwards; put the old ones back
    so Ctrl-C still stops the benchmark."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). Wall time is the measure; CPU time is the cross-check that
    barely moves when other work on the machine takes the cores (one torch thread, no loader workers)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_alternating(block: int, first: Callable[[], Any], second: Callable[[], Any]
                      ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(timed(first), timed(second)), run in swapped order on odd blocks so a drift in machine load favours
    neither side."""
    if block % 2 == 0:
        return timed(first), timed(second)
    on_second = timed(second)
    return timed(first), on_second


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats to `digits` significant digits (a learning rate of 2e-05 must not become 0.0)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


# ------------------------------------------------------------------------------------------ fixtures
def build_model(folder: Path, shape: str) -> Path:
    from qwen_swe.language import add_language_to_folder
    from qwen_swe.tiny import build_tiny_model

    build_tiny_model(folder, shape=shape, seed=SEED)
    add_language_to_folder(folder, "swedish")  # as a prepared run folder would be; prepare_model then finds it
    return folder


def rixvox_like_frames(count: int, scale: float, rng: np.random.Generator) -> list[int]:
    """Frame counts of RixVox-like utterances: log-normal seconds (median 8 s, sigma 0.6), clipped to 1-30 s."""
    secs = np.clip(rng.lognormal(np.log(8.0), 0.6, count), 1.0, 30.0)
    return [max(1, int(round(s * FRAME_RATE * scale))) for s in secs]


def write_shards(root: Path, shards: int, per_shard: int, scale: float, hidden: int) -> Path:
    """A train split of random codes with RixVox-like lengths, in the format `qwen-swe shards build` writes."""
    from qwen_swe.data.shard_format import encode_sample
    from qwen_swe.data.synthetic import TEXTS, SyntheticSample, random_codes, write_index, write_split

    rng = np.random.default_rng(SEED)

    def train_shards() -> Iterator[list[SyntheticSample]]:
        for shard_id in range(shards):
            samples = []
            for i, frames in enumerate(rixvox_like_frames(per_shard, scale, rng)):
                key = f"train{shard_id:03d}x{i:05d}"
                meta = {"text": TEXTS[i % len(TEXTS)], "speaker": f"spk{i % 7}", "language": "swedish",
                        "frames": frames}
                members = encode_sample(key, meta, random_codes(rng, frames), rng.standard_normal(hidden))
                samples.append(SyntheticSample(key, members, frames))
            yield samples

    return write_index(root, hidden, {"train": write_split(root, "train", train_shards())})


def run_config(args: argparse.Namespace, model: Path, shards: Path, run_dir: Path, max_steps: int) -> Any:
    """Production defaults (fp32, AdamW, cosine) with what a single-process CPU benchmark needs changed."""
    from qwen_swe.train.config import PRESETS, load_config

    overrides = [
        f"model.path={model}", f"data.shards={shards}", f"run.output_dir={run_dir}",
        f"data.frame_budget={args.budget}", "data.num_workers=0",  # single process: the reader runs in the loop
        "data.layouts={streaming: 1}",  # no references in the synthetic shards, so the frame cost is the target
        "run.eval_every=0", "run.tensorboard=false",
        # Armed steps are measured on their own (activation_stats below); here they would land in some blocks only.
        "run.activation_stats_every=0",
        "run.checkpoint_every=100000", "run.keep_last=1000",  # resume runs must not delete the checkpoints under test
        "schedule.total_steps=100000", f"run.max_steps={max_steps}",
    ]
    config = load_config(None, None, overrides)
    # The pilot and full presets freeze the text embedding (a third of the real model); so does this benchmark.
    config.train.freeze = list(PRESETS["pilot"]["train"]["freeze"])
    config.validate()
    return config


# ------------------------------------------------------------------------------------------ batches
def batch_stats(batch: Any) -> dict[str, int]:
    """Real target frames, real/padded positions, and padded frames (longest sample's frames x samples)."""
    per_row = torch.bincount(batch.sub_batch, minlength=len(batch.keys))
    return {"frames": int(batch.sub_frames.numel()), "positions": int(batch.attention_mask.sum()),
            "padded_positions": int(batch.attention_mask.numel()),
            "padded_frames": int(per_row.max()) * len(batch.keys), "samples": len(batch.keys)}


def total_stats(batches: Iterable[Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for batch in batches:
        for key, value in batch_stats(batch).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def counting(batches: Iterator[Any], tally: dict[str, int]) -> Iterator[Any]:
    """Pass batches through, adding their sizes to `tally` (so a timed pipeline block knows its real frames)."""
    for batch in batches:
        for key, value in batch_stats(batch).items():
            tally[key] = tally.get(key, 0) + value
        yield batch


def public_batches(trainer: Any, batch_size: int, count: int) -> tuple[list[Any], float]:
    """Shuffled fixed-size batches padded to their longest sample, as the public fine-tune script forms them, laid
    out and collated with the trainer's own SequenceLayout; plus the epoch-wide padding efficiency (frames)."""
    from qwen_swe.data.stream import load_samples_by_key

    index, language = trainer.train_index, trainer.stream_config.language
    entries = [entry for shard in index.shards for entry in shard.entries]
    random.Random(SEED).shuffle(entries)
    groups = [entries[i:i + batch_size] for i in range(0, len(entries) - batch_size + 1, batch_size)]
    real = sum(int(e["frames"]) for group in groups for e in group)
    padded = sum(max(int(e["frames"]) for e in group) * len(group) for group in groups)
    batches = []
    for group in groups[:count]:
        samples = load_samples_by_key(index, [e["key"] for e in group], language)
        batches.append(trainer.layout.collate([trainer.layout.build(s, "streaming") for s in samples]))
    return batches, real / padded


def bucketed_padding_efficiency(trainer: Any) -> float:
    """Frame-based padding efficiency of a whole epoch of the trainer's frame-budget plan."""
    from qwen_swe.data.stream import deal_to_rank, plan_epoch

    config = trainer.stream_config
    plan = deal_to_rank(plan_epoch(trainer.train_index, config.seed, 0, config.frame_budget, config.pool_size,
                                   config.with_reference, config.max_samples), 0, 1)
    real = sum(ref.cost for batch in plan for ref in batch)
    padded = sum(max(ref.cost for ref in batch) * len(batch) for batch in plan)
    return real / padded


# ------------------------------------------------------------------------------------------ the two loops
class BareLoop:
    """The floor: the same objective, weights, optimizer and schedule, with nothing around them."""

    def __init__(self, config: Any, weights_from: torch.nn.Module):
        from qwen_swe.modeling import load_model
        from qwen_swe.objective import TalkerObjective
        from qwen_swe.train.model_setup import prepare_model
        from qwen_swe.train.optim import build_optimizer, build_scheduler, param_groups
        from qwen_swe.train.precision import resolve_attn_implementation

        attn, _ = resolve_attn_implementation(config.model.attn_implementation, "cpu")
        wrapper = load_model(config.model.path, attn_implementation=attn)
        model, _ = prepare_model(wrapper.model, config, "cpu")  # same language row, dtypes and freezing
        self.objective = TalkerObjective(model, sub_talker_weight=config.objective.sub_talker_weight,
                                         mask_suppressed_logits=config.objective.mask_suppressed_logits)
        self.objective.load_state_dict(weights_from.state_dict())
        self.optimizer = build_optimizer(param_groups(self.objective, config), config, "cpu")
        self.scheduler = build_scheduler(self.optimizer, config)
        self.parameters = [p for p in self.objective.parameters() if p.requires_grad]
        self.grad_clip = config.optim.grad_clip

    def step(self, batch: Any) -> None:
        loss = self.objective(batch)["loss"]
        loss.backward()
        if self.grad_clip > 0:  # the config's "0: no clipping"
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()  # part of the recipe, not of the machinery: microseconds
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, batches: list[Any]) -> None:
        for batch in batches:
            self.step(batch)


def trainer_steps(trainer: Any, batches: Iterator[Any], steps: int) -> list[dict[str, Any]]:
    """`steps` calls of Trainer.train_step, each counted and reduced into its step record the way Trainer.run() does
    (the counter decides when activation statistics are armed)."""
    records = []
    for _ in range(steps):
        outcome = trainer.train_step(batches)
        trainer.progress.step += 1
        records.append(trainer.step_record(outcome))
    return records


# ------------------------------------------------------------------------------------------ 1. trainer vs bare
def trainer_vs_bare(trainer: Any, bare: BareLoop, replay: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    warmup, replayed = replay[:args.warmup], replay[args.warmup:]
    trainer_steps(trainer, iter(warmup), len(warmup))  # allocator, optimizer state, first-call caches
    bare.run(warmup)
    frames = total_stats(replayed)["frames"]
    pairs, cpu_pairs, non_finite = [], [], 0
    for block in range(args.blocks):
        records: list[dict[str, Any]] = []

        def run_trainer() -> None:
            records.extend(trainer_steps(trainer, iter(replayed), len(replayed)))

        def run_bare() -> None:
            bare.run(replayed)

        on_trainer, on_bare = timed_alternating(block, run_trainer, run_bare)
        non_finite += sum(not r["finite"] for r in records)  # a skipped update would flatter the trainer
        pairs.append((on_trainer[0], on_bare[0]))
        cpu_pairs.append((on_trainer[1], on_bare[1]))
        log.info("trainer_vs_bare block %d: trainer %.3f s, bare %.3f s", block, on_trainer[0], on_bare[0])
    steps = len(replayed)
    ratio = median(t_bare / t_trainer for t_trainer, t_bare in pairs)
    return {
        "ratio": ratio, "goal_met": ratio >= 0.95,
        "ratio_cpu_time": median(b / t for t, b in cpu_pairs),
        "trainer": {"steps_per_s": steps / median(t for t, _ in pairs),
                    "frames_per_s": frames / median(t for t, _ in pairs)},
        "bare": {"steps_per_s": steps / median(t for _, t in pairs),
                 "frames_per_s": frames / median(t for _, t in pairs)},
        "per_block_ratios": [b / t for t, b in pairs],
        "steps_per_block": steps, "blocks": args.blocks, "warmup_steps": len(warmup),
        "real_frames_per_step": frames / steps, "non_finite_steps": non_finite,
        "how": "median over blocks of (bare time / trainer time) on the same replayed batches; blocks alternate; "
               "ratio_cpu_time is the same with this process's CPU time (insensitive to other load)",
    }


def activation_stats_cost(trainer: Any, batches: list[Any], pairs: int = 3) -> dict[str, Any]:
    """Extra CPU time of a step with activation statistics armed (median over alternating plain/armed pairs on the
    same batches), and that cost spread over the default interval. CPU time, because the difference is a few percent
    of a step and wall time on a shared machine swings by more."""
    from qwen_swe.train.config import RunConfig

    every = RunConfig().run.activation_stats_every

    def block(armed: bool) -> float:
        trainer.config.run.activation_stats_every = 1 if armed else 0  # every step is armed
        try:
            return timed(lambda: trainer_steps(trainer, iter(batches), len(batches)))[1] / len(batches)
        finally:
            trainer.config.run.activation_stats_every = 0

    timings = [(block(False), block(True)) for _ in range(pairs)]
    extra, plain = median(a - p for p, a in timings), median(p for p, _ in timings)
    return {"extra_cpu_s_per_armed_step": extra, "plain_step_cpu_s": plain, "default_every": every,
            "amortized_fraction_at_default": extra / (every * plain)}


def loop_bookkeeping_cost(trainer: Any, record: dict[str, Any], repeats: int = 20) -> dict[str, float]:
    """What Trainer.run() does per step outside train_step: a metrics.jsonl line and an atomic status.json."""
    def once() -> None:
        trainer.metrics.write(record)
        trainer.metrics.status.update(trainer.step, health="training", epoch=trainer.progress.epoch, last_eval=None,
                                      non_finite_total=0)

    return {"s_per_step": seconds(lambda: [once() for _ in range(repeats)]) / repeats}


# ------------------------------------------------------------------------------------------ 2. pipeline vs public
def pipeline_vs_public(trainer: Any, bare: BareLoop, args: argparse.Namespace) -> dict[str, Any]:
    steps = args.pipeline_steps
    blocks = args.pipeline_blocks
    public, public_epoch_efficiency = public_batches(trainer, args.public_batch_size, args.warmup + blocks * steps)
    tally: dict[str, int] = {}
    reader = counting(trainer.train_batches(), tally)
    trainer_steps(trainer, reader, args.warmup)
    bare.run(public[:args.warmup])
    pipeline_blocks, public_blocks, records = [], [], []
    for block in range(blocks):
        chunk = public[args.warmup + block * steps: args.warmup + (block + 1) * steps]
        before = dict(tally)

        def run_pipeline() -> None:
            records.extend(trainer_steps(trainer, reader, steps))

        def run_public() -> None:
            bare.run(chunk)

        on_pipeline, on_public = timed_alternating(block, run_pipeline, run_public)
        pipeline_blocks.append(({k: tally[k] - before.get(k, 0) for k in tally}, *on_pipeline))
        public_blocks.append((total_stats(chunk), *on_public))
        log.info("pipeline_vs_public block %d: pipeline %.3f s, public %.3f s", block, on_pipeline[0], on_public[0])
    pipeline, public_side = side_summary(pipeline_blocks, steps), side_summary(public_blocks, steps)
    pipeline["padding_efficiency_frames_epoch"] = bucketed_padding_efficiency(trainer)
    pipeline["data_wait_fraction"] = statistics.mean(r["data_wait_fraction"] for r in records)
    public_side["padding_efficiency_frames_epoch"] = public_epoch_efficiency
    ratio = pipeline["frames_per_s"] / public_side["frames_per_s"]
    return {
        "ratio": ratio, "goal_met": ratio >= 1.4,
        "ratio_cpu_time": pipeline["frames_per_cpu_s"] / public_side["frames_per_cpu_s"],
        "pipeline": pipeline, "public_batching": public_side,
        "per_block_ratios": [(p["frames"] / tp) / (q["frames"] / tq)
                             for (p, tp, _), (q, tq, _) in zip(pipeline_blocks, public_blocks)],
        "steps_per_block": steps, "blocks": blocks, "public_batch_size": args.public_batch_size,
        "how": "real target frames / wall time summed over alternating blocks (ratio_cpu_time: over this "
               "process's CPU time); the pipeline's time includes reading, decoding, laying out and collating, "
               "the public batches are collated beforehand",
    }


def side_summary(blocks: list[tuple[dict[str, int], float, float]], steps: int) -> dict[str, float]:
    """Totals over (batch stats, wall seconds, CPU seconds) blocks."""
    totals = {k: sum(b[k] for b, _, _ in blocks) for k in blocks[0][0]}
    elapsed, cpu = sum(t for _, t, _ in blocks), sum(c for _, _, c in blocks)
    count = steps * len(blocks)
    return {"frames_per_s": totals["frames"] / elapsed, "frames_per_cpu_s": totals["frames"] / cpu,
            "steps_per_s": count / elapsed,
            "ms_per_real_frame": 1000 * elapsed / totals["frames"],
            "real_frames_per_step": totals["frames"] / count,
            "padded_positions_per_real_frame": totals["padded_positions"] / totals["frames"],
            "padded_positions_per_step": totals["padded_positions"] / count,
            "padding_efficiency_positions": totals["positions"] / totals["padded_positions"],
            "padding_efficiency_frames": totals["frames"] / totals["padded_frames"]}


# ------------------------------------------------------------------------------------------ 3. resume
def time_to_first_step(config: Any, resume: Optional[Path]) -> dict[str, float]:
    """Trainer(...) then Trainer.run() up to the end of its first step; run() goes on to its final checkpoint,
    which is not timed. Also the time to the first batch (the first step's compute depends on which batch it is)."""
    from qwen_swe.train.trainer import Trainer

    started = time.perf_counter()
    trainer = Trainer(config, resume=str(resume) if resume else None)
    built = time.perf_counter()
    marks: dict[str, float] = {}
    original = trainer.train_step

    def first_step_timed(batches: Iterator[Any]) -> Any:
        call = time.perf_counter()
        outcome = original(batches)
        if "end" not in marks:
            marks["end"] = time.perf_counter()
            marks["first_batch"] = call + outcome.tally.waited
            marks["step"] = trainer.step
        return outcome

    trainer.train_step = first_step_timed  # run() calls self.train_step: the instance attribute wins
    with signal_handlers_restored():
        code = trainer.run()
    if code != 0 or "end" not in marks:
        raise RuntimeError(f"the timed run in {config.run.output_dir} ended with exit code {code} before a step")
    result = {"to_first_step_s": marks["end"] - started, "to_first_batch_s": marks["first_batch"] - started,
              "construct_s": built - started, "after_construct_s": marks["first_batch"] - built,
              "resumed_at_step": marks["step"]}
    del trainer
    gc.collect()
    return result


def epoch_position(trainer: Any, steps: int) -> tuple[int, int]:
    """(epoch, batch) a single-process reader stands at after `steps` batches (epochs differ a little in length)."""
    from qwen_swe.data.stream import deal_to_rank, plan_epoch

    config, epoch = trainer.stream_config, 0
    while True:
        length = len(deal_to_rank(plan_epoch(trainer.train_index, config.seed, epoch, config.frame_budget,
                                             config.pool_size, config.with_reference, config.max_samples), 0, 1))
        if steps < length:
            return epoch, steps
        steps, epoch = steps - length, epoch + 1


def relabelled_checkpoint(source: Path, step: int, epoch: int, batch: int) -> Path:
    """A copy of a real checkpoint that says it was taken at `step` (epoch, batch). Resuming reads the same model,
    optimizer, scheduler and RNG files whatever the step; only the counters and the data position depend on it, and
    those are exactly what is rewritten here."""
    from qwen_swe.train import checkpoint as ckpt

    target = source.parent / ckpt.step_name(step)
    shutil.copytree(source, target)
    state = ckpt.read_json(target / ckpt.STATE_FILE)
    state.update(step=step, epoch=epoch)
    ckpt.write_json_atomic(target / ckpt.STATE_FILE, state)
    position = ckpt.read_json(target / "data_position_rank0.json")
    position.update(epoch=epoch, batches_done=batch)
    ckpt.write_json_atomic(target / "data_position_rank0.json", position)
    return target


def resume_time(trainer: Any, args: argparse.Namespace, model: Path, shards: Path, work: Path) -> dict[str, Any]:
    from qwen_swe.train import checkpoint as ckpt
    from qwen_swe.train.trainer import Trainer

    real_step, relabelled_steps = args.resume_steps[0], args.resume_steps[1:]
    run_dir = work / "resume-run"
    log.info("resume: training %d real steps for the first checkpoint", real_step)
    config = run_config(args, model, shards, run_dir, real_step)
    with signal_handlers_restored():
        if Trainer(config).run() != 0:
            raise RuntimeError("the run that makes the resume checkpoint failed")
    gc.collect()
    checkpoints = {real_step: run_dir / "checkpoints" / ckpt.step_name(real_step)}
    for step in relabelled_steps:
        checkpoints[step] = relabelled_checkpoint(checkpoints[real_step], step, *epoch_position(trainer, step))

    cases = ["fresh", *checkpoints]
    samples: dict[Any, list[dict[str, float]]] = {case: [] for case in cases}
    for repeat in range(args.resume_repeats):
        for case in (cases if repeat % 2 == 0 else cases[::-1]):  # alternate order against load drift
            if case == "fresh":
                fresh_dir = work / f"fresh-{repeat}"
                samples[case].append(time_to_first_step(run_config(args, model, shards, fresh_dir, 1), None))
                shutil.rmtree(fresh_dir, ignore_errors=True)
            else:
                resumed = run_config(args, model, shards, run_dir, case + 1)
                samples[case].append(time_to_first_step(resumed, checkpoints[case]))
                shutil.rmtree(run_dir / "checkpoints" / ckpt.step_name(case + 1), ignore_errors=True)
            log.info("resume %s (repeat %d): %.2f s to first step", case, repeat, samples[case][-1]["to_first_step_s"])
    return resume_summary(samples, real_step, relabelled_steps, args)


def resume_summary(samples: dict[Any, list[dict[str, float]]], real_step: int, relabelled: list[int],
                   args: argparse.Namespace) -> dict[str, Any]:
    def typical(case: Any, key: str) -> float:
        return median(s[key] for s in samples[case])

    fresh_step, fresh_batch = typical("fresh", "to_first_step_s"), typical("fresh", "to_first_batch_s")
    by_step: dict[str, dict[str, Any]] = {}
    for case in samples:
        if case == "fresh":
            continue
        if any(s["resumed_at_step"] != case for s in samples[case]):
            raise RuntimeError(f"a resume from the step-{case} checkpoint did not start at step {case}")
        by_step[str(case)] = {
            "to_first_step_s": typical(case, "to_first_step_s"), "to_first_batch_s": typical(case, "to_first_batch_s"),
            "construct_s": typical(case, "construct_s"), "after_construct_s": typical(case, "after_construct_s"),
            "ratio_first_step": typical(case, "to_first_step_s") / fresh_step,
            "ratio_first_batch": typical(case, "to_first_batch_s") / fresh_batch,
            "to_first_batch_samples_s": [s["to_first_batch_s"] for s in samples[case]],
            "checkpoint": "real" if case == real_step else "relabelled copy of the real one",
        }
    # Construction (model, tokenizer and processor load, manifest hashing) runs the same code whether or not a
    # resume follows, apart from one small manifest comparison, yet swings by a second on a shared machine; with the
    # fresh start's construction time for both, the ratio shows what resuming itself adds.
    fresh_construct, fresh_after = typical("fresh", "construct_s"), typical("fresh", "after_construct_s")
    for value in by_step.values():
        value["ratio_first_batch_same_construction"] = ((fresh_construct + value["after_construct_s"])
                                                        / (fresh_construct + fresh_after))
    ratios = [v["ratio_first_batch_same_construction"] for v in by_step.values()]
    after = [v["after_construct_s"] for v in by_step.values()]
    return {
        "fresh": {"to_first_step_s": fresh_step, "to_first_batch_s": fresh_batch,
                  "construct_s": typical("fresh", "construct_s"),
                  "after_construct_s": typical("fresh", "after_construct_s"),
                  "to_first_batch_samples_s": [s["to_first_batch_s"] for s in samples["fresh"]]},
        "resumed": by_step,
        "max_ratio_first_batch_same_construction": max(ratios),
        "after_construct_spread_over_n_s": max(after) - min(after),
        "goal_met": max(ratios) <= 1.25 and max(after) - min(after) <= 0.25,
        "repeats": args.resume_repeats,
        "measured": "the real path: Trainer(config, resume=checkpoint) then Trainer.run() to the end of its first "
                    "train_step (checkpoint load, data position, reader plan and seek, first batch); ratios use the "
                    "time to the first batch, since the first step's compute depends on which batch comes first; "
                    "after_construct_s holds what resuming adds (construction differs only by a manifest comparison); "
                    "the raw ratios are noisier than the same-construction ones",
        "checkpoints": f"step {real_step} is a real checkpoint; steps {relabelled} are copies of it with the step "
                       "and data position rewritten (running them for real would not fit the time budget; nothing "
                       "else in a checkpoint depends on the step)",
    }


# ------------------------------------------------------------------------------------------ profile
def profile(trainer: Any, bare: BareLoop, batches: list[Any], top: int = 25) -> None:
    """cProfile of the trainer's and the bare loop's steps on the same batches, to stderr."""
    import cProfile
    import pstats

    for name, fn in (("trainer", lambda: trainer_steps(trainer, iter(batches), len(batches))),
                     ("bare", lambda: bare.run(batches))):
        profiler = cProfile.Profile()
        profiler.enable()
        fn()
        profiler.disable()
        print(f"\n==== cProfile: {name} loop, {len(batches)} steps ====", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(top)


# ------------------------------------------------------------------------------------------ main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="0.6b", choices=("0.6b", "1.7b"), help="tiny model shape")
    parser.add_argument("--frame-scale", type=float, default=0.125,
                        help="frames per real frame (lengths and budget shrink together to keep CPU steps short)")
    parser.add_argument("--budget", type=int, default=0, help="frame budget (default 2048 x frame scale)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per-shard", type=int, default=250)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed block (trainer vs bare)")
    parser.add_argument("--pipeline-steps", type=int, default=6, help="steps per timed block (pipeline vs public)")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per side (trainer vs bare)")
    parser.add_argument("--pipeline-blocks", type=int, default=3, help="timed blocks per side (pipeline vs public)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--public-batch-size", type=int, default=8)
    parser.add_argument("--resume-steps", type=int, nargs="+", default=[20, 200, 2000],
                        help="the first is trained for real, the others are relabelled copies of it")
    parser.add_argument("--resume-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile both loops (to stderr)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    args.budget = args.budget or max(16, int(round(2048 * args.frame_scale)))
    steps = args.resume_steps
    if steps[0] < 1 or sorted(set(steps)) != steps or any(n + 1 in steps for n in steps):
        # a resume at N writes a checkpoint at N + 1, which is removed afterwards: it must not be one under test
        parser.error("--resume-steps: increasing steps >= 1, none the successor of another (the first is trained "
                     "for real)")
    return args


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from qwen_swe.train.trainer import Trainer

    started = time.perf_counter()
    model = build_model(work / "model", args.shape)
    talker = json.loads((model / "config.json").read_text())["talker_config"]
    hidden = talker["hidden_size"]
    shards = write_shards(work / "shards", args.shards, args.per_shard, args.frame_scale, hidden)
    log.info("model and shards ready in %.1f s", time.perf_counter() - started)

    trainer = Trainer(run_config(args, model, shards, work / "step-run", 100000))
    bare = BareLoop(trainer.config, trainer.accelerator.unwrap_model(trainer.objective))
    replay = list(islice(trainer.train_batches(), args.warmup + args.steps))  # the trainer's own reader
    report: dict[str, Any] = {"trainer_vs_bare": trainer_vs_bare(trainer, bare, replay, args)}
    report["trainer_vs_bare"]["activation_stats"] = activation_stats_cost(trainer, replay[args.warmup:][:2])
    record = trainer_steps(trainer, iter(replay[args.warmup:]), 1)[0]
    report["trainer_vs_bare"]["run_loop_bookkeeping"] = loop_bookkeeping_cost(trainer, record)
    if args.profile:
        profile(trainer, bare, replay[args.warmup:])
    report["pipeline_vs_public_batching"] = pipeline_vs_public(trainer, bare, args)
    trainable = sum(p.numel() for p in bare.parameters)
    total = sum(p.numel() for p in bare.objective.parameters())
    del bare
    report["resume_time"] = resume_time(trainer, args, model, shards, work)
    report["goals"] = GOALS
    report["settings"] = {
        "model": f"tiny {args.shape} (random weights, Swedish registered)", "parameters": total,
        # Padding costs talker work only; the code predictor runs on real frames. Their depth ratio decides how much
        # bucketing can save (the released models have 28 talker and 5 code-predictor layers).
        "talker_layers": talker["num_hidden_layers"],
        "code_predictor_layers": talker["code_predictor_config"]["num_hidden_layers"],
        "trainable_parameters": trainable, "frozen": trainer.config.train.freeze,
        "precision": trainer.config.train.precision, "optimizer": trainer.config.optim.name,
        "lr": trainer.config.optim.lr, "grad_clip": trainer.config.optim.grad_clip,
        "layouts": trainer.config.data.layouts, "frame_scale": args.frame_scale, "frame_budget": args.budget,
        "frame_budget_unscaled_equivalent": round(args.budget / args.frame_scale),
        "lengths": "log-normal seconds, median 8 s, sigma 0.6, clipped to 1-30 s, x 12.5 Hz x frame scale",
        "samples": args.shards * args.per_shard, "public_batch_size": args.public_batch_size,
        "torch_threads": torch.get_num_threads(), "processes": 1, "loader_workers": 0,
        "total_runtime_s": time.perf_counter() - started,
    }
    return report


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)  # one thread: steadier numbers on a shared machine
    with stdout_kept_for_json() as out:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            report = benchmark(args, args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-step-") as work:
                report = benchmark(args, Path(work))
        out.write(json.dumps(rounded(report), indent=2) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
