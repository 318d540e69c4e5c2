#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/drafts.py (run with --help)."""
from selftrain.cli import run
from selftrain.stages.drafts import main

if __name__ == "__main__":
    run(main)
