#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/question_quality.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.question_quality import main

if __name__ == "__main__":
    run(main)
