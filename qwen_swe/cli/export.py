"""`qwen-swe export`: a checkpoint to a folder that qwen_tts loads."""

from __future__ import annotations

import json

import click


@click.command("export")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--mode", type=click.Choice(["base", "custom-voice"]), default="base", show_default=True,
              help="base: keeps the speaker encoder (zero-shot cloning, generate_voice_clone). custom-voice: adds "
                   "every training speaker as a named voice (generate_custom_voice); qwen_tts builds no speaker "
                   "encoder for such a folder, so export base as well to keep cloning.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="Storage dtype of the weights (the releases use bfloat16).")
@click.option("--which", type=click.Choice(["latest", "best"]), default="latest", show_default=True,
              help="Checkpoint to take when SOURCE is a run directory.")
@click.option("--base", default=None, type=click.Path(exists=True, file_okay=False),
              help="The base model folder, if it moved since training (checked against the run's fingerprint).")
@click.option("--speakers", default=None, help="custom-voice: comma-separated speakers to add (default: all).")
@click.option("--speaker-prefix", default="", help="custom-voice: prefix for the new speaker names, e.g. 'sv_'.")
@click.option("--eval-json", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A `qwen-swe eval` result to put in the model card (default: the run's held-out eval).")
@click.option("--license", "license_id", default="apache-2.0", show_default=True, help="Model card license.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def export_cmd(source: str, out: str, mode: str, dtype: str, which: str, base: str | None, speakers: str | None,
               speaker_prefix: str, eval_json: str | None, license_id: str, overwrite: bool, as_json: bool) -> None:
    """Export a checkpoint (SOURCE: a run directory or one checkpoints/step-* folder; one process, DDP, ZeRO-2/3
    or LoRA) to a folder that qwen_tts.Qwen3TTSModel.from_pretrained loads: merged fp32-consolidated weights,
    config with 'swedish' registered, tokenizer, speech_tokenizer/ and a model card (README.md).

    \b
    qwen-swe export runs/pilot --out exports/pilot-base
    qwen-swe export runs/pilot --which best --mode custom-voice --out exports/pilot-voices
    """
    from ..export import export

    wanted = [s.strip() for s in speakers.split(",") if s.strip()] if speakers else None
    try:
        result = export(source, out, mode=mode, dtype=dtype, which=which, base=base, speakers=wanted,
                        speaker_prefix=speaker_prefix, eval_json=eval_json, license_id=license_id,
                        overwrite=overwrite, progress=not as_json)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"exported {result.checkpoint} (step {result.step}) as {result.mode} ({result.dtype}) to {result.out}")
    click.echo(f"  language swedish at codec row {result.language_row}")
    for name, row in result.speakers.items():
        click.echo(f"  speaker {name} at codec row {row}")
    click.echo(f"  model card: {result.out / 'README.md'}")


COMMANDS = (export_cmd,)
