#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/llm_judge.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.llm_judge import main

if __name__ == "__main__":
    run(main)
