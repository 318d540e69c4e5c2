#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/self_instruct.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.self_instruct import main

if __name__ == "__main__":
    run(main)
