"""`qwen-swe shards build/inspect/verify`: training shards from a speech corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..units import SIZE_HELP


@click.group()
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
@click.option("--language", default="swedish", show_default=True,
              help="Language of items that name none. Items naming a language the model lacks (other than swedish, "
                   "which training registers) are rejected as unknown_language.")
@click.option("--min-seconds", type=float, default=1.0, show_default=True)
@click.option("--max-seconds", type=float, default=20.0, show_default=True)
@click.option("--min-letters-per-second", type=float, default=2.0, show_default=True,
              help="Reject a clip whose transcript has fewer letters per second of audio (speaking_rate): a "
                   "transcript missing most of what is said.")
@click.option("--max-letters-per-second", type=float, default=30.0, show_default=True,
              help="Reject a clip whose transcript has more letters per second (speaking_rate): a clip cut short or "
                   "a transcript of a longer recording. Swedish read speech runs at about 10-16.")
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
              help=f"Start a new shard before one would exceed this size, e.g. 256MB or 1.5GB (0: no size cap). "
                   f"{SIZE_HELP}")
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
                 max_seconds: float, min_letters_per_second: float, max_letters_per_second: float,
                 max_clipped_fraction: float, silence_dbfs: float, loudness_dbfs: float | None,
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
    from ..data.build import BuildConfig, build_shards
    from ..data.sources import Columns, SourceSpec
    from ..units import parse_bytes

    try:
        shard_bytes = parse_bytes(max_shard_bytes)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--max-shard-bytes") from error

    columns = Columns(audio=audio_column, text=text_column, speaker=speaker_column, id=id_column,
                      language=language_column)
    named = [("manifest", manifest), ("hf_disk", hf_dataset), ("parquet", parquet), ("arrow", arrow),
             ("folder", folder), ("tsv", tsv)]
    specs = [SourceSpec(kind=kind, path=str(Path(path).resolve()), columns=columns, hf_split=hf_split,
                        speaker=speaker, audio_root=str(Path(audio_root).resolve()) if audio_root else None,
                        cache_dir=hf_cache_dir)
             for kind, paths in named for path in paths]
    config = BuildConfig(
        out=out, model=model_dir, sources=specs, language=language, min_seconds=min_seconds,
        min_letters_per_second=min_letters_per_second, max_letters_per_second=max_letters_per_second,
        max_seconds=max_seconds, max_clipped_fraction=max_clipped_fraction, silence_dbfs=silence_dbfs,
        loudness_dbfs=loudness_dbfs, peak_dbfs=peak_dbfs, numbers_to_words=numbers_to_words,
        xvector_from=xvector_from, eval_speakers=eval_speakers, eval_fraction=eval_fraction,
        eval_utterances_per_speaker=eval_utterances_per_speaker, seed=seed, samples_per_shard=samples_per_shard,
        max_shard_bytes=shard_bytes, encode_batch_seconds=encode_batch_seconds,
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
    from ..data.verify import inspect_shards, render_inspect

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
    from ..data.verify import verify_shards

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


COMMANDS = (shards,)
