"""`python -m qwen_swe` (and `accelerate launch -m qwen_swe ...`) runs the command line."""

from .cli import main

main()
