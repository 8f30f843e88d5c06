"""What a study leaves for people: best.yaml, report.md and PNG plots, all from the study's storage.

- `best.yaml`: the best trial's complete run config (the base config with its parameter values) with its own run
  folder (`STUDY/best-run`); `qwen-swe train --config best.yaml` takes it as is and repeats the best trial, and
  overrides make it the long run (`run.max_steps=... schedule.total_steps=... run.output_dir=...`).
- `report.md`: the study's setup, the best trial, parameter importances (fANOVA over the complete trials,
  `optuna.importance`) and a table of every trial: number, state, objective value, parameters, steps, why it
  stopped, its run folder.
- `plots/`: optimization history, parallel coordinates, parameter importances and the intermediate values the
  pruner saw (optuna.visualization.matplotlib); a plot the study cannot draw yet (too few trials) is named in the
  report with the reason.
For a live view, `optuna-dashboard sqlite:///STUDY/study.db` (a separate package, not needed here) reads the same file.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from ..files import write_text_atomic
from ..train.config import QUALITY_METRICS, RunConfig
from .space import SearchSpace
from .study import STUDY_DB

BEST_CONFIG = "best.yaml"
REPORT = "report.md"
PLOTS_DIR = "plots"
BEST_RUN_DIR = "best-run"
PLOTS = {"optimization_history": "plot_optimization_history", "parallel_coordinate": "plot_parallel_coordinate",
         "param_importances": "plot_param_importances", "intermediate_values": "plot_intermediate_values"}


def best_trial(study: Any) -> Optional[Any]:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return None
    return study.best_trial


def write_best_config(study: Any, study_dir: Path, base: RunConfig, space: SearchSpace) -> Optional[Path]:
    trial = best_trial(study)
    if trial is None:
        return None
    config = space.trial_config(base, trial.params, (Path(study_dir) / BEST_RUN_DIR).resolve())
    objective = study.user_attrs.get("objective", "heldout_loss")
    header = [f"# The best trial of the study in {Path(study_dir).resolve()}: trial {trial.number}, "
              f"{objective} {trial.value:.6g} ({QUALITY_METRICS[objective]} is better).",
              "# " + ", ".join(f"{name}={value}" for name, value in trial.params.items()),
              "# Train it as is (repeats the trial):  qwen-swe train --config best.yaml",
              "# The long run:  qwen-swe train --config best.yaml run.max_steps=N schedule.total_steps=N "
              "run.output_dir=runs/long"]
    path = Path(study_dir) / BEST_CONFIG
    write_text_atomic(path, "\n".join(header) + "\n" + config.to_yaml())
    return path


def importances(study: Any) -> tuple[dict[str, float], Optional[str]]:
    """Parameter importances (fANOVA, seeded), or why there are none yet."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}, f"needs 2 complete trials, the study has {len(complete)}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study, evaluator=_seeded_evaluator())), None
    except (ValueError, RuntimeError) as error:
        return {}, str(error)


def write_plots(study: Any, folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """PNG plots; returns (name -> file, name -> why not drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    drawn, skipped = {}, {}
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
                kwargs = {"evaluator": _seeded_evaluator()} if name == "param_importances" else {}
                axes = getattr(plots, function)(study, **kwargs)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(10, 6)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=100)
            plt.close(figure)
            drawn[name] = folder / f"{name}.png"
        except Exception as error:  # a plot the study cannot draw yet must not lose the report
            skipped[name] = f"{type(error).__name__}: {error}"
            plt.close("all")
    return drawn, skipped


def _seeded_evaluator() -> Any:
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _value(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def trials_table(study: Any, names: list[str]) -> list[str]:
    header = ["trial", "state", "value", *names, "steps", "stopped", "run folder"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        row = [str(trial.number), trial.state.name.lower(), _value(trial.value),
               *[_value(trial.params.get(name)) for name in names], _value(attrs.get("steps")),
               (attrs.get("stop_reason") or "").replace("|", "/"), f"`{attrs.get('run_dir', '')}`"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_report(study: Any, study_dir: Path, base: RunConfig, space: SearchSpace,
                 say: Callable[[str], None] = print) -> dict[str, Path]:
    """best.yaml, report.md and plots/ in the study folder; returns their paths."""
    study_dir = Path(study_dir)
    best_path = write_best_config(study, study_dir, base, space)
    drawn, skipped = write_plots(study, study_dir / PLOTS_DIR)
    found, missing = importances(study)
    objective = study.user_attrs.get("objective", "heldout_loss")
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    best = best_trial(study)
    search = study.user_attrs.get("search") or {}
    scale = (f" The held-out loss is compared at the base config's sub-talker weight "
             f"({base.objective.sub_talker_weight:g}), whatever weight a trial trains with."
             if objective == "heldout_loss" else "")
    counted = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    lines = [f"# Study {study_dir.resolve()}", "",
             f"Written {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}. Objective: "
             f"**{objective}** ({QUALITY_METRICS[objective]} is better), TPE seed {search.get('seed')}, "
             f"pruner {search.get('pruner')}; {len(trials)} trials: {counted}.{scale}", "",
             "## Best trial", ""]
    if best is None:
        lines.append("No complete trial yet.")
    else:
        lines += [f"Trial {best.number}: {objective} **{best.value:.6g}** after {best.user_attrs.get('steps')} steps "
                  f"(`{best.user_attrs.get('run_dir')}`).", "",
                  *[f"- `{name}`: {_value(value)}" for name, value in best.params.items()], "",
                  f"Its complete run config: `{best_path}` (`qwen-swe train --config {best_path}`)."]
    lines += ["", "## Search space", "", *[f"- `{p.name}`: {p.describe()}" for p in space.params], "",
              "## Parameter importances", ""]
    if found:
        lines += ["| parameter | importance |", "|---|---|",
                  *[f"| `{name}` | {value:.3f} |" for name, value in found.items()]]
    else:
        lines.append(f"Not computed: {missing}.")
    lines += ["", "## Trials", "", *trials_table(study, [p.name for p in space.params]), "", "## Plots", ""]
    lines += [f"![{name}]({PLOTS_DIR}/{path.name})" for name, path in drawn.items()]
    lines += [f"- {name}: not drawn ({why})" for name, why in skipped.items()]
    lines += ["", f"Live view: `optuna-dashboard sqlite:///{(study_dir / STUDY_DB).resolve()}` "
                  "(pip install optuna-dashboard).", ""]
    report = study_dir / REPORT
    write_text_atomic(report, "\n".join(lines))
    paths = {"report": report, **({"best": best_path} if best_path else {})}
    say(f"report {report}" + (f"; best run config {best_path}" if best_path else "; no complete trial yet"))
    return paths
