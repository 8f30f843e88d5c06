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


@main.command("export")
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
    from .export import export

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


# ------------------------------------------------------------------------------------------------ synth / eval


def _sampling_options(command):
    """Sampling knobs shared by synth, eval and compare: every one is passed to generate() explicitly."""
    options = [
        click.option("--do-sample/--greedy", default=True, show_default=True,
                     help="Sample codebook 0 (the released default) or take the most likely code."),
        click.option("--top-k", type=int, default=50, show_default=True),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--temperature", type=float, default=0.9, show_default=True),
        click.option("--repetition-penalty", type=float, default=1.05, show_default=True),
        click.option("--subtalker-do-sample/--subtalker-greedy", default=True, show_default=True,
                     help="The same for codebooks 1-15 (the sub-talker)."),
        click.option("--subtalker-top-k", type=int, default=50, show_default=True),
        click.option("--subtalker-top-p", type=float, default=1.0, show_default=True),
        click.option("--subtalker-temperature", type=float, default=0.9, show_default=True),
        click.option("--max-new-tokens", type=int, default=1024, show_default=True,
                     help="Max-length guard in frames (12.5 per second). A generation that reaches it is reported "
                          "as cut (no EOS): the base model misses EOS now and then."),
        click.option("--seed", type=int, default=0, show_default=True, help="torch seed per batch: seed + batch."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _sampling_settings(kwargs: dict):
    from .quality.synth import SamplingSettings

    return SamplingSettings(
        do_sample=kwargs.pop("do_sample"), top_k=kwargs.pop("top_k"), top_p=kwargs.pop("top_p"),
        temperature=kwargs.pop("temperature"), repetition_penalty=kwargs.pop("repetition_penalty"),
        subtalker_do_sample=kwargs.pop("subtalker_do_sample"), subtalker_top_k=kwargs.pop("subtalker_top_k"),
        subtalker_top_p=kwargs.pop("subtalker_top_p"), subtalker_temperature=kwargs.pop("subtalker_temperature"),
        max_new_tokens=kwargs.pop("max_new_tokens"), seed=kwargs.pop("seed"))


def _model_kind(model_dir: str) -> str:
    from pathlib import Path

    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("tts_model_type", "base") if config.is_file() else "base"


@main.command(context_settings={"max_content_width": 110})
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the WAVs and synth.json.")
@click.option("--text", "texts", multiple=True, help="A sentence to say (repeatable). Default: the built-in set.")
@click.option("--sentences", default=None, help="A UTF-8 file with one sentence per line, or 'v1' (the built-in "
              "Swedish evaluation set).")
@click.option("--mode", type=click.Choice(["xvector", "icl", "custom"]), default=None,
              help="xvector: clone from the reference's speaker embedding; icl: also continue from the reference "
                   "clip and its transcript; custom: a named speaker of a custom_voice model. Default: custom for "
                   "custom_voice models or --speaker without --ref-audio, xvector otherwise.")
@click.option("--ref-audio", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reference clip of the voice to clone (wav/flac, any rate).")
@click.option("--ref-text", default=None, help="Transcript of --ref-audio (needed for icl).")
@click.option("--speaker", default=None, help="custom mode: the speaker name (see the error for the list).")
@click.option("--language", default="swedish", show_default=True)
@click.option("--streaming/--non-streaming", default=None,
              help="Text fed alongside the first frames (voice-clone default) or all text first (custom default).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Sentences generated together.")
@click.option("--silence-dbfs", type=float, default=-40.0, show_default=True,
              help="20 ms windows quieter than this count as silence in the stats.")
@_sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print synth.json instead of a table.")
def synth(model_dir: str, out: str, texts: tuple[str, ...], sentences: str | None, mode: str | None,
          ref_audio: str | None, ref_text: str | None, speaker: str | None, language: str, streaming: bool | None,
          batch_size: int, silence_dbfs: float, as_json: bool, **sampling) -> None:
    """Synthesise Swedish sentences with an exported model folder (what `qwen-swe export` writes), or a training
    run / checkpoint, which is exported to OUT/model first.

    Writes OUT/<index>_<voice>.wav and OUT/synth.json: the settings and, per file, duration, RMS and peak level,
    silence share, frames and whether generation reached EOS or was cut by --max-new-tokens.

    \b
    qwen-swe synth exports/pilot-base --out out/clone --ref-audio anna.wav --text "Hej, hur mår du?"
    qwen-swe synth exports/pilot-base --out out/icl --mode icl --ref-audio anna.wav --ref-text "Det här är Anna."
    qwen-swe synth exports/pilot-voices --out out/alva --speaker alva --sentences my_sentences.txt
    """
    from pathlib import Path

    from .quality.sentences import load_sentences
    from .quality.synth import (Voice, export_if_checkpoint, load_reference_audio, open_model, synthesize,
                                 write_syntheses)

    settings = _sampling_settings(sampling)
    named = speaker is not None and ref_audio is None
    mode = mode or ("custom" if named or _model_kind(model_dir) == "custom_voice" else "xvector")
    try:
        model_dir = str(export_if_checkpoint(model_dir, Path(out) / "model", custom_voice=mode == "custom",
                                             say=(lambda _m: None) if as_json else click.echo))
        lines = list(texts) or load_sentences(sentences)
        reference = load_reference_audio(ref_audio) if ref_audio else None
        voice = Voice(mode=mode, label=speaker or (Path(ref_audio).stem if ref_audio else mode),
                      ref_audio=reference, ref_text=ref_text, speaker=speaker)
        wrapper = open_model(model_dir, languages=(language,))
        results = synthesize(wrapper, lines, voice, settings, language=language, streaming=streaming,
                             batch_size=batch_size, silence_dbfs=silence_dbfs, progress=not as_json)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    path = write_syntheses(out, results, settings, extra={"model": str(Path(model_dir).resolve()), "mode": mode,
                                                          "language": language})
    if as_json:
        click.echo(path.read_text(encoding="utf-8"))
        return
    click.echo(f"{'file':<24} {'seconds':>7} {'frames':>6} {'EOS':>7} {'RMS dBFS':>8} {'peak':>6} {'silence':>7}  text")
    for r in results:
        record = r.record()
        click.echo(f"{r.index:03d}_{r.voice[:19]:<20} {record['seconds']:7.2f} {r.frames:6d} "
                   f"{'reached' if r.eos_reached else 'CUT':>7} {record['rms_dbfs']:8.1f} {record['peak']:6.3f} "
                   f"{record['silence_rate']:7.2f}  {r.text}")
    cut = sum(not r.eos_reached for r in results)
    click.echo(f"wrote {len(results)} file(s) to {out}" + (f"; {cut} cut at --max-new-tokens "
                                                             f"{settings.max_new_tokens}" if cut else ""))


def _eval_options(command):
    """What `qwen-swe eval` measures and how; `compare` takes the same options for the folders it evaluates."""
    options = [
        click.option("--shards", default=None, type=click.Path(exists=True, file_okay=False),
                     help="Shard folder whose eval split gives the held-out loss and the reference speakers."),
        click.option("--split", default="eval", show_default=True, help="Split of --shards to use."),
        click.option("--layouts", default="streaming", show_default=True,
                     help="Comma-separated layouts scored for the held-out loss (non_streaming, streaming, icl, "
                          "icl_non_streaming)."),
        click.option("--frame-budget", type=int, default=2048, show_default=True),
        click.option("--max-batches", type=int, default=0, show_default=True, help="0: the whole split."),
        click.option("--sentences", default=None, help="Sentence file (one per line) or 'v1' (built-in, default)."),
        click.option("--max-sentences", type=int, default=0, show_default=True, help="0: all."),
        click.option("--speakers", type=int, default=4, show_default=True,
                     help="Held-out speakers used as voices and references (0: all)."),
        click.option("--mode", type=click.Choice(["xvector", "icl", "custom"]), default=None,
                     help="How to voice the sentences (default: custom for custom_voice models, else xvector)."),
        click.option("--speaker", "custom_speakers", multiple=True,
                     help="custom mode: a speaker to evaluate (repeatable; default: all)."),
        click.option("--streaming/--non-streaming", default=None),
        click.option("--asr", default=None, type=click.Path(exists=True, file_okay=False),
                     help="A local speech-recognition model folder (e.g. a Swedish Whisper) for WER and CER."),
        click.option("--speaker-model", default=None, type=click.Path(exists=True, file_okay=False),
                     help="Speaker embeddings from this folder (AudioXVector model or a Qwen3-TTS Base) instead "
                          "of the evaluated model's own speaker encoder; custom mode needs it for speaker "
                          "similarity (a custom-voice model has none)."),
        click.option("--silence-dbfs", type=float, default=-40.0, show_default=True),
        click.option("--batch-size", type=int, default=4, show_default=True),
        click.option("--language", default="swedish", show_default=True),
        click.option("--heldout/--no-heldout", default=True, show_default=True, help="Teacher-forced loss."),
        click.option("--synthesis/--no-synthesis", default=True, show_default=True, help="Synthesis metrics."),
        click.option("--audio-samples", type=int, default=4, show_default=True, help="Syntheses logged to "
                     "TensorBoard."),
        click.option("--step", type=int, default=0, show_default=True, help="TensorBoard step of the scalars."),
    ]
    command = _sampling_options(command)  # listed after the evaluation options in --help
    for option in reversed(options):
        command = option(command)
    return command


def _eval_config(model_dir: str, out: str, options: dict, progress: bool):
    from .quality.evaluation import EvalConfig

    options = dict(options)
    settings = _sampling_settings(options)
    layouts = tuple(name.strip() for name in options.pop("layouts").split(",") if name.strip())
    bad = [name for name in layouts if name not in LAYOUT_NAMES]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: choose from {', '.join(LAYOUT_NAMES)}", param_hint="--layouts")
    mode = options.pop("mode") or ("custom" if _model_kind(model_dir) == "custom_voice" else "xvector")
    return EvalConfig(model=model_dir, out=out, layouts=layouts, mode=mode, sampling=settings, progress=progress,
                      custom_speakers=tuple(options.pop("custom_speakers")), **options)


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        click.echo(f"  {key:<22} {'-' if value is None else (f'{value:.4f}' if isinstance(value, float) else value)}")


@main.command("eval", context_settings={"max_content_width": 110})
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for eval.json, eval.md, tb/, audio/ and references/.")
@_eval_options
@click.option("--json", "as_json", is_flag=True, help="Print eval.json.")
def eval_cmd(model_dir: str, out: str, as_json: bool, **options) -> None:
    """Evaluate an exported model folder (or a run / checkpoint, exported to OUT/model first): held-out loss and
    Swedish synthesis metrics.

    \b
    Held-out loss: teacher-forced on the eval split of --shards with the trainer's own reader, layout and
      objective (loss, codebook-0 / EOS / sub-talker accuracy, per layout).
    Synthesis: the built-in Swedish sentences (or --sentences) voiced by held-out speakers of --shards (their
      x-vector, or their clip for icl; custom_voice models use their named speakers), then
      WER/CER (with --asr), speaker similarity to the reference, duration ratio against the reference speaker's
      pace, silence rate and EOS-runaway rate (cut at --max-new-tokens).
    \b
    qwen-swe eval exports/pilot-base --out evals/pilot --shards data/shards --asr models/kb-whisper-small
    qwen-swe eval exports/pilot-base --out evals/quick --shards data/shards --max-sentences 4 --speakers 1 --no-heldout
    Then: qwen-swe compare evals/current evals/pilot --registry models/registry
    """
    from .quality.evaluation import EVAL_JSON, run_evaluation

    try:
        config = _eval_config(model_dir, out, options, progress=not as_json)
        report = run_evaluation(config, say=(lambda _m: None) if as_json else click.echo)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(f"evaluation of {model_dir}:")
    _print_metrics(report["metrics"])
    click.echo(f"wrote {out}/{EVAL_JSON}, {out}/eval.md, {out}/tb (tensorboard --logdir {out}/tb)")


@main.command(context_settings={"max_content_width": 110})
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--gates", default=None, help="Comma-separated metrics B must not be worse on (default: "
              "heldout_loss,cer,speaker_similarity,eos_runaway_rate, those measured). Named gates must be measured.")
@click.option("--tolerance", "tolerances", multiple=True,
              help="METRIC=VALUE: how much worse B may be and still pass (repeatable), e.g. cer=0.02.")
@click.option("--allow-mismatch", is_flag=True,
              help="Promote even if A and B were evaluated with different sentences, references or settings.")
@click.option("--registry", default=None, type=click.Path(file_okay=False),
              help="Registry folder: A becomes current on first use; on promote B becomes current and A previous "
                   "(roll back with `qwen-swe rollback REGISTRY`).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Where to write comparison.json and comparison.md (default: next to B's eval.json); model "
                   "folders given as A or B are evaluated into OUT/a and OUT/b.")
@_eval_options
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(a: str, b: str, gates: str | None, tolerances: tuple[str, ...], allow_mismatch: bool,
            registry: str | None, out: str | None, as_json: bool, **options) -> None:
    """Compare two models on the same metrics and decide whether B may replace A.

    A and B are eval.json files, `qwen-swe eval` output folders, or model folders (evaluated here with the
    options below, identically for both). B is promoted only if it is no worse than A on every gate within
    its tolerance; otherwise A is kept. Exit code 0 on promote, 1 on keep.

    \b
    qwen-swe compare evals/current evals/candidate --registry models/registry
    qwen-swe compare exports/v1 exports/v2 --shards data/shards --asr models/kb-whisper-small --out evals/v1-vs-v2
    qwen-swe rollback models/registry        # undo the last promotion
    """
    from pathlib import Path

    from .quality.compare import compare_reports, load_eval, parse_gates, parse_tolerances
    from .quality.evaluation import EVAL_JSON, run_evaluation
    from .quality.report import render_comparison_markdown

    def report_for(path: str, name: str):
        folder = Path(path)
        if folder.is_dir() and not (folder / EVAL_JSON).exists() and (folder / "config.json").exists():
            if not out:
                raise ValueError(f"{path} is a model folder: give --out so compare can evaluate it into {{out}}/{name}")
            config = _eval_config(path, str(Path(out) / name), options, progress=not as_json)
            run_evaluation(config, say=(lambda _m: None) if as_json else click.echo)
            folder = Path(out) / name
        return load_eval(folder)

    try:
        report_a, file_a = report_for(a, "a")
        report_b, file_b = report_for(b, "b")
        comparison = compare_reports(report_a, report_b, gates=parse_gates(gates),
                                     tolerances=parse_tolerances(tolerances), allow_mismatch=allow_mismatch,
                                     a_path=str(file_a), b_path=str(file_b))
        if registry:
            from .quality.registry import entry, record_comparison

            record_comparison(registry, entry(report_a["model"], str(file_a), report_a["metrics"]),
                              entry(report_b["model"], str(file_b), report_b["metrics"]), comparison["verdict"])
            comparison["registry"] = str(Path(registry).resolve())
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    target = Path(out) if out else file_b.parent
    target.mkdir(parents=True, exist_ok=True)
    (target / "comparison.json").write_text(json.dumps(comparison, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    (target / "comparison.md").write_text(render_comparison_markdown(comparison), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(comparison, indent=2, ensure_ascii=False))
    else:
        click.echo(render_comparison_markdown(comparison))
        click.echo(f"wrote {target / 'comparison.md'}" + (f"; registry {registry} updated" if registry else ""))
    sys.exit(0 if comparison["verdict"] == "promote" else 1)


@main.command()
@click.argument("registry", type=click.Path(exists=True, file_okay=False))
def rollback(registry: str) -> None:
    """Make the registry's previous model current again (REGISTRY/current then points at it).

    The rolled-back model becomes previous, so running rollback twice restores the promotion.
    """
    from .quality.registry import rollback as roll_back

    try:
        state = roll_back(registry)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"current: {state['current']['model']}\nprevious: {state['previous']['model']}")


@main.command("plan", context_settings={"max_content_width": 110})
@click.option("--model", "model", default="1.7b", show_default=True,
              help="A preset (0.6b, 1.7b: the released Base shapes) or a model folder (its config.json is read).")
@click.option("--host", "host_name", default="r9700-32gb", show_default=True,
              help="r9700-32gb (Hemma: 32 GB card, 64 GB RAM), h100-80gb (80 GB cards, 1 TB RAM per host), or "
                   "cpu (training in this machine's RAM: no device context). --gpu-memory overrides the card size.")
@click.option("--gpu-memory", default=None, help="Memory of one device, e.g. 24GB (overrides the --host card).")
@click.option("--host-ram", default=None, help="RAM of one host, e.g. 128GB (overrides the --host default).")
@click.option("--gpus", "gpus", type=int, default=1, show_default=True, help="GPUs per host.")
@click.option("--hosts", type=int, default=1, show_default=True, help="Hosts (ZeRO partitions over all GPUs).")
@click.option("--zero", type=click.Choice(["0", "2", "3"]), default="0", show_default=True,
              help="DeepSpeed ZeRO stage; 0 = plain accelerate (DDP with several GPUs).")
@click.option("--offload", type=click.Choice(["none", "optimizer", "optimizer+params"]), default="none",
              show_default=True, help="What DeepSpeed moves to host RAM (ds_configs/*_offload.json).")
@click.option("--precision", type=click.Choice(["fp32", "bf16-mixed", "bf16-pure"]), default="bf16-mixed",
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
@click.option("--headroom", type=float, default=0.10, show_default=True,
              help="Share of device and host memory to leave free for a setup to count as fitting.")
@click.option("--no-recommend", is_flag=True, help="Only estimate the given settings.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (bytes in GB, every component).")
def plan_cmd(model: str, host_name: str, gpu_memory: str | None, host_ram: str | None, gpus: int, hosts: int,
             zero: str, offload: str, precision: str, optimizer: str, mode: str, lora_rank: int,
             gradient_checkpointing: bool, freeze_text_embedding: bool, frame_budget: int, headroom: float,
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
    from .plan import HOSTS, Host, cpu_host, estimate, parse_bytes, plan_dict, recommend, render, resolve_shape
    from .plan import Settings

    try:
        shape = resolve_shape(model)
        if host_name == "cpu":
            import os

            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            host = cpu_host(parse_bytes(gpu_memory or host_ram) if (gpu_memory or host_ram) else ram)
        elif host_name in HOSTS:
            base = HOSTS[host_name]
            host = Host(base.name if not gpu_memory else f"{base.name} ({gpu_memory} cards)",
                        gpu_memory=parse_bytes(gpu_memory) if gpu_memory else base.gpu_memory,
                        host_ram=parse_bytes(host_ram) if host_ram else base.host_ram)
        else:
            raise ValueError(f"--host: unknown host {host_name!r}; use r9700-32gb, h100-80gb or cpu "
                             "(and --gpu-memory/--host-ram for other machines)")
        settings = Settings(gpus_per_host=gpus, hosts=hosts, zero=int(zero), offload=offload, precision=precision,
                            optimizer=optimizer, mode=mode, lora_rank=lora_rank,
                            gradient_checkpointing=gradient_checkpointing,
                            freeze_text_embedding=freeze_text_embedding, frame_budget=frame_budget)
        result = estimate(shape, settings, host, headroom)
        advice = None if no_recommend else recommend(shape, settings, host, headroom)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(plan_dict(result, advice), indent=2) if as_json else render(result, advice))


if __name__ == "__main__":
    main()
