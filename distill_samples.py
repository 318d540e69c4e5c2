#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/on_policy.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.on_policy import main

if __name__ == "__main__":
    run(main)
