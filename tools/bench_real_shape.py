"""Sub-talker frame sampling at the released widths: step time and memory per share of frames, on this CPU.

For each released shape (0.6B, 1.7B) a fresh Python process builds a random-weight Qwen3TTSForConditionalGeneration
with the released widths and vocabularies and `--talker-layers` of the 28 talker layers (all of them by default),
lays out one real batch (`--samples` x `--frames`, streaming layout, Swedish text) with `qwen_swe.layout`, and runs
the forward and backward of `TalkerObjective` in fp32 (the text embedding frozen, as the GPU presets do) with the
sub-talker scored on 1, 1/4 and 1/16 of the frames, interleaved round by round (`--rounds`) after one warm-up
step each, so that drifts of the machine hit every share alike. Per share: the median step time, the speedup over
share 1, and the step's peak memory over the built model (resident set size sampled every millisecond during the
step, minus the size before it), next to what `qwen-swe plan` estimates for the same batch (its activations and
gradients at the peak of forward and backward). Memory is measured in a second process whose allocator returns
every large block to the system when it is freed (MALLOC_MMAP_THRESHOLD_ fixed at 128 KiB; by default glibc keeps
freed blocks of up to 32 MiB mapped, which the resident size would count as used): there the resident size
follows the bytes really live, which is what the planner models. That setting slows the step down, so times come
from the first process, with glibc's defaults. The default-allocator peak is reported too.

With fewer talker layers than 28 (to fit a smaller machine) it also runs half that many and extrapolates linearly
to 28 layers (per-layer cost = the difference / the layer difference); the JSON says which figures are measured
and which extrapolated.

Prints one JSON object.

    .venv/bin/python tools/bench_real_shape.py                        # both shapes, all layers (~10 min, 2 cores)
    .venv/bin/python tools/bench_real_shape.py --shape 0.6b --rounds 2
    .venv/bin/python tools/bench_real_shape.py --talker-layers 4      # 4 and 2 layers, extrapolated to 28
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARES = (1.0, 0.25, 0.0625)
RELEASED_TALKER_LAYERS = 28


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


class PeakSampler:
    """The largest resident set size seen while the block runs (a thread samples it every millisecond)."""

    def __enter__(self) -> "PeakSampler":
        self.peak, self.running = rss_bytes(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *_: Any) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())


def model_config(shape: str, talker_layers: int) -> dict[str, Any]:
    from qwen_swe.model_shapes import model_config_dict

    config = model_config_dict(shape)
    config["talker_config"]["num_hidden_layers"] = talker_layers
    return config


def measure(shape: str, talker_layers: int, samples: int, frames: int, rounds: int) -> dict[str, Any]:
    """Runs inside a fresh process: time and peak memory of one forward+backward per share, interleaved."""
    from qwen_swe.layout import IGNORE
    from qwen_swe.objective import TalkerObjective, frame_sampling_generator, sample_sub_talker_frames
    from qwen_swe.tiny import random_batch, random_model

    libc = ctypes.CDLL("libc.so.6")
    config, model = random_model(shape, talker_layers=talker_layers)
    batch = random_batch(config, samples, frames)
    model.speaker_encoder.requires_grad_(False)
    model.talker.model.text_embedding.requires_grad_(False)
    model.train()
    objective = TalkerObjective(model)

    def step(share: float, draw: int) -> tuple[float, int]:
        scored = sample_sub_talker_frames(batch, share, frame_sampling_generator(0, draw, 0, 0))
        libc.malloc_trim(0)
        before = rss_bytes()
        started = time.perf_counter()
        with PeakSampler() as peak:
            objective(scored)["loss"].backward()
        seconds = time.perf_counter() - started
        objective.zero_grad(set_to_none=True)
        libc.malloc_trim(0)
        return seconds, peak.peak - before

    for share in SHARES:
        step(share, 0)  # warm-up: first-touch allocations and kernel choice
    times: dict[float, list[float]] = {share: [] for share in SHARES}
    peaks: dict[float, list[int]] = {share: [] for share in SHARES}
    for draw in range(1, rounds + 1):
        for share in SHARES:
            seconds, peak = step(share, draw)
            times[share].append(seconds)
            peaks[share].append(peak)
    return {
        "talker_layers": talker_layers,
        "batch": {"positions": int(batch.text_ids.numel()), "target_frames": int(batch.sub_frames.numel()),
                  "supervised": int((batch.labels != IGNORE).sum())},
        "seconds": {str(share): statistics.median(times[share]) for share in SHARES},
        "peak_bytes": {str(share): max(peaks[share]) for share in SHARES},
        "all_seconds": {str(share): [round(t, 3) for t in times[share]] for share in SHARES},
    }


def planner_bytes(shape: str, talker_layers: int, batch: dict[str, int], share: float) -> float:
    """The planner's activations + gradients at the peak of forward and backward (what this bench runs: no optimizer
    step), for the same model, batch and share."""
    from qwen_swe.plan import BatchShape, ModelShape, Settings, cpu_host, estimate

    model = ModelShape.from_config(model_config(shape, talker_layers), name=shape)
    scored = max(1, round(share * batch["target_frames"]))
    result = estimate(model, Settings(precision="fp32", optimizer="adamw", freeze_text_embedding=True),
                      cpu_host(1024**4), batch=BatchShape(**batch, scored_frames=scored))
    return result.forward_backward_peak


def run_child(shape: str, layers: int, args: argparse.Namespace, live_memory: bool = False) -> dict[str, Any]:
    import os

    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)} if live_memory else {})}
    child = subprocess.run([sys.executable, __file__, "--measure", shape, "--talker-layers", str(layers),
                            "--samples", str(args.samples), "--frames", str(args.frames),
                            "--rounds", "1" if live_memory else str(args.rounds)], capture_output=True, text=True,
                           cwd=ROOT, env=env)
    if child.returncode != 0:
        raise SystemExit(f"{shape} with {layers} talker layers failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def summary(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    layers = args.talker_layers or RELEASED_TALKER_LAYERS
    full = run_child(shape, layers, args)
    live = run_child(shape, layers, args, live_memory=True)
    out: dict[str, Any] = {"talker_layers_built": layers, "batch": full["batch"], "shares": {}}
    seconds, peaks = dict(full["seconds"]), dict(live["peak_bytes"])
    if layers < RELEASED_TALKER_LAYERS:  # extrapolate linearly from `layers` and half as many
        half = run_child(shape, max(1, layers // 2), args)
        half["peak_bytes"] = run_child(shape, max(1, layers // 2), args, live_memory=True)["peak_bytes"]
        span = layers - half["talker_layers"]
        out["extrapolated_to"] = RELEASED_TALKER_LAYERS
        out["extrapolation"] = (f"measured with {layers} and {half['talker_layers']} talker layers; per-layer time "
                                f"and memory = difference / {span}, times the {RELEASED_TALKER_LAYERS - layers} "
                                "layers not built")
        for key in seconds:
            seconds[key] += (seconds[key] - half["seconds"][key]) / span * (RELEASED_TALKER_LAYERS - layers)
            peaks[key] += (peaks[key] - half["peak_bytes"][key]) / span * (RELEASED_TALKER_LAYERS - layers)
    for share in SHARES:
        key = str(share)
        planned = planner_bytes(shape, RELEASED_TALKER_LAYERS, full["batch"], share) \
            if layers < RELEASED_TALKER_LAYERS else planner_bytes(shape, layers, full["batch"], share)
        out["shares"][key] = {
            "step_seconds": round(seconds[key], 3),
            "speedup": round(seconds[str(SHARES[0])] / seconds[key], 3),
            "peak_gb": round(peaks[key] / 1024**3, 3),
            "peak_gb_default_allocator": round(full["peak_bytes"][key] / 1024**3, 3),
            "planner_gb": round(planned / 1024**3, 3),
            "planner_error": round((planned - peaks[key]) / peaks[key], 4),
            "measured_step_seconds": full["all_seconds"][key],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["0.6b", "1.7b"], action="append", help="Only these shapes.")
    parser.add_argument("--talker-layers", type=int, default=0, help="Talker layers to build (0: all 28).")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--frames", type=int, default=120, help="Frames per sample (12.5 a second).")
    parser.add_argument("--rounds", type=int, default=2, help="Measured rounds over the shares.")
    parser.add_argument("--measure", choices=["0.6b", "1.7b"], help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.talker_layers, args.samples, args.frames, args.rounds)))
        return
    started = time.time()
    report: dict[str, Any] = {
        "what": "forward+backward of TalkerObjective, fp32 on this CPU, text embedding frozen; sub-talker on a "
                "share of the frames",
        "goal_speedup_at_1_16": {"1.7b": 1.6, "0.6b": 1.7}, "goal_planner_error": 0.15, "shapes": {}}
    for shape in args.shape or ["0.6b", "1.7b"]:
        report["shapes"][shape] = summary(shape, args)
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
