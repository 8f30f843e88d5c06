"""`qwen-swe plan`: will a training setup fit in GPU and host memory, and what to change if not."""

from __future__ import annotations

import json

import click

from ..train.precision import PRECISIONS
from ..units import SIZE_HELP


@click.command("plan", context_settings={"max_content_width": 110})
@click.option("--model", "model", default="1.7b", show_default=True,
              help="A preset (0.6b, 1.7b: the released Base shapes) or a model folder (its config.json is read).")
@click.option("--host", "host_name", default="r9700-32gb", show_default=True,
              help="r9700-32gb (Hemma: 32 GB card, 64 GB RAM), h100-80gb (80 GB cards, 1 TB RAM per host), or "
                   "cpu (training in this machine's RAM: no device context). --gpu-memory overrides the card size.")
@click.option("--gpu-memory", default=None,
              help=f"Memory of one device, e.g. 24GB (overrides the --host card). {SIZE_HELP}")
@click.option("--host-ram", default=None,
              help=f"RAM of one host, e.g. 128GB (overrides the --host default). {SIZE_HELP}")
@click.option("--gpus", "gpus", type=int, default=1, show_default=True, help="GPUs per host.")
@click.option("--hosts", type=int, default=1, show_default=True, help="Hosts (ZeRO partitions over all GPUs).")
@click.option("--zero", type=click.Choice(["0", "2", "3"]), default="0", show_default=True,
              help="DeepSpeed ZeRO stage; 0 = plain accelerate (DDP with several GPUs).")
@click.option("--offload", type=click.Choice(["none", "optimizer", "optimizer+params"]), default="none",
              show_default=True, help="What DeepSpeed moves to host RAM (ds_configs/*_offload.json).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="bf16-mixed",
              show_default=True, help="train.precision; under --zero 2/3 bf16 means bf16 weights + fp32 master.")
@click.option("--optimizer", type=click.Choice(["adamw", "adamw_8bit"]), default="adamw", show_default=True,
              help="optim.name (adamw_8bit: bitsandbytes, not under DeepSpeed).")
@click.option("--mode", type=click.Choice(["full", "lora"]), default="full", show_default=True, help="train.mode.")
@click.option("--lora-rank", type=int, default=16, show_default=True, help="train.lora.r.")
@click.option("--gradient-checkpointing", is_flag=True, help="train.gradient_checkpointing=true.")
@click.option("--freeze-text-embedding", is_flag=True,
              help="Freeze talker.model.text_embedding (a third of the 0.6B; the pilot/full presets do).")
@click.option("--frame-budget", type=int, default=2048, show_default=True,
              help="data.frame_budget: padded codec frames per batch (12.5 a second).")
@click.option("--sub-talker-frames", type=float, default=1.0, show_default=True,
              help="objective.sub_talker_frames: the share of frames whose sub-talker loss a step computes (the "
                   "sub-talker holds most of the activations: 0.25 keeps a quarter of them).")
@click.option("--headroom", type=float, default=0.10, show_default=True,
              help="Share of device and host memory to leave free for a setup to count as fitting.")
@click.option("--no-recommend", is_flag=True, help="Only estimate the given settings.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (bytes in GB, every component).")
def plan_cmd(model: str, host_name: str, gpu_memory: str | None, host_ram: str | None, gpus: int, hosts: int,
             zero: str, offload: str, precision: str, optimizer: str, mode: str, lora_rank: int,
             gradient_checkpointing: bool, freeze_text_embedding: bool, frame_budget: int, sub_talker_frames: float,
             headroom: float,
             no_recommend: bool, as_json: bool) -> None:
    """Estimate per-GPU and host memory of a training setup, say whether it fits, and recommend what to change.

    \b
    Per device: weights, optimizer states, activations and gradients at the peak of the step (activations are
    freed layer by layer in backward while gradients arrive), DeepSpeed buckets, allocator slack, device context.
    Per host: offloaded DeepSpeed state, every process loading the model, the processes themselves.
    When the setup does not fit, the recommendation is the cheapest set of memory savers that does: first those
    that keep the math (8-bit Adam, checkpointing, ZeRO, offload, smaller micro-batches with accumulation), by
    their step-time cost, then those that change what trains (freezing the text embedding, bf16-pure, LoRA).

    \b
    Examples:
      qwen-swe plan --model 1.7b --host r9700-32gb
      qwen-swe plan --model 1.7b --host h100-80gb --gpus 8 --zero 2 --frame-budget 4096
      qwen-swe plan --model runs/tiny --host cpu --precision fp32 --json
    """
    from ..plan import Settings, estimate, plan_dict, recommend, render, resolve_host, resolve_shape

    try:
        shape = resolve_shape(model)
        host = resolve_host(host_name, gpu_memory=gpu_memory, host_ram=host_ram)
        settings = Settings(gpus_per_host=gpus, hosts=hosts, zero=int(zero), offload=offload, precision=precision,
                            optimizer=optimizer, mode=mode, lora_rank=lora_rank,
                            gradient_checkpointing=gradient_checkpointing,
                            freeze_text_embedding=freeze_text_embedding, frame_budget=frame_budget,
                            sub_talker_frames=sub_talker_frames)
        result = estimate(shape, settings, host, headroom)
        advice = None if no_recommend else recommend(shape, settings, host, headroom)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(plan_dict(result, advice), indent=2) if as_json else render(result, advice))


COMMANDS = (plan_cmd,)
