#!/usr/bin/env python
"""Thin entry point: the logic lives in selftrain/stages/select.py (run with --help).
(Not select.py: that name would shadow the standard library module `select` for every script here.)"""
from selftrain.cli import run
from selftrain.stages.select import main

if __name__ == "__main__":
    run(main)
