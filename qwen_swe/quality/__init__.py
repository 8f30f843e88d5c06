"""Synthesis and evaluation: WER/CER metric modules, speaker similarity, held-out loss, reports, promotion.

Named `quality` rather than `evaluate` so that it never shadows the `evaluate` package it uses.
"""
