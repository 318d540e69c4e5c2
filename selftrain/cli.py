"""Shared command-line plumbing for the stage scripts.

Each stage has the seed's flags plus `--config` (YAML/JSON), `--run_dir`
(a run folder managed by Make) and `--set key=value` for any config key.
A bad input prints one line `error: <where>: <what>` and exits with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from selftrain.checks import check_runnable
from selftrain.config import Config, load_config, parse_set_overrides
from selftrain.errors import InputError
from selftrain.logging import log


def base_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON config with seed-000 keys (CLI flags override it)")
    parser.add_argument("--run_dir", help="run folder (results/<run>); outputs go to <run_dir>/iter_NN/")
    parser.add_argument("--iteration", type=int, default=1, help="iteration number (default: 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set temperature=0.5 (repeatable)")
    return parser


def resolve_config(args: argparse.Namespace, flag_map: dict[str, str]) -> Config:
    """Defaults < --config file < --set < the stage's own flags; validated and checked as runnable."""
    overrides = parse_set_overrides(args.set)
    for flag, key in flag_map.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    if args.iteration < 0:
        raise InputError(f"--iteration {args.iteration}: must be >= 0")
    config = load_config(args.config, overrides)
    check_runnable(config, args.config or "config")  # refuse what cannot run here, before any work
    return config


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Entry point wrapper: one-line errors with exit code 2 for bad input."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        log("interrupted; rerun the same command to resume")
        sys.exit(130)
