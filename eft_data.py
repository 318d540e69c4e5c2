#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/seed_data.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.seed_data import main_eft

if __name__ == "__main__":
    run(main_eft)
