"""Hyper-parameter search over short training runs: the search space file (space.py), the Optuna study and its
trials through the Trainer, one process or several per trial (study.py), and what a study leaves behind: best.yaml,
report.md, plots (report.py). `qwen-swe tune` (cli/tune.py) drives it."""
