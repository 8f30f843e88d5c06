"""`qwen-swe synth`, `eval`, `compare` and `rollback`: listen to a model, measure it, promote or roll back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..model_shapes import LAYOUTS


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
    from ..quality.synth import SamplingSettings

    return SamplingSettings(
        do_sample=kwargs.pop("do_sample"), top_k=kwargs.pop("top_k"), top_p=kwargs.pop("top_p"),
        temperature=kwargs.pop("temperature"), repetition_penalty=kwargs.pop("repetition_penalty"),
        subtalker_do_sample=kwargs.pop("subtalker_do_sample"), subtalker_top_k=kwargs.pop("subtalker_top_k"),
        subtalker_top_p=kwargs.pop("subtalker_top_p"), subtalker_temperature=kwargs.pop("subtalker_temperature"),
        max_new_tokens=kwargs.pop("max_new_tokens"), seed=kwargs.pop("seed"))


@click.command(context_settings={"max_content_width": 110})
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
    from ..quality.synth import SynthRequest, synthesize_request

    request = SynthRequest(model=model_dir, out=out, texts=texts, sentences=sentences, mode=mode, ref_audio=ref_audio,
                           ref_text=ref_text, speaker=speaker, language=language, streaming=streaming,
                           batch_size=batch_size, silence_dbfs=silence_dbfs, settings=_sampling_settings(sampling))
    try:
        path, results, _ = synthesize_request(request, say=(lambda _m: None) if as_json else click.echo,
                                              progress=not as_json)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
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
                                                             f"{request.settings.max_new_tokens}" if cut else ""))


def _eval_options(command):
    """What `qwen-swe eval` measures and how; `compare` takes the same options for the folders it evaluates."""
    options = [
        click.option("--shards", default=None, type=click.Path(exists=True, file_okay=False),
                     help="Shard folder whose eval split gives the held-out loss and the reference speakers."),
        click.option("--source", "sources", multiple=True, metavar="NAME=SHARDS",
                     help="Also evaluate this corpus on its own (repeatable): its eval split's held-out loss and "
                          "synthesis in its held-out voices, reported as METRIC@NAME (gate on them in compare)."),
        click.option("--split", default="eval", show_default=True, help="Split of --shards (and each --source)."),
        click.option("--layouts", default="streaming", show_default=True,
                     help=f"Comma-separated layouts scored for the held-out loss ({', '.join(LAYOUTS)})."),
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
    from ..quality.evaluation import EvalConfig
    from ..quality.synth import default_mode

    options = dict(options)
    settings = _sampling_settings(options)
    layouts = tuple(name.strip() for name in options.pop("layouts").split(",") if name.strip())
    bad = [name for name in layouts if name not in LAYOUTS]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: choose from {', '.join(LAYOUTS)}", param_hint="--layouts")
    mode = options.pop("mode") or default_mode(model_dir)
    sources = tuple(_source(item) for item in options.pop("sources"))
    return EvalConfig(model=model_dir, out=out, layouts=layouts, mode=mode, sampling=settings, progress=progress,
                      custom_speakers=tuple(options.pop("custom_speakers")), sources=sources, **options)


def _source(item: str) -> tuple[str, str]:
    """--source english=data/en -> ("english", "data/en"), the folder checked."""
    import re

    from ..train.config.schema import SOURCE_NAME

    name, _, folder = item.partition("=")
    if not re.fullmatch(SOURCE_NAME, name) or not folder:
        raise click.BadParameter(f"{item!r}: write NAME=SHARDS, NAME of letters, digits, - and _",
                                 param_hint="--source")
    if not (Path(folder) / "index.json").is_file():
        raise click.BadParameter(f"{folder}: no index.json (a shard folder from `qwen-swe shards build`)",
                                 param_hint="--source")
    return name, folder


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        click.echo(f"  {key:<22} {'-' if value is None else (f'{value:.4f}' if isinstance(value, float) else value)}")


@click.command("eval", context_settings={"max_content_width": 110})
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
    qwen-swe eval exports/pilot-base --out evals/mix --source rixvox=data/rixvox --source english=data/en-replay
    Then: qwen-swe compare evals/current evals/pilot --registry models/registry
    """
    from ..quality.evaluation import EVAL_JSON, run_evaluation

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


@click.command(context_settings={"max_content_width": 110})
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--gates", default=None, help="Comma-separated metrics B must not be worse on (default: "
              "heldout_loss,cer,speaker_similarity,eos_runaway_rate, those measured), METRIC@SOURCE for one "
              "--source corpus. Named gates must be measured.")
@click.option("--tolerance", "tolerances", multiple=True,
              help="METRIC=VALUE: how much worse B may be and still pass (repeatable), absolute (cer=0.02) or a "
                   "share of A's value (heldout_loss@english=2%).")
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
    qwen-swe compare base/ exports/v2 --source english=data/en-replay --out evals/forgetting \
        --gates heldout_loss@english,speaker_similarity@english --tolerance heldout_loss@english=2%
    qwen-swe rollback models/registry        # undo the last promotion
    """
    from ..quality.compare import compare_models, parse_gates, parse_tolerances
    from ..quality.report import render_comparison_markdown

    try:
        comparison, target = compare_models(
            a, b, out=out, gates=parse_gates(gates), tolerances=parse_tolerances(tolerances),
            allow_mismatch=allow_mismatch, registry=registry,
            eval_config=lambda model_dir, folder: _eval_config(model_dir, folder, options, progress=not as_json),
            say=(lambda _m: None) if as_json else click.echo)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(comparison, indent=2, ensure_ascii=False))
    else:
        click.echo(render_comparison_markdown(comparison))
        click.echo(f"wrote {target / 'comparison.md'}" + (f"; registry {registry} updated" if registry else ""))
    sys.exit(0 if comparison["verdict"] == "promote" else 1)


@click.command()
@click.argument("registry", type=click.Path(exists=True, file_okay=False))
def rollback(registry: str) -> None:
    """Make the registry's previous model current again (REGISTRY/current then points at it).

    The rolled-back model becomes previous, so running rollback twice restores the promotion.
    """
    from ..quality.registry import rollback as roll_back

    try:
        state = roll_back(registry)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"current: {state['current']['model']}\nprevious: {state['previous']['model']}")


COMMANDS = (synth, eval_cmd, compare, rollback)
