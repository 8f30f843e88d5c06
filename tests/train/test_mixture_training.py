"""Training on several sources (data.sources with a schedule): a run stopped before a schedule boundary and resumed
after it gives the uninterrupted run's losses; each step records its sources' losses, frames and weights
(metrics.jsonl, TensorBoard, status.json); each source's eval split is scored as if it were alone; a changed source
list is refused on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwen_swe.data.stream import StreamConfig
from qwen_swe.data.synthetic import synthetic_shards
from qwen_swe.layout import SequenceLayout
from qwen_swe.objective import TalkerObjective
from qwen_swe.train.config import load_config
from qwen_swe.train.evaluator import HeldOutEvaluator
from qwen_swe.train.provenance import ResumeRefused
from qwen_swe.train.trainer import Trainer

from ..helpers import load_swedish_model
from ..launching import losses
from .conftest import fresh_accelerate_state_reset

STEPS = 8
# studio only for the first 4 optimizer steps, then half and half: the switch lies between steps 4 and 5
SCHEDULE = "data.schedule={0: {studio: 1.0}, 3: {studio: 1.0}, 4: {studio: 0.5, varied: 0.5}}"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture-sources")
    return {
        "studio": synthetic_shards(root / "studio", shards=2, per_shard=12, seed=1, eval_samples=4, prefix="studio-",
                                   with_reference=False),
        "varied": synthetic_shards(root / "varied", shards=2, per_shard=12, seed=2, eval_samples=5, prefix="varied-",
                                   with_reference=False, mean_frames=30),
    }


def settings(model: Path, folders: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [f"model.path={model}", f"data.sources.studio={folders['studio']}",
            f"data.sources.varied={folders['varied']}", SCHEDULE, f"run.output_dir={run_dir}",
            f"run.max_steps={STEPS}", f"schedule.total_steps={STEPS}", "optim.accumulation=2",
            "data.layouts={streaming: 1}", "data.num_workers=0", "data.frame_budget=120", "run.eval_every=4",
            "run.eval_batches=50", "run.checkpoint_every=3", "run.activation_stats_every=0",
            "train.freeze=[text_embedding]", *extra]


def train(args: list[str], resume: str | None = None, allow: tuple[str, ...] = ()) -> int:
    fresh_accelerate_state_reset()
    try:
        return Trainer(load_config(None, "smoke", args), resume=resume, allow_changes=allow).run()
    finally:
        fresh_accelerate_state_reset()


@pytest.fixture(scope="module")
def reference(tiny_06b, folders, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mixture-reference")
    assert train(settings(tiny_06b, folders, run_dir)) == 0
    return run_dir


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_each_step_records_its_sources_and_the_schedule_switches_where_stated(reference):
    steps = records(reference)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    for record in steps[:4]:  # steps 1-4 (0-based 0-3): studio only
        assert record["source/studio/weight"] == 1.0 and record["source/varied/frames"] == 0
        assert "source/varied/loss" not in record and record["source/studio/loss"] == pytest.approx(record["loss"])
    late = steps[4:]
    assert all(r["source/varied/weight"] == 0.5 for r in late)
    assert sum(r["source/varied/frames"] for r in late) > 0 and sum(r["source/studio/frames"] for r in late) > 0
    status = json.loads((reference / "status.json").read_text())
    assert set(status["sources"]) == {"studio", "varied"}
    total = sum(r["source/studio/frames"] + r["source/varied/frames"] for r in steps)
    assert status["sources"]["studio"]["frames"] == sum(r["source/studio/frames"] for r in steps)
    assert status["sources"]["studio"]["share"] == pytest.approx(status["sources"]["studio"]["frames"] / total)
    from qwen_swe.train.monitor import render_status

    view = render_status(reference)
    assert "source varied:" in view and "weight now 50.0%" in view and "eval studio: loss" in view
    # every eval scores each source's eval split, and TensorBoard has the per-source curves
    evaluation = status["last_eval"]
    assert set(evaluation["sources"]) == {"studio", "varied"}
    assert evaluation["samples"] == sum(s["samples"] for s in evaluation["sources"].values()) == 9
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(reference / "tb" / "qwen-swe")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/source/studio/loss", "train/source/varied/frames", "train/source/varied/weight",
            "eval/studio/loss", "eval/varied/loss", "eval/loss"} <= tags


def test_stopped_before_the_switch_and_resumed_after_it_gives_the_uninterrupted_losses(tiny_06b, folders,
                                                                                       reference, tmp_path):
    run_dir = tmp_path / "run"
    # ends at step 5, past the switch, with its last checkpoints at 3 and 5: resuming at 3 replays steps 4-8 the way
    # a run killed at step 5 would
    assert train(settings(tiny_06b, folders, run_dir, "run.max_steps=5")) == 0
    middle = run_dir / "checkpoints" / "step-00000003"
    position = json.loads((middle / "data_position_rank0.json").read_text())
    assert set(position["source_positions"]) == {"studio", "varied"} and position["mixture"]
    assert position["source_positions"]["varied"] == [0, 0]  # nothing drawn from it before the switch
    assert train(settings(tiny_06b, folders, run_dir), resume=str(middle)) == 0
    ours, theirs = losses(run_dir), losses(reference)
    assert sorted(ours) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert ours[step] == pytest.approx(theirs[step], rel=1e-6, abs=1e-7), step
    # the frames counted per source survive the resume too
    sources = [json.loads((folder / "status.json").read_text())["sources"] for folder in (run_dir, reference)]
    assert sources[0] == sources[1]

    # a changed source list is a change of the math: refused unless named
    changed = [a for a in settings(tiny_06b, folders, run_dir) if not a.startswith(("data.sources.varied", "data.sch"))]
    with pytest.raises(ResumeRefused, match="data.sources"):
        train(changed, resume="auto")


def test_each_source_is_scored_as_if_it_were_alone(tiny_06b, folders, fresh_accelerate_state):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    wrapper = load_swedish_model(tiny_06b)
    layout = SequenceLayout(wrapper.model.config, wrapper.processor.tokenizer)
    objective = TalkerObjective(wrapper.model)
    stream = StreamConfig(frame_budget=120, layouts={"streaming": 1.0})

    def evaluate(*data: str) -> dict:
        config = load_config(None, "smoke", [f"model.path={tiny_06b}", "run.output_dir=unused", "run.eval_every=1",
                                             "run.eval_batches=50", *data])
        return HeldOutEvaluator(accelerator, config, layout, stream, everyone=bool).evaluate(objective, 0)

    mixed = evaluate(*(f"data.sources.{name}={folder}" for name, folder in folders.items()))
    alone = {name: evaluate(f"data.shards={folder}") for name, folder in folders.items()}
    for name in folders:
        expected = {k: v for k, v in alone[name].items() if k != "step"}
        assert mixed["sources"][name] == pytest.approx(expected, rel=1e-9)
    # the top-level numbers are every eval split scored together: means per frame over both
    frames = {name: alone[name]["frames"] for name in folders}
    assert mixed["frames"] == sum(frames.values())
    assert mixed["loss"] == pytest.approx(sum(alone[n]["loss"] * frames[n] for n in folders) / mixed["frames"])
    assert torch.isfinite(torch.tensor(mixed["loss"]))
