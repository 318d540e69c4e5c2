#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/teacher.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.teacher import main

if __name__ == "__main__":
    run(main)
