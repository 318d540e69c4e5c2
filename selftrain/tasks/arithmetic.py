"""Seeded arithmetic task generator (easy / medium / hard / expert word problems).

    python -m selftrain.tasks.arithmetic --out DIR --n_train 1000 --n_test 200 \
        --difficulties easy,medium --seed 0

writes DIR/train.jsonl and DIR/test.jsonl; the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import random
from collections import Counter
from pathlib import Path

from selftrain.records import DIFFICULTIES  # the levels of the seed-000 record format

# Exact number of distinct prompts per level where it is small enough to matter.
CAPACITY = {"easy": 90 * 90}
MAX_TRIES = 200_000  # draws per record before giving up on finding a fresh prompt

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expr: str) -> int:
    """Evaluate an integer expression made of + - * and parentheses."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unsupported expression: {expr}")

    return walk(ast.parse(expr, mode="eval").body)


def _expression(rng: random.Random, shapes: list[str], lo: int, hi: int) -> tuple[str, int]:
    """Fill a shape like '({} {} {}) {} {}' with numbers and operators; non-negative result."""
    while True:
        shape = rng.choice(shapes)
        slots = shape.count("{}")
        parts = [rng.randint(lo, hi) if i % 2 == 0 else rng.choice("+-*") for i in range(slots)]
        expr = shape.format(*parts)
        if "*" in expr and (value := _evaluate(expr)) >= 0:
            return expr, value


_MEDIUM_SHAPES = ["{} {} {} {} {}"]
_HARD_SHAPES = [
    "({} {} {}) {} {}",
    "{} {} ({} {} {})",
    "({} {} {}) {} {} {} {}",
    "{} {} {} {} ({} {} {})",
    "({} {} {}) {} ({} {} {})",
]

_PEOPLE = [("Tom", "he"), ("Mia", "she"), ("Ravi", "he"), ("Lena", "she"), ("Sam", "he"), ("Aiko", "she")]
_ITEMS = ["apples", "marbles", "stickers", "cookies", "pencils", "cards"]


def _word_problem(rng: random.Random) -> tuple[str, int]:
    """One templated multi-step word problem with an integer answer."""
    name, he = rng.choice(_PEOPLE)
    item = rng.choice(_ITEMS)
    r = rng.randint
    kind = rng.randrange(6)
    if kind == 0:
        a, b, c = r(5, 40), r(2, 9), r(2, 12)
        d = r(1, a + b * c)
        text = (f"{name} has {a} {item}. {he.capitalize()} buys {b} bags with {c} {item} each "
                f"and gives away {d}. How many {item} does {he} have now?")
        return text, a + b * c - d
    if kind == 1:
        a, b = r(2, 12), r(3, 15)
        c = r(1, a * b)
        text = (f"A shop packs {a} boxes with {b} {item} in each box. It sells {c} {item}. "
                f"How many {item} are left?")
        return text, a * b - c
    if kind == 2:
        a, b, c = r(5, 30), r(2, 14), r(3, 50)
        text = (f"{name} reads {a} pages a day for {b} days, then reads {c} more pages on the weekend. "
                f"How many pages has {he} read in total?")
        return text, a * b + c
    if kind == 3:
        a, b = r(3, 20), r(2, 12)
        c = r(1, a - 1)
        text = (f"A box holds {a} {item}. {name} fills {b} boxes and has {c} {item} left over. "
                f"How many {item} did {he} start with?")
        return text, a * b + c
    if kind == 4:
        a, b = r(8, 30), r(2, 10)
        c = r(1, a * b)
        text = (f"{name} earns ${a} per hour and works {b} hours. {he.capitalize()} spends ${c} on food. "
                f"How many dollars does {he} have left?")
        return text, a * b - c
    n, k = r(2, 9), r(3, 15)
    d = r(0, k)
    text = (f"{n * k} {item} are shared equally among {n} friends. Each friend then gives away {d}. "
            f"How many {item} does each friend have left?")
    return text, k - d


def make_problem(rng: random.Random, difficulty: str) -> dict:
    """One record (without id) at the given difficulty."""
    if difficulty == "easy":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        prompt, answer = f"What is {a} + {b}?", a + b
    elif difficulty == "medium":
        expr, answer = _expression(rng, _MEDIUM_SHAPES, 2, 20)
        prompt = f"Calculate: {expr}"
    elif difficulty == "hard":
        expr, answer = _expression(rng, _HARD_SHAPES, 2, 20)
        prompt = f"Evaluate: {expr}"
    elif difficulty == "expert":
        prompt, answer = _word_problem(rng)
    else:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
    category = "word_problem" if difficulty == "expert" else "arithmetic"
    return {
        "prompt": prompt,
        "difficulty": difficulty,
        "metadata": {"expected_answer": str(answer), "category": category},
    }


def generate_split(n_train: int, n_test: int, difficulties: list[str], seed: int) -> tuple[list[dict], list[dict]]:
    """Train and test records: round-robin difficulties, no duplicate prompt within or across splits."""
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be non-negative")
    if not difficulties:
        raise ValueError("difficulties must not be empty")
    for d in difficulties:
        if d not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {d!r}; expected one of {', '.join(DIFFICULTIES)}")
    wanted = Counter(difficulties[i % len(difficulties)] for i in range(n_train))
    wanted += Counter(difficulties[i % len(difficulties)] for i in range(n_test))
    for d, count in wanted.items():
        if count > CAPACITY.get(d, count):
            raise ValueError(f"requested {count} distinct {d} problems (train + test) "
                             f"but only {CAPACITY[d]} exist")

    rng = random.Random(seed)
    seen: set[str] = set()

    def split(name: str, n: int) -> list[dict]:
        records = []
        for i in range(n):
            difficulty = difficulties[i % len(difficulties)]
            for _ in range(MAX_TRIES):
                record = make_problem(rng, difficulty)
                if record["prompt"] not in seen:
                    break
            else:
                raise ValueError(f"could not find a new {difficulty} problem after {MAX_TRIES} tries: "
                                 f"the space of {difficulty} problems is too small for this request")
            seen.add(record["prompt"])
            records.append({"id": f"arith-{name}-{i:06d}", **record})
        return records

    train = split("train", n_train)
    return train, split("test", n_test)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_task(out_dir: Path, n_train: int, n_test: int, difficulties: list[str], seed: int) -> tuple[Path, Path]:
    """Write out_dir/train.jsonl and out_dir/test.jsonl atomically; return their paths."""
    train, test = generate_split(n_train, n_test, difficulties, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.jsonl", out_dir / "test.jsonl"
    _write_jsonl(paths[0], train)
    _write_jsonl(paths[1], test)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selftrain.tasks.arithmetic",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--n_train", type=int, default=1000)
    parser.add_argument("--n_test", type=int, default=200)
    parser.add_argument("--difficulties", default=",".join(DIFFICULTIES),
                        help="comma-separated subset of " + ",".join(DIFFICULTIES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    difficulties = [d.strip() for d in args.difficulties.split(",") if d.strip()]
    try:
        paths = write_task(args.out, args.n_train, args.n_test, difficulties, args.seed)
    except ValueError as e:
        parser.error(str(e))  # exits with status 2
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
