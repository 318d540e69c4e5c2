#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/distill_data.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.distill_data import main

if __name__ == "__main__":
    run(main)
