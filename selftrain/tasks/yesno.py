"""Seeded yes/no task whose answer needs one implicit step, like StrategyQA's questions.

    python -m selftrain.tasks.yesno --out DIR --sizes train=1000,dev=100,test=200 --seed 0 --level mixed

writes DIR/<split>.jsonl in StrategyQA's own schema (qid, question, answer as a
boolean, facts, decomposition), which selftrain.tasks.strategyqa reads back;
the same seed gives byte-identical files. In memory (`generate_splits`) each
record is a seed-000 prompt record:

    {"id": "yesno-train-000001", "prompt": "Is 17 * 4 more than 60?",
     "metadata": {"expected_answer": "yes", "category": "product",
                  "facts": ["17 * 4 = 68", "68 is more than 60."],
                  "decomposition": ["What is 17 * 4?", "Is 68 more than 60?"]}}

A level (`LEVELS`, config `task.level`) names the shapes asked:

- `mixed`, the harder one: twelve shapes, products up to 19 x 12, division with
  remainder, units whose comparison word flips direction, and "at least / at
  most" with exact ties. The compared number is drawn near the computed value
  (within about a fifth of it, sometimes equal), so the question cannot be
  answered without the step. Products stay near or below 200. About 14,000
  distinct questions exist (the smallest shape, parity, has some 600 per answer).
- `sums`, the one a small student learns: "Is 47 + 38 more than 84?", "Is the
  difference between 83 and 47 less than 45?". Every number, the result too,
  has two digits; comparisons are strict ("more/greater than", "less/smaller
  than"), so there is no tie and no word flips direction. The compared number
  is the result +-1, or +-9 in `FAR` of the questions, so that neither the tens
  digits nor the units digits alone decide: the best rule that sees only one
  part (the tens digits, the operands or the result rounded to tens, the
  result's exact tens digit, the units digits) answers 71-74% right; the
  words and the compared number alone about 60%, its last digit about 53%.
  About 33,600 distinct questions exist per shape and answer.

Records come in pairs of one shape (the level's, in turn): one "yes" and one
"no" in a seeded order, so every split, and every even-sized prefix of it, is
exactly 50/50 (an odd size has one answer once more). Asking for more
questions than a shape has is a ValueError.

Splits (`SPLITS`, drawn in that order, each from its own seeded stream) never
share a question text, and the size of a later split never changes an earlier
one: resizing train never moves a test question.
"""
from __future__ import annotations

import operator
import random
import re
from pathlib import Path
from typing import Callable, NamedTuple

from selftrain.config import YESNO_LEVELS
from selftrain.tasks import check_sizes, split_cli, write_splits

SPLITS = ("test", "dev", "train")
MAX_TRIES = 20_000  # draws in a row that only repeat earlier questions before the space counts as exhausted
MAX_PRODUCT = 200


class Comparison(NamedTuple):
    word: str  # as the question says it
    plain: str  # as the decomposition says it
    holds: Callable[[int, int], bool]


MORE, LESS = Comparison("more than", "more than", operator.gt), Comparison("less than", "less than", operator.lt)
AT_LEAST, AT_MOST = Comparison("at least", "at least", operator.ge), Comparison("at most", "at most", operator.le)
NUMBER_COMPARISONS = (MORE, LESS, AT_LEAST, AT_MOST, Comparison("greater than", "more than", operator.gt),
                      Comparison("smaller than", "less than", operator.lt))
COUNT_COMPARISONS = (MORE, AT_LEAST, AT_MOST, Comparison("fewer than", "less than", operator.lt))
# the `sums` level's: strict, so no tie is ever asked, and each word keeps its direction
STRICT_COMPARISONS = tuple(c for c in NUMBER_COMPARISONS if c.holds in (operator.gt, operator.lt))
FAR = 2 / 7  # sums: share of compared numbers 9 away from the result (the others are 1 away); 2/7 evens out
# what the tens digits alone and the units digits alone tell (the best rule on either: about 71% right)

CONTAINERS = (("boxes", "eggs", 6, 12), ("packs", "pencils", 5, 12), ("bags", "apples", 4, 10),
              ("crates", "bottles", 6, 24), ("jars", "cookies", 8, 20), ("trays", "muffins", 6, 12),
              ("cartons", "juice boxes", 4, 10), ("baskets", "oranges", 5, 15))
GOODS = ("notebooks", "movie tickets", "sandwiches", "toy cars", "plants", "comic books", "scarves", "puzzles")
VEHICLES = (("cars", 4, 5), ("vans", 7, 9), ("minibuses", 12, 16), ("boats", 6, 10), ("taxis", 4, 4))
MOVERS = (("someone walking", 3, 6), ("a cyclist riding", 12, 20), ("a runner going", 8, 12),
          ("a boat sailing", 10, 20), ("a horse trotting", 10, 15))
# (smaller unit, larger unit, how many of the smaller make one larger, most of the larger, comparison words)
UNITS = (("days", "weeks", 7, 20, ("longer than", "shorter than")),
         ("minutes", "hours", 60, 3, ("longer than", "shorter than")),
         ("seconds", "minutes", 60, 3, ("longer than", "shorter than")),
         ("months", "years", 12, 15, ("longer than", "shorter than")),
         ("inches", "feet", 12, 15, ("longer than", "shorter than")),
         ("eggs", "dozen eggs", 12, 15, ("more than", "fewer than")))
THINGS = ("stickers", "marbles", "cookies", "cards", "grapes", "pencils", "coins", "balloons")
GROUPS = ("children", "friends", "players", "students", "teams", "tables")


def _near(rng: random.Random, value: int, yes: bool, holds: Callable[[int], bool]) -> int:
    """A positive number within about a fifth of `value` (often a round one) for which holds() is `yes`."""
    spread = max(3, value // 5)
    while True:
        n = value + rng.randint(-spread, spread)
        if rng.random() < 0.4:
            n = 5 * round(n / 5)
        if n >= 1 and holds(n) == yes:
            return n


def _factors(rng: random.Random, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """a in range a, b in range b, a * b at most MAX_PRODUCT (b's range shrinks for a large a)."""
    x = rng.randint(*a)
    return x, rng.randint(b[0], max(b[0], min(b[1], MAX_PRODUCT // x)))


def _compare(rng, yes, value, comparisons, question, step, fact):
    """The common shape: compute `value`, compare it with a number near it."""
    cmp = rng.choice(comparisons)
    n = _near(rng, value, yes, lambda n: cmp.holds(value, n))
    return question(cmp.word, n), [fact], [step, f"Is {value} {cmp.plain} {n}?"]


def product(rng, yes):
    a, b = _factors(rng, (3, 19), (2, 12))
    form = rng.choice(("{} * {}", "{} times {}"))
    return _compare(rng, yes, a * b, NUMBER_COMPARISONS, lambda w, n: f"Is {form.format(a, b)} {w} {n}?",
                    f"What is {a} * {b}?", f"{a} * {b} = {a * b}")


def total(rng, yes):
    a, b = rng.randint(12, 99), rng.randint(12, 99)
    form = rng.choice(("{} + {}", "the sum of {} and {}"))
    return _compare(rng, yes, a + b, NUMBER_COMPARISONS, lambda w, n: f"Is {form.format(a, b)} {w} {n}?",
                    f"What is {a} + {b}?", f"{a} + {b} = {a + b}")


def difference(rng, yes):
    a = rng.randint(30, 99)
    b = rng.randint(10, a - 8)
    return _compare(rng, yes, a - b, NUMBER_COMPARISONS,
                    lambda w, n: f"Is the difference between {a} and {b} {w} {n}?",
                    f"What is {a} - {b}?", f"{a} - {b} = {a - b}")


def containers(rng, yes):
    box, item, lo, hi = rng.choice(CONTAINERS)
    n, k = _factors(rng, (2, 9), (lo, hi))
    return _compare(rng, yes, n * k, COUNT_COMPARISONS,
                    lambda w, t: f"Do {n} {box} of {k} {item} hold {w} {t} {item}?",
                    f"How many {item} are in {n} {box} of {k} {item}?", f"{n} * {k} = {n * k}")


def budget(rng, yes):
    goods = rng.choice(GOODS)
    n, price = _factors(rng, (2, 9), (3, 25))
    cost = n * price
    money = _near(rng, cost, yes, lambda m: cost <= m)
    question = rng.choice((f"Can you buy {n} {goods} at ${price} each with ${money}?",
                           f"Is ${money} enough to buy {n} {goods} that cost ${price} each?"))
    return (question, [f"{n} * {price} = {cost}"],
            [f"How much do {n} {goods} at ${price} each cost?", f"Is ${cost} at most ${money}?"])


def seats(rng, yes):
    vehicles, lo, hi = rng.choice(VEHICLES)
    n, k = _factors(rng, (2, 9), (lo, hi))
    people = _near(rng, n * k, yes, lambda p: n * k >= p)
    return (f"Can {n} {vehicles} with {k} seats each carry {people} people?", [f"{n} * {k} = {n * k}"],
            [f"How many seats do {n} {vehicles} with {k} seats each have?", f"Is {n * k} at least {people}?"])


def reading(rng, yes):
    days = rng.choice((3, 4, 5, 6, 7, 7, 7))
    rate = rng.randint(8, MAX_PRODUCT // days if days < 7 else 30)
    pages = _near(rng, rate * days, yes, lambda p: rate * days >= p)
    period = "a week" if days == 7 else f"{days} days"
    article = "an" if str(pages)[0] == "8" or pages in (11, 18) else "a"
    return (f"Is {article} {pages}-page book read at {rate} pages a day finished within {period}?",
            [f"{rate} * {days} = {rate * days}"],
            [f"How many pages are read in {period} at {rate} pages a day?", f"Is {rate * days} at least {pages}?"])


def travel(rng, yes):
    mover, lo, hi = rng.choice(MOVERS)
    speed, hours = _factors(rng, (lo, hi), (2, 8))
    km = _near(rng, speed * hours, yes, lambda d: speed * hours >= d)
    return (f"Can {mover} {speed} km an hour cover {km} km in {hours} hours?", [f"{speed} * {hours} = {speed * hours}"],
            [f"How far does {mover} {speed} km an hour get in {hours} hours?", f"Is {speed * hours} at least {km}?"])


def units(rng, yes):
    small, large, factor, most, words = rng.choice(UNITS)
    n = rng.randint(2, most)
    value = n * factor
    word, plain, holds = rng.choice(((words[0], "more than", operator.gt), (words[1], "less than", operator.lt)))
    count = _near(rng, value, yes, lambda c: holds(c, value))
    return (f"Are {count} {small} {word} {n} {large}?", [f"{n} * {factor} = {value}"],
            [f"How many {small} are in {n} {large}?", f"Is {count} {plain} {value}?"])


def _division(rng, yes) -> tuple[int, int, list[str]]:
    """A number, a divisor, and the fact: a multiple of the divisor when `yes`, else not."""
    d = rng.randint(3, 12)
    k = rng.randint(3, MAX_PRODUCT // d)
    r = 0 if yes else rng.randint(1, d - 1)
    n = d * k + r
    return n, d, [f"{n} / {d} = {k}" + (f" remainder {r}" if r else "")]


def divisible(rng, yes):
    n, d, facts = _division(rng, yes)
    question = rng.choice((f"Is {n} divisible by {d}?", f"Is {n} a multiple of {d}?", f"Does {d} divide {n} evenly?"))
    return question, facts, [f"What is the remainder of {n} divided by {d}?", "Is the remainder 0?"]


def sharing(rng, yes):
    n, d, facts = _division(rng, yes)
    things, groups = rng.choice(THINGS), rng.choice(GROUPS)
    return (f"Can {n} {things} be shared equally among {d} {groups} with none left over?", facts,
            [f"What is the remainder of {n} divided by {d}?", "Is the remainder 0?"])


def parity(rng, yes):
    word = rng.choice(("even", "odd"))
    while True:
        a, b = _factors(rng, (3, 25), (3, 12))
        if ((a * b) % 2 == 0) == ((word == "even") == yes):
            break
    question = rng.choice((f"Is the product of {a} and {b} an {word} number?", f"Is {a} * {b} an {word} number?",
                           f"Is {a} times {b} {word}?"))
    return question, [f"{a} * {b} = {a * b}"], [f"What is {a} * {b}?", f"Is {a * b} {word}?"]


def _two_digit(rng, yes, tens: Callable[[random.Random], tuple[int, int]], sign: str, forms: tuple[str, ...]):
    """The `sums` shapes: the result of `a sign b` compared, strictly, with a number 1 away from it or, in FAR of
    the questions, 9 away. The tens digits are drawn first and the units digits freely, so neither part decides:
    from the tens digits and the compared number, 1 above and 1 below look alike; from the units digits, 9 below
    and 1 above (or 9 above and 1 below) end in the same digit."""
    ta, tb = tens(rng)
    a, b = 10 * ta + rng.randint(0, 9), 10 * tb + rng.randint(0, 9)
    value = a + b if sign == "+" else a - b
    cmp = rng.choice(STRICT_COMPARISONS)
    margin = 9 if rng.random() < FAR else 1
    below = yes if cmp.holds is operator.gt else not yes  # a number below the result makes "more than" true
    n = value - margin if below else value + margin
    return (f"Is {rng.choice(forms).format(a, b)} {cmp.word} {n}?", [f"{a} {sign} {b} = {value}"],
            [f"What is {a} {sign} {b}?", f"Is {value} {cmp.plain} {n}?"])


def _sum_tens(rng: random.Random) -> tuple[int, int]:
    """Tens digits of two addends: their sum uniform in 2..7 (sums 20..88, compared numbers 11..97, all two-digit;
    a uniform tens sum keeps the result's spread flat, so the compared number's size alone hints little)."""
    tens = rng.randint(2, 7)
    ta = rng.randint(1, tens - 1)
    return ta, tens - ta


def _difference_tens(rng: random.Random) -> tuple[int, int]:
    """Tens digits of two numbers: their difference uniform in 3..8 (differences 21..89, compared numbers 12..98)."""
    tens = rng.randint(3, 8)
    tb = rng.randint(1, 9 - tens)
    return tens + tb, tb


def two_digit_sum(rng, yes):
    return _two_digit(rng, yes, _sum_tens, "+", ("{} + {}", "the sum of {} and {}"))


def two_digit_difference(rng, yes):
    return _two_digit(rng, yes, _difference_tens, "-", ("{} - {}", "the difference between {} and {}"))


SHAPES: dict[str, Callable] = {f.__name__: f for f in (product, total, difference, containers, budget, seats,
                                                       reading, travel, units, divisible, sharing, parity,
                                                       two_digit_sum, two_digit_difference)}
LEVELS: dict[str, tuple[str, ...]] = dict(zip(YESNO_LEVELS, (  # the shapes of each level, asked in turn
    ("product", "total", "difference", "containers", "budget", "seats", "reading", "travel", "units",  # mixed
     "divisible", "sharing", "parity"),
    ("two_digit_sum", "two_digit_difference"),  # sums
)))
DEFAULT_LEVEL = YESNO_LEVELS[0]  # mixed: the task as it was before levels; configs/distill*.yaml choose their own


_LAST_STEP = re.compile(r"Is (the remainder|\$?\d+) (.+)\?")


def answered(step: str, yes: bool) -> str:
    """The decomposition's last question stated as a fact: "Is 147 at least 148?", no -> "147 is not at
    least 148." (StrategyQA's facts likewise state what the answer follows from)."""
    m = _LAST_STEP.fullmatch(step)
    if not m:
        raise ValueError(f"cannot state {step!r} as a fact")
    subject = m.group(1)[0].upper() + m.group(1)[1:]
    return f"{subject} is {'' if yes else 'not '}{m.group(2)}."


def make_question(rng: random.Random, shape: str, yes: bool) -> dict:
    """One record (without id) of `shape` whose answer is `yes`; its facts: the step's arithmetic, then
    the decomposition's last question answered."""
    question, facts, decomposition = SHAPES[shape](rng, yes)
    return {"prompt": question,
            "metadata": {"expected_answer": "yes" if yes else "no", "category": shape,
                         "facts": facts + [answered(decomposition[-1], yes)], "decomposition": decomposition}}


def generate_splits(sizes: dict[str, int], seed: int, level: str = DEFAULT_LEVEL) -> dict[str, list[dict]]:
    """Records per split (every name of `SPLITS`, empty when not asked for) of one of `LEVELS`; no question in
    two splits."""
    check_sizes(sizes, SPLITS)
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    names = list(LEVELS[level])
    seen: set[str] = set()
    splits = {}
    for name in SPLITS:
        rng = random.Random(f"selftrain-yesno:{seed}:{name}")  # a stream per split: sizes do not leak
        records, first_yes = [], True
        for i in range(sizes.get(name, 0)):
            if i % 2 == 0:
                first_yes = rng.random() < 0.5  # which answer opens the pair
            shape = names[(i // 2) % len(names)]
            yes = first_yes if i % 2 == 0 else not first_yes
            records.append({"id": f"yesno-{name}-{i + 1:06d}", **_fresh(rng, shape, yes, seen, name)})
        splits[name] = records
    return splits


def _fresh(rng: random.Random, shape: str, yes: bool, seen: set[str], split: str) -> dict:
    for _ in range(MAX_TRIES):
        record = make_question(rng, shape, yes)
        if record["prompt"] not in seen:
            seen.add(record["prompt"])
            return record
    raise ValueError(f"split {split}: no new {shape} question in {MAX_TRIES} draws: the space of distinct "
                     f"questions is exhausted ({len(seen)} drawn so far); ask for fewer")


def to_strategyqa(record: dict) -> dict:
    """A generated record in StrategyQA's own schema (what the CLI writes)."""
    meta = record["metadata"]
    return {"qid": record["id"], "question": record["prompt"], "answer": meta["expected_answer"] == "yes",
            "facts": meta["facts"], "decomposition": meta["decomposition"]}


def write_task(out_dir: Path, sizes: dict[str, int], seed: int, level: str = DEFAULT_LEVEL) -> list[Path]:
    """Write out_dir/<split>.jsonl (StrategyQA schema) for each split in `sizes`, atomically; return the paths."""
    return write_splits(out_dir, generate_splits(sizes, seed, level), sizes, SPLITS, to_strategyqa)


def main(argv=None) -> None:
    split_cli(argv, "python -m selftrain.tasks.yesno", __doc__, "train=1000,dev=100,test=200", SPLITS, write_task,
              options={"level": {"choices": tuple(LEVELS), "default": DEFAULT_LEVEL,
                                "help": "question shapes: " + ", ".join(LEVELS)}})


if __name__ == "__main__":
    main()
