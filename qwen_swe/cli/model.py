"""`qwen-swe env`, `init-tiny`, `add-language` and `parity`: the machine, model folders and their checks."""

from __future__ import annotations

import json
import sys

import click

from ..model_shapes import LAYOUTS


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def env(as_json: bool) -> None:
    """Versions, device, bf16 support, attention implementations, DeepSpeed ops and bitsandbytes."""
    from ..envinfo import collect, render

    info = collect()
    click.echo(json.dumps(info, indent=2) if as_json else render(info))


@click.command("init-tiny")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--shape", type=click.Choice(["0.6b", "1.7b"]), default="0.6b", show_default=True,
              help="0.6b: text hidden size differs from the talker's (like the real 0.6B); 1.7b: they are equal.")
@click.option("--model-type", type=click.Choice(["base", "custom_voice"]), default="base", show_default=True,
              help="base keeps a speaker encoder (voice cloning); custom_voice has named speakers instead.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--with-swedish", is_flag=True, help="Also register the 'swedish' language row (init: mean).")
def init_tiny(out: str, shape: str, model_type: str, seed: int, with_swedish: bool) -> None:
    """Write a complete random-weight Qwen3-TTS model folder to OUT (for tests and the demo).

    The folder loads with qwen_tts.Qwen3TTSModel.from_pretrained and can synthesise (noise, it is untrained).
    """
    from ..tiny import build_tiny_model

    path = build_tiny_model(out, shape=shape, seed=seed, model_type=model_type)
    if with_swedish:
        from ..language import add_language_to_folder

        record = add_language_to_folder(path, "swedish", init="mean")
        click.echo(f"registered swedish at codec row {record.row} (init {record.init})")
    click.echo(f"wrote tiny {shape} {model_type} model to {path}")


@click.command("add-language")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", default="swedish", show_default=True, help="Language name as generate(language=...) takes it.")
@click.option("--init", "init", default="mean", show_default=True,
              help="'mean' of the existing language rows, or 'copy:<language>' (e.g. copy:german).")
@click.option("--row", type=int, default=None, help="Codec row to use (default: first free row after the languages).")
def add_language_cmd(model_dir: str, name: str, init: str, row: int | None) -> None:
    """Register a new language row in MODEL_DIR in place (config.json and the codec embedding row)."""
    from ..language import add_language_to_folder

    try:
        record = add_language_to_folder(model_dir, name, init=init, row=row)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"registered {record.name} at codec row {record.row} (init {record.init} from rows {record.source_rows})")


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A Qwen3-TTS model folder (tiny or real).")
@click.option("--layout", "layout", default="all", show_default=True,
              type=click.Choice(("all",) + LAYOUTS), help="Which sequence layout to check.")
@click.option("--frames", type=int, default=6, show_default=True, help="Frames to generate per condition.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def parity(model_dir: str, layout: str, frames: int, as_json: bool) -> None:
    """Check that the training graph equals what the installed qwen_tts inference computes.

    For every layout, language (auto, a released one, swedish if registered) and speaker conditioning, hooks record
    what generate() feeds the talker and the code predictor; the same codes are teacher-forced through the training
    objective and the largest differences are printed. Both sides run in float64 on the CPU, so that a released
    model's large logits compare exactly; exit code 1 on any difference above 1e-5 of the size of the values compared
    (max|a - b| / max(1, max|b|)). Run it after upgrading qwen-tts or transformers.
    """
    from ..parity import TOLERANCE, run_parity

    layouts = list(LAYOUTS) if layout == "all" else [layout]
    results = run_parity(model_dir, layouts=layouts, frames=frames)
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        click.echo(json.dumps({"ok": ok, "tolerance": TOLERANCE, "model": model_dir,
                               "results": [r.as_dict() for r in results]}, indent=2))
    else:
        click.echo(f"{'layout':<18} {'language':<10} {'speaker':<16} {'frames':>6} {'embeds':>9} {'logits':>9} "
                   f"{'pred.in':>9} {'pred.out':>9}")
        for r in results:
            click.echo(f"{r.layout:<18} {r.language:<10} {r.speaker:<16} {r.frames:>6} {r.embeddings:9.1e} "
                       f"{r.talker_logits:9.1e} {r.predictor_inputs:9.1e} {r.predictor_logits:9.1e}"
                       + ("" if r.ok else "  MISMATCH"))
        click.echo("parity: OK" if ok else f"parity: FAILED (tolerance {TOLERANCE})")
    sys.exit(0 if ok else 1)


COMMANDS = (env, init_tiny, add_language_cmd, parity)
