"""The README.md (Hugging Face model card) of an exported folder: YAML front matter plus what a reader needs to
trust the model: where it came from, what it saw, how it scores, and how to call it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

TAGS = ["text-to-speech", "qwen3-tts", "swedish", "qwen-swe"]


def base_model_id(base_dir: Path, config: dict[str, Any]) -> str:
    """The Hub id of the base model when the folder says it (or is named like a release), else the folder name."""
    notes = config.get("qwen_swe") or {}
    if notes.get("base_model_id"):
        return str(notes["base_model_id"])
    name = base_dir.resolve().name
    return f"Qwen/{name}" if name.startswith("Qwen3-TTS") else name


def dataset_names(shards_dir: Path) -> list[str]:
    """What the shards were built from, as names a reader recognises (source folders or files)."""
    index_path = shards_dir / "index.json"
    if not index_path.is_file():
        return []
    sources = json.loads(index_path.read_text(encoding="utf-8")).get("build", {}).get("sources", [])
    names = []
    for source in sources:
        path = Path(str(source.get("path", "")))
        name = path.parent.name if path.suffix in (".jsonl", ".json", ".tsv") else path.name
        if name and name not in names:
            names.append(name)
    return names


def data_summary(shard_dirs: list[Path], split: str) -> dict[str, Any]:
    """Hours, utterances and speakers of one split over every shard folder a run read (a mixture reads several)."""
    hours, utterances, speakers = 0.0, 0, set()
    found = False
    for shards_dir in shard_dirs:
        index_path = shards_dir / "index.json"
        if not index_path.is_file():
            continue
        found = True
        stats = json.loads(index_path.read_text(encoding="utf-8")).get("stats", {}).get(split, {})
        hours += float(stats.get("hours", 0.0))
        utterances += int(stats.get("samples", 0))
        speakers |= {(str(shards_dir), name) for name in stats.get("speakers", {})}
    return {"hours": round(hours, 3), "utterances": utterances, "speakers": len(speakers)} if found else {}


def latest_eval(source: Any, eval_json: Optional[str | Path]) -> tuple[str, dict[str, Any]]:
    """(where the numbers come from, flat metrics): a `qwen-swe eval` result if given, else the run's held-out eval."""
    if eval_json is not None:
        payload = json.loads(Path(eval_json).read_text(encoding="utf-8"))
        # eval.json keeps its headline numbers under "metrics"; the rest is settings and per-layout detail
        headline = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else payload
        return f"`qwen-swe eval` ({Path(eval_json).name})", _flatten(headline)
    last = source.state.get("last_eval")
    if last:
        return f"held-out teacher-forced eval at step {last.get('step')}", _flatten(last)
    return "", {}


def _flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def render_model_card(folder: Path, source: Any, result: Any, eval_json: Optional[str | Path] = None,
                      license_id: str = "apache-2.0") -> str:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    base_dir = Path(source.config.model.path)
    shard_dirs = [Path(folder) for folder in source.config.data.folders().values()]
    front = {
        "base_model": base_model_id(base_dir, config),
        "language": ["sv"],
        "license": license_id,
        "library_name": "qwen-tts",
        "pipeline_tag": "text-to-speech",
        "tags": TAGS + (["custom-voice"] if result.mode == "custom-voice" else ["voice-cloning"]),
    }
    datasets = list(dict.fromkeys(name for folder in shard_dirs for name in dataset_names(folder)))
    if datasets:
        front["datasets"] = datasets
    train = data_summary(shard_dirs, source.config.data.train_split)
    where, metrics = latest_eval(source, eval_json)
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {result.out.name}: Qwen3-TTS speaking Swedish", "",
             f"Fine-tuned from `{front['base_model']}` with qwen-swe ({source.config.train.mode} fine-tune, "
             f"{result.mode} export, {result.dtype} weights). Swedish is registered as language `swedish` at codec "
             f"row {result.language_row}.", "", "## Use", "", "```python", "from qwen_tts import Qwen3TTSModel", "",
             f'model = Qwen3TTSModel.from_pretrained("{result.out}")']
    if result.mode == "custom-voice":
        speaker = next(iter(result.speakers), "<speaker>")
        lines += [f'wavs, sample_rate = model.generate_custom_voice(text="Hej, hur mår du i dag?", '
                  f'speaker="{speaker}", language="swedish")']
    else:
        lines += ['wavs, sample_rate = model.generate_voice_clone(text="Hej, hur mår du i dag?", language="swedish",',
                  '                                             ref_audio="reference.wav", x_vector_only_mode=True)']
    lines += ["```", "", "## Training", "", "| | |", "|---|---|",
              f"| steps | {result.step} (checkpoint `{result.checkpoint.name}`) |",
              f"| training data | {train.get('hours', '?')} h, {train.get('utterances', '?')} utterances, "
              f"{train.get('speakers', '?')} speakers |",
              f"| precision | {source.manifest.get('precision_strategy')} |",
              f"| world size | {source.manifest.get('world_size')} process(es), {source.manifest.get('distributed_type')} |",
              f"| layouts | {', '.join(source.config.data.layouts)} |",
              f"| objective | sub-talker weight {source.config.objective.sub_talker_weight:g}, sub-talker loss on "
              f"{source.config.objective.sub_talker_frames:g} of the frames per step |",
              f"| optimizer | {source.config.optim.name}, lr {source.config.optim.lr}, "
              f"schedule {source.config.schedule.name} over {source.config.schedule.total_steps} steps |",
              f"| code | qwen-swe {source.manifest.get('versions', {}).get('qwen-swe')} "
              f"(git {str(source.manifest.get('git_revision'))[:12]}) |", ""]
    if result.speakers:
        lines += ["## Speakers", "", "Each speaker row is the fp32 mean of that speaker's x-vectors over the training "
                  "shards.", "", "| speaker | codec row |", "|---|---|"]
        lines += [f"| {name} | {row} |" for name, row in result.speakers.items()] + [""]
    lines += ["## Evaluation", ""]
    if metrics:
        lines += [f"From {where}.", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
                  for name, value in metrics.items()]
    else:
        lines += ["No evaluation recorded yet: run `qwen-swe eval` and export again with `--eval-json`."]
    lines += ["", "## Run configuration", "", "```yaml", source.config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, source: Any, result: Any, eval_json: Optional[str | Path] = None,
                     license_id: str = "apache-2.0") -> Path:
    path = folder / "README.md"
    path.write_text(render_model_card(folder, source, result, eval_json, license_id), encoding="utf-8")
    return path


def read_front_matter(readme: str | Path) -> dict[str, Any]:
    """The YAML front matter of a model card, parsed; raises ValueError if there is none."""
    text = Path(readme).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{readme}: no YAML front matter")
    end = text.find("\n---\n", 4)
    if end < 0:
        raise ValueError(f"{readme}: front matter is not closed")
    return yaml.safe_load(text[4:end])
