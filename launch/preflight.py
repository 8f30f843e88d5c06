"""Check a host before a training launch and print the resolved plan (used by launch/hemma.sh, h100.sh, multinode.sh).

It fails before anything expensive starts, with a message that names the problem and the fix:
  - no GPU visible, or fewer than the accelerate config starts on this host;
  - a torch build for the wrong platform (a CUDA wheel on Hemma's ROCm card, a ROCm or CPU wheel on an H100);
  - an accelerate/DeepSpeed config that does not load or names a missing DeepSpeed file;
  - a run config with wrong fields, a missing model folder or shard index;
  - too little free disk under the run directory for checkpoints.
With --allow-cpu (QWEN_SWE_ALLOW_CPU=1 in the scripts) the GPU and torch-build checks only warn, so a plan can be
checked, and the CPU multi-node simulation (tools/multinode_netns.sh) can run, on a machine without GPUs.

The accelerate launch arguments that carry the host's overrides (rank, rendezvous address, process counts, DeepSpeed
file) are written one per line to --emit-args, for the calling script to pass on.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import click

# Expected torch build per host: Hemma runs a ROCm wheel, the H100 hosts a CUDA one; several hosts take either.
EXPECTED_BUILD = {"hemma": "rocm", "h100": "cuda", "multinode": None}
GIB = 1024 ** 3
REPO = Path(__file__).resolve().parents[1]


class PreflightError(click.ClickException):
    exit_code = 2


@dataclass
class Findings:
    """Plan lines, warnings and the accelerate launch overrides, gathered check by check."""

    plan: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    memory: str = ""  # qwen-swe plan's estimate
    launch_args: list[str] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.plan.append((label, text))


# ------------------------------------------------------------------------------------------ accelerate config
def read_accelerate_config(path: Path, ds_override: Optional[str]) -> tuple[Any, Optional[dict]]:
    """The config as accelerate's own loader reads it, and the DeepSpeed JSON it points at (or the override)."""
    import json

    from accelerate.commands.config.config_args import load_config_from_file

    if not path.is_file():
        raise PreflightError(f"{path}: accelerate config not found; set ACCELERATE_CONFIG to a file in "
                             "accelerate_configs/")
    try:
        config = load_config_from_file(str(path))
    except Exception as error:  # accelerate raises TypeError/ValueError/yaml errors for bad files
        raise PreflightError(f"{path}: accelerate cannot load it ({type(error).__name__}: {error})") from error
    if str(config.distributed_type).split(".")[-1] != "DEEPSPEED":
        if ds_override:
            raise PreflightError(f"DS_CONFIG={ds_override} but {path} does not use DeepSpeed (distributed_type "
                                 f"{config.distributed_type}); pick a DeepSpeed accelerate config or unset DS_CONFIG")
        return config, None
    ds_file = Path(ds_override or (config.deepspeed_config or {}).get("deepspeed_config_file", ""))
    given = ds_file
    if not ds_file.is_absolute() and not ds_file.is_file():
        ds_file = REPO / ds_file  # the accelerate configs name ds_configs/... relative to the repository
    if not ds_file.is_file():
        source = "DS_CONFIG" if ds_override else f"{path}: deepspeed_config.deepspeed_config_file"
        raise PreflightError(f"{source}: DeepSpeed config {str(given)!r} not found (relative paths are taken "
                             "from the current directory, then from the repository)")
    try:
        return config, {"path": str(ds_file.resolve()), **json.loads(ds_file.read_text())}
    except json.JSONDecodeError as error:
        raise PreflightError(f"{ds_file}: not valid JSON ({error})") from error


def describe_deepspeed(ds: Optional[dict]) -> str:
    if ds is None:
        return "not used"
    zero = ds.get("zero_optimization", {})
    offload = [part for part in ("optimizer", "param") if f"offload_{part}" in zero]
    from qwen_swe.train.precision import deepspeed_bf16

    return (f"{ds['path']}: ZeRO-{zero.get('stage', 0)}, {'bf16' if deepspeed_bf16(ds) else 'fp32'}"
            + (f", {' and '.join(offload)} offloaded to CPU" if offload else ""))


# ------------------------------------------------------------------------------------------ GPU and torch build
def check_devices(host: str, backend: Optional[str], per_host: int, allow_cpu: bool, found: Findings) -> str:
    """Checks GPUs and the torch build; returns the device type the trainer will see ("cuda" or "cpu")."""
    import torch

    hip, cuda = getattr(torch.version, "hip", None), getattr(torch.version, "cuda", None)
    build = f"ROCm {hip}" if hip else f"CUDA {cuda}" if cuda else "CPU only"
    problems = []
    expected = backend or EXPECTED_BUILD[host]
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        problems.append(f"no GPU visible: torch.cuda.is_available() is False (torch {torch.__version__}, {build}); "
                        + ("on ROCm pass /dev/kfd and /dev/dri into the container and check HIP_VISIBLE_DEVICES"
                           if expected == "rocm" else "check nvidia-smi and CUDA_VISIBLE_DEVICES"))
    elif visible < per_host:
        problems.append(f"{visible} GPU(s) visible but the accelerate config starts {per_host} process(es) on this "
                        "host; lower GPUS/GPUS_PER_NODE or make the GPUs visible")
    if expected == "rocm" and not hip:
        problems.append(f"torch {torch.__version__} is a {build} build, but {host} needs a ROCm build: install "
                        "torch==2.10.0 from https://download.pytorch.org/whl/rocm7.1 (or use launch/Containerfile.hemma)")
    if expected == "cuda" and (hip or not cuda):
        problems.append(f"torch {torch.__version__} is a {build} build, but {host} needs a CUDA build: install torch "
                        "from https://download.pytorch.org/whl/cu128")
    names = sorted({torch.cuda.get_device_name(i) for i in range(visible)}) if visible else []
    found.add("torch", f"{torch.__version__} ({build}); {visible} GPU(s) visible"
              + (f": {', '.join(names)}" if names else ""))
    for problem in problems:
        if allow_cpu:
            found.warnings.append(f"{problem} [allowed by QWEN_SWE_ALLOW_CPU=1]")
        else:
            found.errors.append(f"{problem} (QWEN_SWE_ALLOW_CPU=1 turns this into a warning, to check a plan "
                                "without GPUs)")
    if visible and torch.cuda.is_bf16_supported():
        found.add("bf16", "supported")
    elif visible:
        found.warnings.append("this GPU does not support bf16; the GPU configs here assume it")
    return "cuda" if visible else "cpu"


# ------------------------------------------------------------------------------------------ run config and disk
def split_train_args(train_args: tuple[str, ...]) -> list[str]:
    """The dotted overrides among the arguments passed through to `qwen_swe train` (flags are left to it)."""
    overrides, skip = [], False
    for item in train_args:
        if skip:
            skip = False
        elif item.startswith("-"):
            skip = "=" not in item and item not in ("--help", "-h")  # option with a separate value
        elif "=" in item:
            overrides.append(item)
    return overrides


def checkpoint_bytes_estimate(model_path: Path, keep_last: int) -> int:
    """Rough disk need: fp32 weights and two AdamW moments are ~6x a bf16 model folder, times the kept checkpoints
    (run.keep_last, the best one, and the one being written)."""
    model_bytes = sum(p.stat().st_size for p in model_path.rglob("*.safetensors"))
    return model_bytes * 6 * (keep_last + 2)


def free_bytes(directory: Path) -> tuple[Path, int]:
    existing = directory.resolve()
    while not existing.exists():
        existing = existing.parent
    return existing, shutil.disk_usage(existing).free


def check_run(run_config: Optional[str], preset: Optional[str], overrides: list[str], min_free_gb: Optional[float],
              found: Findings) -> Optional[Any]:
    """The validated run config (None after recording an error), with its plan lines and the disk check."""
    from qwen_swe.train import checkpoint
    from qwen_swe.train.config import load_config

    if not run_config and not preset:
        found.errors.append("no run config: set RUN_CONFIG=path/to/run.yaml (or PRESET=pilot|full with the "
                            "required fields as arguments: model.path=... data.shards=... run.output_dir=...)")
        return None
    try:
        config = load_config(run_config, preset, overrides)
        config.check_paths()
    except ValueError as error:
        found.errors.append(f"run config {run_config or '(preset ' + str(preset) + ')'}:\n{error}")
        return None
    source = " + ".join(filter(None, [run_config, preset and f"preset {preset}",
                                      overrides and f"{len(overrides)} override(s)"]))
    found.add("run config", source)
    found.add("model", f"{config.model.path} ({config.train.mode}, precision {config.train.precision})")
    where = config.data.shards or ", ".join(f"{name}={folder}" for name, folder in config.data.sources.items())
    found.add("shards", f"{where} (frame budget {config.data.frame_budget}, "
                        f"{config.data.num_workers} loader worker(s))")
    found.add("optimizer", f"{config.optim.name}, lr {config.optim.lr}, accumulation {config.optim.accumulation}, "
                           f"{config.run.max_steps} steps, checkpoint every {config.run.checkpoint_every}, "
                           f"eval every {config.run.eval_every}")
    run_dir = Path(config.run.output_dir)
    needed = int(min_free_gb * GIB) if min_free_gb is not None else \
        checkpoint_bytes_estimate(Path(config.model.path), config.run.keep_last)
    where, free = free_bytes(run_dir)
    found.add("run dir", f"{run_dir} ({free / GIB:.1f} GiB free on {where}, needs {needed / GIB:.1f} GiB"
                         f"{'' if min_free_gb is not None else ' estimated; MIN_FREE_GB overrides'})")
    if free < needed:
        found.errors.append(f"run.output_dir {run_dir}: {free / GIB:.1f} GiB free on {where}, checkpoints need about "
                             f"{needed / GIB:.1f} GiB; free space, point run.output_dir elsewhere, lower run.keep_last "
                             "or set MIN_FREE_GB if the estimate is wrong")
    latest = checkpoint.find_latest(run_dir)
    found.add("resume", f"--resume auto continues from {latest}" if latest else "--resume auto: no checkpoint yet, "
              "starts at step 0")
    return config


# ------------------------------------------------------------------------------------------ memory plan
PLAN_HOSTS = {"hemma": "r9700-32gb", "h100": "h100-80gb", "multinode": "h100-80gb"}


def run_precision(run: Any, ds: Optional[dict], found: Findings) -> Optional[Any]:
    """The precision the trainer will resolve for this run config and DeepSpeed config (None after an error)."""
    from qwen_swe.train.precision import resolve_precision

    try:
        precision = resolve_precision(run.train.precision, ds)
    except ValueError as error:
        found.errors.append(str(error))
        return None
    found.add("precision", precision.label + (" (from the DeepSpeed config; train.precision is ignored under "
                                              "DeepSpeed)" if ds is not None and run.train.precision != "fp32" else ""))
    return precision


def memory_plan(run: Any, ds: Optional[dict], precision: Any, host: str, per_host: int, machines: int,
                found: Findings) -> None:
    """`qwen-swe plan`'s estimate for this run config on this host shape, printed after the plan; a setup that does
    not fit only warns (the estimate is an estimate), with the planner's cheapest fix."""
    from qwen_swe.plan import HOSTS, Settings, estimate, recommend, render, resolve_shape

    zero = (ds or {}).get("zero_optimization", {})
    offload = "optimizer+params" if "offload_param" in zero else "optimizer" if "offload_optimizer" in zero else "none"
    settings = Settings(
        gpus_per_host=per_host, hosts=machines, zero=int(zero.get("stage", 0)), offload=offload,
        precision=precision.mode, optimizer=run.optim.name if run.optim.name in ("adamw", "adamw_8bit") else "adamw",
        mode=run.train.mode, lora_rank=run.train.lora.r, gradient_checkpointing=run.train.gradient_checkpointing,
        freeze_text_embedding=any("text_embedding" in pattern for pattern in run.train.freeze),
        frame_budget=run.data.frame_budget, sub_talker_frames=run.objective.sub_talker_frames)
    try:
        shape = resolve_shape(run.model.path)
        result = estimate(shape, settings, HOSTS[PLAN_HOSTS[host]])
        advice = None if result.fits else recommend(shape, settings, HOSTS[PLAN_HOSTS[host]])
    except ValueError as error:  # a model folder the planner cannot read must not block a launch
        found.warnings.append(f"no memory plan: {error}")
        return
    found.memory = render(result, advice)
    if not result.fits:
        found.warnings.append(f"the memory plan says this run does not fit on {PLAN_HOSTS[host]}; see its advice "
                              "above (qwen-swe plan --help)")


# ------------------------------------------------------------------------------------------ command
@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--host", type=click.Choice(sorted(EXPECTED_BUILD)), required=True)
@click.option("--accelerate-config", "accelerate_config", required=True, type=click.Path(dir_okay=False))
@click.option("--run-config", default=None, help="Run config YAML (RUN_CONFIG).")
@click.option("--preset", default=None, help="Run config preset (PRESET).")
@click.option("--backend", type=click.Choice(["cuda", "rocm"]), default=None,
              help="Torch build the host needs (default per host; multinode: any).")
@click.option("--num-processes", type=int, default=None, help="Override: processes of the whole job.")
@click.option("--num-machines", type=int, default=None, help="Override: hosts in the job.")
@click.option("--gpus-per-node", type=int, default=None, help="Override: processes per host (x hosts = job).")
@click.option("--node-rank", type=int, default=None, help="Override: this host's rank (0 runs the rendezvous).")
@click.option("--master-addr", default=None, help="Override: host 0's address as the others reach it.")
@click.option("--master-port", type=int, default=None, help="Override: rendezvous port on host 0.")
@click.option("--ds-config", default=None, help="Override: DeepSpeed JSON instead of the accelerate config's.")
@click.option("--min-free-gb", type=float, default=None, help="Free disk needed under run.output_dir.")
@click.option("--allow-cpu", is_flag=True, help="Turn the GPU and torch-build checks into warnings.")
@click.option("--emit-args", type=click.Path(dir_okay=False), default=None,
              help="Write the accelerate launch overrides here, one per line.")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def main(host: str, accelerate_config: str, run_config: Optional[str], preset: Optional[str],
         backend: Optional[str], num_processes: Optional[int], num_machines: Optional[int],
         gpus_per_node: Optional[int], node_rank: Optional[int], master_addr: Optional[str],
         master_port: Optional[int], ds_config: Optional[str], min_free_gb: Optional[float], allow_cpu: bool,
         emit_args: Optional[str], train_args: tuple[str, ...]) -> None:
    """Check this host for a launch with ACCELERATE_CONFIG and the run config; print the resolved plan."""
    found = Findings()
    config, ds = read_accelerate_config(Path(accelerate_config), ds_config)
    machines = num_machines or config.num_machines or 1
    total = num_processes or (gpus_per_node * machines if gpus_per_node else config.num_processes)
    if total % machines:
        raise PreflightError(f"{total} processes cannot be split evenly over {machines} hosts")
    rank = config.machine_rank if node_rank is None else node_rank
    if not 0 <= rank < machines:
        raise PreflightError(f"host rank {rank} is outside 0..{machines - 1} (NODE_RANK / machine_rank)")
    address = master_addr or config.main_process_ip
    port = master_port or config.main_process_port or 29500
    if machines > 1 and not address:
        raise PreflightError(f"{accelerate_config}: no main_process_ip; set MASTER_ADDR to host 0's address")
    if total > 1 and str(config.distributed_type).endswith("NO"):
        raise PreflightError(f"{accelerate_config} starts one process (distributed_type NO) but {total} were asked "
                             "for; use a multi-GPU config (h100_x8_zero2.yaml) or GPUS=1")
    overrides = [("--num_processes", num_processes or (gpus_per_node and total)), ("--num_machines", num_machines),
                 ("--machine_rank", node_rank), ("--main_process_ip", master_addr),
                 ("--main_process_port", master_port),
                 # always the resolved file, so the launch works from any directory
                 ("--deepspeed_config_file", ds and ds["path"])]
    found.launch_args = [text for flag, value in overrides if value is not None for text in (flag, str(value))]

    found.add("host", host + (f" {rank} of {machines}" if machines > 1 else ""))
    found.add("accelerate", f"{accelerate_config}: {str(config.distributed_type).split('.')[-1]}, {total} process(es)"
                            f" on {machines} host(s), {total // machines} here"
                            + (f", rendezvous {address}:{port}" if machines > 1 else ""))
    found.add("deepspeed", describe_deepspeed(ds))
    device_type = check_devices(host, backend, total // machines, allow_cpu, found)
    run = check_run(run_config, preset, split_train_args(train_args), min_free_gb, found)
    precision = run_precision(run, ds, found) if run is not None else None
    if run is not None and precision is not None:
        from qwen_swe.train.precision import resolve_attn_implementation

        attention, warning = resolve_attn_implementation(run.model.attn_implementation, device_type, precision.mode)
        found.add("attention", f"{attention} (model.attn_implementation={run.model.attn_implementation})")
        if warning:
            found.warnings.append(warning)
        memory_plan(run, ds, precision, host, total // machines, machines, found)
    report(found)
    if found.errors:
        raise SystemExit(2)
    if emit_args:
        Path(emit_args).write_text("".join(f"{arg}\n" for arg in found.launch_args))


def report(found: Findings) -> None:
    width = max(len(label) for label, _ in found.plan)
    click.echo("qwen-swe launch plan")
    for label, text in found.plan:
        click.echo(f"  {label.ljust(width)}  {text}")
    if found.memory:
        click.echo("memory plan (qwen-swe plan, per GPU and per host):")
        click.echo("\n".join(f"  {line}" for line in found.memory.splitlines()))
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in found.errors:
        click.echo(f"error: {error}", err=True)


if __name__ == "__main__":
    sys.exit(main())
