#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/train_dpo.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.train_dpo import main

if __name__ == "__main__":
    run(main)
