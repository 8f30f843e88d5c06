"""`qwen-swe`: the command line. Thin by design: parse, call the library, print.

Heavy imports (torch, transformers, qwen_tts) happen inside the commands so that `qwen-swe --help` stays fast.
"""

from __future__ import annotations

import json
import sys

import click

LAYOUT_NAMES = ("non_streaming", "streaming", "icl", "icl_non_streaming")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="qwen-swe")
def main() -> None:
    """Teach Qwen3-TTS (12 Hz Base, 0.6B / 1.7B) to speak Swedish.

    \b
    Start here:
      qwen-swe env                          what this machine offers (GPU, bf16, attention, DeepSpeed, 8-bit Adam)
      qwen-swe init-tiny runs/tiny          a tiny random-weight model folder for trying things out
      qwen-swe add-language runs/tiny       register "swedish" as a language the model can be conditioned on
      qwen-swe parity --model runs/tiny     prove the training graph equals what inference runs
      qwen-swe shards build data/shards --model runs/tiny --manifest corpus.jsonl
      accelerate launch -m qwen_swe train --preset smoke model.path=runs/tiny data.shards=data/shards ...
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def env(as_json: bool) -> None:
    """Versions, device, bf16 support, attention implementations, DeepSpeed ops and bitsandbytes."""
    from .envinfo import collect, render

    info = collect()
    click.echo(json.dumps(info, indent=2) if as_json else render(info))


@main.command("init-tiny")
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
    from .tiny import build_tiny_model

    path = build_tiny_model(out, shape=shape, seed=seed, model_type=model_type)
    if with_swedish:
        from .language import add_language_to_folder

        record = add_language_to_folder(path, "swedish", init="mean")
        click.echo(f"registered swedish at codec row {record.row} (init {record.init})")
    click.echo(f"wrote tiny {shape} {model_type} model to {path}")


@main.command("add-language")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", default="swedish", show_default=True, help="Language name as generate(language=...) takes it.")
@click.option("--init", "init", default="mean", show_default=True,
              help="'mean' of the existing language rows, or 'copy:<language>' (e.g. copy:german).")
@click.option("--row", type=int, default=None, help="Codec row to use (default: first free row after the languages).")
def add_language_cmd(model_dir: str, name: str, init: str, row: int | None) -> None:
    """Register a new language row in MODEL_DIR in place (config.json and the codec embedding row)."""
    from .language import add_language_to_folder

    try:
        record = add_language_to_folder(model_dir, name, init=init, row=row)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"registered {record.name} at codec row {record.row} (init {record.init} from rows {record.source_rows})")


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A Qwen3-TTS model folder (tiny or real).")
@click.option("--layout", "layout", default="all", show_default=True,
              type=click.Choice(("all",) + LAYOUT_NAMES), help="Which sequence layout to check.")
@click.option("--frames", type=int, default=6, show_default=True, help="Frames to generate per condition.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def parity(model_dir: str, layout: str, frames: int, as_json: bool) -> None:
    """Check that the training graph equals what the installed qwen_tts inference computes.

    For every layout, language (auto, a released one, swedish if registered) and speaker conditioning, hooks record
    what generate() feeds the talker and the code predictor; the same codes are teacher-forced through the training
    objective and the largest differences are printed. Exit code 1 on any difference above 1e-5. Run it after
    upgrading qwen-tts or transformers. Uses fp32 on the CPU.
    """
    from .parity import TOLERANCE, run_parity

    layouts = list(LAYOUT_NAMES) if layout == "all" else [layout]
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


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Run config YAML (see `qwen-swe train --help` and configs in the README).")
@click.option("--preset", type=click.Choice(["smoke", "pilot", "full"]), default=None,
              help="Start from a preset: smoke (seconds on CPU), pilot (bounded Hemma run), full.")
@click.option("--resume", default=None, help="'auto' (newest complete checkpoint of the run, if any) or a path.")
@click.option("--allow-changes", default="", help="Comma-separated changes to accept when resuming "
              "(e.g. optim.lr,world_size,shards_fingerprint); anything else that changed is refused.")
@click.argument("overrides", nargs=-1)
def train(config_path: str | None, preset: str | None, resume: str | None, allow_changes: str,
          overrides: tuple[str, ...]) -> None:
    """Train a Swedish Qwen3-TTS from shards. OVERRIDES are dotted assignments: optim.lr=1e-4 run.max_steps=200.

    \b
    One process:        qwen-swe train --config run.yaml
    Several processes:  accelerate launch --config_file accelerate_configs/cpu_zero2.yaml -m qwen_swe train ...
    Resume:             the same command plus --resume auto
    Watch:              qwen-swe status RUN_DIR   and   tensorboard --logdir RUN_DIR/tb
    Exit codes: 0 finished or stopped cleanly by SIGTERM/SIGINT (resumable), 3 stopped on non-finite numbers.
    """
    from .train.config import load_config
    from .train.trainer import Trainer

    try:
        config = load_config(config_path, preset, list(overrides))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    allowed = tuple(item.strip() for item in allow_changes.split(",") if item.strip())
    try:
        trainer = Trainer(config, resume=resume, allow_changes=allowed)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    sys.exit(trainer.run())


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print status.json as it is.")
def status(run_dir: str, as_json: bool) -> None:
    """Where a training run stands: step, ETA, last losses, throughput, last eval, checkpoints, health."""
    from .train.monitor import STATUS, render_status

    if as_json:
        from pathlib import Path

        click.echo((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
        return
    try:
        click.echo(render_status(run_dir))
    except ValueError as error:
        raise click.ClickException(str(error)) from error


@main.command("diagnose-non-finite")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--bundle", default=None, type=click.Path(exists=True, file_okay=False),
              help="A diagnostics/non_finite_step* folder (default: the newest).")
@click.option("--json", "as_json", is_flag=True)
def diagnose_non_finite(run_dir: str, bundle: str | None, as_json: bool) -> None:
    """Replay the batch that stopped a run from its last checkpoint and name the first non-finite module."""
    from .train.diagnose import diagnose, render

    try:
        report = diagnose(run_dir, bundle)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


# ------------------------------------------------------------------------------------------------ shards


def _byte_size(value: str) -> int:
    """'256MB', '1.5GiB', '0' or a plain byte count -> bytes."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    try:
        return int(float(number) * units[text[len(number):]])
    except (ValueError, KeyError) as error:
        raise click.BadParameter(f"{value!r}: give bytes, or a number with KB, MB, GB, KiB, MiB or GiB") from error


@main.group()
def shards() -> None:
    """Build, inspect and verify training shards (WebDataset tars of codec codes, x-vectors and ICL references).

    \b
      qwen-swe shards build OUT --model MODEL_DIR --manifest corpus.jsonl --eval-speakers 2
      qwen-swe shards inspect OUT
      qwen-swe shards verify OUT
    """


@shards.command("build", context_settings={"max_content_width": 110})
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Qwen3-TTS Base model folder: its speech_tokenizer/ makes the codes, its speaker encoder the "
                   "x-vectors.")
@click.option("--manifest", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL: audio (relative to the file), text, optional speaker, language, ref_audio, id; other "
                   "fields are kept as metadata. Repeatable.")
@click.option("--hf-dataset", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A Hugging Face dataset saved with save_to_disk (Dataset or DatasetDict). Repeatable.")
@click.option("--parquet", multiple=True, type=click.Path(exists=True),
              help="A parquet file or a folder of *.parquet (read with datasets, offline). Repeatable.")
@click.option("--arrow", multiple=True, type=click.Path(exists=True),
              help="An arrow file or a folder of *.arrow (read with datasets, offline). Repeatable.")
@click.option("--folder", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Audio files (wav/flac/ogg/mp3) with a same-stem .txt transcript each; speaker = parent "
                   "folder name unless --speaker. Repeatable.")
@click.option("--tsv", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Tab-separated table with a header: path, text, optional speaker (see the column flags). "
                   "Repeatable.")
@click.option("--audio-column", default=None, help="Audio column (tables): a path, {bytes, path} or {array, "
              "sampling_rate}. Default: audio (datasets), path (TSV).")
@click.option("--text-column", default=None, help="Transcript column. Default: text.")
@click.option("--speaker-column", default=None, help="Speaker column. Default: speaker, when the table has it.")
@click.option("--id-column", default=None, help="Stable utterance id column (keys derive from it). Default: the "
              "audio path, else the row number.")
@click.option("--language-column", default=None, help="Language column. Default: language, when present.")
@click.option("--hf-split", default=None, help="Split of a DatasetDict (default: the only one, else train).")
@click.option("--audio-root", default=None, type=click.Path(exists=True, file_okay=False),
              help="Where relative audio paths of TSV/dataset sources live (default: next to the source).")
@click.option("--speaker", default=None, help="Speaker of items whose source names none (for --folder: of every "
              "file, instead of the parent folder name), e.g. a single-voice corpus. Without it, an item with no "
              "speaker is its own one-clip speaker.")
@click.option("--hf-cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache for datasets' parquet/arrow conversion (default: HF_DATASETS_CACHE).")
@click.option("--language", default="swedish", show_default=True, help="Language of items that name none.")
@click.option("--min-seconds", type=float, default=1.0, show_default=True)
@click.option("--max-seconds", type=float, default=20.0, show_default=True)
@click.option("--max-clipped-fraction", type=float, default=0.001, show_default=True,
              help="Reject a clip when more than this share of its samples sit at full scale (|x| >= 0.999).")
@click.option("--silence-dbfs", type=float, default=-50.0, show_default=True,
              help="Reject a clip whose RMS level is below this (near-silence).")
@click.option("--loudness-dbfs", type=float, default=None,
              help="Normalise each clip's RMS level to this (e.g. -23), never lifting a peak above --peak-dbfs. "
                   "Default: keep source levels.")
@click.option("--peak-dbfs", type=float, default=-1.0, show_default=True)
@click.option("--numbers-to-words/--keep-numbers", default=False, show_default=True,
              help="Spell digits as Swedish words (21 -> tjugoett, 1999 -> nittonhundranittionio).")
@click.option("--xvector-from", type=click.Choice(["self", "speaker-reference"]), default="self", show_default=True,
              help="x-vector from the clip itself, or from its same-speaker reference clip (as voice cloning "
                   "with another clip of the speaker does).")
@click.option("--eval-speakers", type=int, default=0, show_default=True,
              help="Hold out this many whole speakers (chosen by a seeded hash of their names) as eval/.")
@click.option("--eval-fraction", type=float, default=0.0, show_default=True,
              help="Or hold out this share of the speakers.")
@click.option("--eval-utterances-per-speaker", type=int, default=0, show_default=True,
              help="Also move this many utterances of every training speaker (with more than that) to eval/.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split and the ICL references.")
@click.option("--samples-per-shard", type=int, default=2000, show_default=True)
@click.option("--max-shard-bytes", default="256MB", show_default=True,
              help="Start a new shard before one would exceed this (0: no size cap).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes that decode and check audio. The output does not depend on it.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, rocm (= torch's cuda on ROCm), "
              "optionally :N.")
@click.option("--codec-precision", type=click.Choice(["auto", "float32", "float64"]), default="auto",
              show_default=True, help="auto: float64 on CPU (batched codes == one-by-one codes), float32 on GPU.")
@click.option("--encode-batch-seconds", type=float, default=240.0, show_default=True,
              help="Audio per codec batch (padded seconds); lower it if the GPU runs out of memory.")
@click.option("--restart", is_flag=True, help="Delete this build's earlier output in OUT and start over.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def shards_build(out: str, model_dir: str, manifest: tuple[str, ...], hf_dataset: tuple[str, ...],
                 parquet: tuple[str, ...], arrow: tuple[str, ...], folder: tuple[str, ...], tsv: tuple[str, ...],
                 audio_column: str | None, text_column: str | None, speaker_column: str | None,
                 id_column: str | None, language_column: str | None, hf_split: str | None, audio_root: str | None,
                 speaker: str | None, hf_cache_dir: str | None, language: str, min_seconds: float,
                 max_seconds: float, max_clipped_fraction: float, silence_dbfs: float, loudness_dbfs: float | None,
                 peak_dbfs: float, numbers_to_words: bool, xvector_from: str, eval_speakers: int,
                 eval_fraction: float, eval_utterances_per_speaker: int, seed: int, samples_per_shard: int,
                 max_shard_bytes: str, workers: int, device: str, codec_precision: str,
                 encode_batch_seconds: float, restart: bool, no_progress: bool) -> None:
    """Encode Swedish speech into training shards in OUT (train/, eval/, index.json, report.md).

    Every clip is decoded, folded to mono, resampled to 24 kHz (the source rate is kept; below 24 kHz it is marked
    band_limited), checked (duration, clipping, near-silence, empty or non-UTF-8 text, duplicate audio), its text
    normalised (NFC, plain quotes and dashes, whitespace), then encoded with the model's codec and speaker encoder.
    Every rejected clip is listed in OUT/rejections.jsonl with its reason. Interrupted? Run the same command
    again: finished shards are kept and the result is byte-identical to an uninterrupted build.

    \b
    The JSONL manifest format of the Qwen3-TTS fine-tune scripts:
      qwen-swe shards build data/shards --model models/Qwen3-TTS-12Hz-0.6B-Base \\
          --manifest corpus/train.jsonl --eval-speakers 4 --workers 8 --device cuda
    \b
    RixVox (save_to_disk folder, or its parquet files; columns audio, text, speaker are the defaults):
      qwen-swe shards build data/rixvox --model MODEL --hf-dataset rixvox_saved \\
          --audio-column audio --text-column text --speaker-column speaker \\
          --eval-fraction 0.01 --numbers-to-words --workers 16 --device rocm
    \b
    Common Voice sv-SE (client_id is a browser, not a reliable speaker id; its mp3s are 48 kHz):
      qwen-swe shards build data/cv --model MODEL --tsv cv-corpus/sv-SE/validated.tsv \\
          --audio-root cv-corpus/sv-SE/clips --text-column sentence --speaker-column client_id
      (from a saved Hugging Face copy: --hf-dataset cv_sv --text-column sentence --speaker-column client_id)
    \b
    A folder of clips with transcripts (speaker = parent folder name), e.g. NST with one voice:
      qwen-swe shards build data/nst --model MODEL --folder nst/ --speaker nst
    """
    from .data.build import BuildConfig, build_shards
    from .data.sources import Columns, SourceSpec

    columns = Columns(audio=audio_column, text=text_column, speaker=speaker_column, id=id_column,
                      language=language_column)
    named = [("manifest", manifest), ("hf_disk", hf_dataset), ("parquet", parquet), ("arrow", arrow),
             ("folder", folder), ("tsv", tsv)]
    from pathlib import Path

    specs = [SourceSpec(kind=kind, path=str(Path(path).resolve()), columns=columns, hf_split=hf_split,
                        speaker=speaker, audio_root=str(Path(audio_root).resolve()) if audio_root else None,
                        cache_dir=hf_cache_dir)
             for kind, paths in named for path in paths]
    config = BuildConfig(
        out=out, model=model_dir, sources=specs, language=language, min_seconds=min_seconds,
        max_seconds=max_seconds, max_clipped_fraction=max_clipped_fraction, silence_dbfs=silence_dbfs,
        loudness_dbfs=loudness_dbfs, peak_dbfs=peak_dbfs, numbers_to_words=numbers_to_words,
        xvector_from=xvector_from, eval_speakers=eval_speakers, eval_fraction=eval_fraction,
        eval_utterances_per_speaker=eval_utterances_per_speaker, seed=seed, samples_per_shard=samples_per_shard,
        max_shard_bytes=_byte_size(max_shard_bytes), encode_batch_seconds=encode_batch_seconds,
        codec_precision=codec_precision, device=device, workers=workers, progress=not no_progress,
    )
    try:
        summary = build_shards(config, restart=restart, say=click.echo)
    except ValueError as error:  # BuildError and source/model errors name the file and the fix
        raise click.ClickException(str(error)) from error
    samples = ", ".join(f"{split} {count} samples in {summary.shards[split]} shard(s)"
                        for split, count in summary.samples.items())
    rejected = ", ".join(f"{reason} {count}" for reason, count in summary.rejected.items()) or "none"
    resumed = f" ({summary.resumed_shards} shard(s) kept from an interrupted run)" if summary.resumed_shards else ""
    click.echo(f"{out}: {samples}{resumed}; rejected: {rejected}")


@shards.command("inspect")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def shards_inspect(folder: str, as_json: bool) -> None:
    """Samples, hours, speakers and languages per split of a shard folder (reads index.json only)."""
    from .data.verify import inspect_shards, render_inspect

    try:
        info = inspect_shards(folder)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(info, indent=2, ensure_ascii=False) if as_json else render_inspect(info))


@shards.command("verify")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def shards_verify(folder: str, as_json: bool, no_progress: bool) -> None:
    """Check every shard: sha256 and size against index.json, entry offsets against the tar headers, and every
    sample decoded and validated. Names each bad shard and key; exit code 1 if anything is wrong."""
    from .data.verify import verify_shards

    try:
        result = verify_shards(folder, progress=not no_progress and not as_json)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for problem in result.problems:
            click.echo(f"BAD {problem}")
        click.echo(f"verify: {result.shards} shard(s), {result.samples} good sample(s): "
                   + ("OK" if result.ok else f"{len(result.problems)} problem(s)"))
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
