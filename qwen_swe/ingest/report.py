"""What an ingest kept and why the rest was not: report.json (numbers) and report.md (a short text).

Minutes are accounted on the recording's own timeline:
- kept: the clips in the manifest (their audio, pauses at the edges included);
- speech in rejected clips, by reason (too_short, no_pause_to_cut, alignment_cost, speaking_rate, vad_disagreement);
- unmatched speech: speech the VAD and level detector heard that no clip or rejection covers: words the transcript
  does not hold (a preface, an announcement), or the audio of sentences the aligner did not find;
- not speech: pauses, music and silence between clips.
Sentences of the transcript that match no audio are counted apart (`text_not_in_audio`): they have no minutes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .pipeline import IngestSettings


def build_report(records: list[dict[str, Any]], settings: IngestSettings) -> dict[str, Any]:
    recordings = []
    totals: Counter = Counter()
    reasons: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0, "seconds": 0.0})
    for record in records:
        stats = dict(record["stats"])
        stats["clips"] = len(record["clips"])
        stats["id"] = record["recording"]["id"]
        recordings.append(stats)
        for key in ("duration_seconds", "speech_seconds", "kept_seconds", "kept_speech_seconds",
                    "rejected_speech_seconds", "unmatched_speech_seconds", "sentences", "sentences_not_in_audio",
                    "words", "clips"):
            totals[key] += stats[key]
        for rejection in record["rejections"]:
            entry = reasons[rejection["reason"]]
            entry["count"] += 1
            entry["seconds"] += rejection["seconds"] or 0.0
    minutes = {
        "total": totals["duration_seconds"] / 60, "speech": totals["speech_seconds"] / 60,
        "kept": totals["kept_seconds"] / 60, "kept_speech": totals["kept_speech_seconds"] / 60,
        "rejected_speech": totals["rejected_speech_seconds"] / 60,
        "unmatched_speech": totals["unmatched_speech_seconds"] / 60,
    }
    return {
        "recordings": recordings,
        "clips": totals["clips"],
        "minutes": {name: round(value, 3) for name, value in minutes.items()},
        "kept_share_of_speech": round(totals["kept_speech_seconds"] / totals["speech_seconds"], 4)
        if totals["speech_seconds"] else 0.0,
        "sentences": totals["sentences"],
        "sentences_not_in_audio": totals["sentences_not_in_audio"],
        "rejections": {reason: {"count": entry["count"], "minutes": round(entry["seconds"] / 60, 3)}
                       for reason, entry in sorted(reasons.items())},
        "settings": settings.describe(),
    }


def render_report(report: dict[str, Any]) -> str:
    minutes = report["minutes"]
    lines = ["# Ingest report", "",
             f"{report['clips']} clips, {minutes['kept']:.1f} min kept of {minutes['total']:.1f} min recorded "
             f"({minutes['speech']:.1f} min of it speech; {100 * report['kept_share_of_speech']:.0f}% of the speech "
             "is in the manifest).", "",
             "Where the rest of the speech went:", "",
             f"- {minutes['rejected_speech']:.2f} min in rejected clips (by reason below)",
             f"- {minutes['unmatched_speech']:.2f} min matched no transcript text (prefaces, announcements, "
             "sentences the aligner did not find)",
             f"- {report['sentences_not_in_audio']} of {report['sentences']} transcript sentences were not found in "
             "the audio (text_not_in_audio)", ""]
    if report["rejections"]:
        lines += ["| reason | count | minutes |", "|---|---:|---:|"]
        lines += [f"| {reason} | {entry['count']} | {entry['minutes']:.2f} |"
                  for reason, entry in report["rejections"].items()]
        lines += ["", "Every rejection is listed with its recording, time span, text and reason in "
                  "`rejections.jsonl`.", ""]
    lines += ["## Recordings", "", "| recording | minutes | speech | kept | clips | sentences not found |",
              "|---|---:|---:|---:|---:|---:|"]
    for entry in report["recordings"]:
        lines.append(f"| {entry['id']} | {entry['duration_seconds'] / 60:.1f} | {entry['speech_seconds'] / 60:.1f} "
                     f"| {entry['kept_seconds'] / 60:.1f} | {entry['clips']} | {entry['sentences_not_in_audio']} |")
    return "\n".join(lines) + "\n"
