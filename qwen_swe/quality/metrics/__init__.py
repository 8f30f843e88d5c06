"""`evaluate` metric modules that ship with qwen-swe, so WER and CER never need the Hugging Face Hub.

Each sub-folder is a complete `evaluate` module (`<name>/<name>.py`); load them with
`qwen_swe.quality.text_metrics.load_metric("wer")`, which calls `evaluate.load(<folder>)`.
The `__init__.py` files only make setuptools ship the modules inside the package.
"""
