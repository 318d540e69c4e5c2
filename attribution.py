#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/attribution.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.attribution import main

if __name__ == "__main__":
    run(main)
