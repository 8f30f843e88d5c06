"""A model registry folder: which model is served now, which one it replaced, and the history.

    REGISTRY/registry.json   {"current": entry, "previous": entry or null, "history": [event, ...]}
    REGISTRY/current         symlink to the current model folder (point serving code here)
    REGISTRY/previous        symlink to the model it replaced (what a rollback restores)

An entry records the model folder, its eval.json and headline metrics. `qwen-swe compare A B --registry REGISTRY`
writes A as current on first use, and on a "promote" verdict moves current to previous and B to current.
`qwen-swe rollback REGISTRY` swaps them back in one step. Model folders are never copied or deleted: the registry
only points at them, so keep the folders it names.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Optional

from ..train.checkpoint import write_json_atomic

REGISTRY_JSON = "registry.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def entry(model: str, eval_path: str = "", metrics: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    return {"model": str(Path(model).resolve()), "eval": str(eval_path), "metrics": metrics or {}, "since": _now()}


def read_registry(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / REGISTRY_JSON
    if not path.is_file():
        return {"current": None, "previous": None, "history": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); fix it or move it away") from error


def _point(link: Path, target: Optional[str]) -> None:
    """Replace a symlink atomically (a reader never sees it missing)."""
    if target is None:
        if link.is_symlink():
            link.unlink()
        return
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)


def write_registry(folder: str | Path, registry: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / REGISTRY_JSON, registry)
    for name in ("current", "previous"):
        _point(folder / name, (registry.get(name) or {}).get("model"))


def record_comparison(folder: str | Path, current: dict[str, Any], candidate: dict[str, Any],
                      verdict: str) -> dict[str, Any]:
    """Register the outcome of comparing `current` (A) with `candidate` (B); returns the new registry."""
    registry = read_registry(folder)
    if registry["current"] is None:
        registry["current"] = current
        registry["history"].append({"event": "init", "model": current["model"], "at": _now()})
    elif registry["current"]["model"] != current["model"]:
        raise ValueError(f"{Path(folder) / REGISTRY_JSON}: the current model is {registry['current']['model']}, "
                         f"not A ({current['model']}); compare the candidate against the current model")
    if verdict == "promote":
        registry["previous"], registry["current"] = registry["current"], candidate
    registry["history"].append({"event": verdict, "model": candidate["model"], "at": _now()})
    write_registry(folder, registry)
    return registry


def rollback(folder: str | Path) -> dict[str, Any]:
    """Make the previous model current again (and the rolled-back one previous, so a rollback can be undone)."""
    registry = read_registry(folder)
    if not registry.get("previous"):
        raise ValueError(f"{Path(folder) / REGISTRY_JSON}: no previous model to roll back to")
    registry["current"], registry["previous"] = registry["previous"], registry["current"]
    registry["history"].append({"event": "rollback", "model": registry["current"]["model"], "at": _now()})
    write_registry(folder, registry)
    return registry
