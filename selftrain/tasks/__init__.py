"""Built-in and external task sources: seeded arithmetic, ifeval instructions and yes/no questions, and
GSM8K / StrategyQA / IFEval readers. What the split generators' command lines share is here."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def parse_sizes(text: str) -> dict[str, int]:
    """"train=100,test=20" -> {"train": 100, "test": 20}; ValueError naming the bad item."""
    sizes = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--sizes: {item!r} is not <split>=<count>")
        sizes[name.strip()] = int(value)
    return sizes


def check_sizes(sizes: dict, splits: tuple[str, ...]) -> None:
    """ValueError naming the first split that is unknown or whose size is not a non-negative integer."""
    for name, size in sizes.items():
        if name not in splits:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(splits)}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"split {name}: size must be a non-negative integer, got {size!r}")


def write_splits(out_dir: Path, splits: dict[str, list[dict]], sizes: dict[str, int], order: tuple[str, ...],
                 convert: Callable[[dict], dict] = lambda r: r) -> list[Path]:
    """out_dir/<split>.jsonl for each split of `order` asked for in `sizes`, each written whole; the paths."""
    from selftrain.records import write_jsonl_atomic

    out_dir = Path(out_dir)
    paths = []
    for name in order:
        if name in sizes:
            paths.append(out_dir / f"{name}.jsonl")
            write_jsonl_atomic(paths[-1], (convert(r) for r in splits[name]))
    return paths


def split_cli(argv, prog: str, doc: str, default_sizes: str, splits: tuple[str, ...],
              write_task: Callable[..., list[Path]], options: dict[str, dict] | None = None) -> None:
    """`python -m <prog> --out DIR --sizes a=1,b=2 --seed 0`: write the splits, print their paths (exit 2 on
    bad sizes). `options`: the task's own flags, name -> add_argument keywords, passed to write_task by name."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--sizes", default=default_sizes,
                        help="comma-separated <split>=<count>; splits: " + ",".join(splits))
    parser.add_argument("--seed", type=int, default=0)
    for name, keywords in (options or {}).items():
        parser.add_argument(f"--{name}", **keywords)
    args = parser.parse_args(argv)
    try:
        paths = write_task(args.out, parse_sizes(args.sizes), args.seed,
                           **{name: getattr(args, name) for name in options or {}})
    except ValueError as e:
        parser.error(str(e))  # exits with status 2
    for path in paths:
        print(path)
