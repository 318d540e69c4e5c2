"""The built-in yes/no task: exact balance, disjoint splits, determinism, correct facts, the CLI's files."""
import json
import operator
import re
from collections import Counter

import pytest

from selftrain.config import Config, TaskConfig
from selftrain.data import load_task_split
from selftrain.errors import InputError
from selftrain.records import validate_prompt_record
from selftrain.tasks import yesno
from selftrain.tasks.strategyqa import load_strategyqa
from selftrain.tasks.yesno import SHAPES, SPLITS, generate_splits, main

SIZES = {"train": 600, "dev": 100, "test": 200}
OPS = {"more than": operator.gt, "greater than": operator.gt, "longer than": operator.gt,
       "less than": operator.lt, "smaller than": operator.lt, "fewer than": operator.lt, "shorter than": operator.lt,
       "at least": operator.ge, "at most": operator.le}
REL = "|".join(OPS)
N = r"(\d+)"


def cmp(value, words, n):
    return OPS[words](value, n)


# Independent recomputation of each shape's answer from its question text alone.
QUESTIONS = {
    "product": (rf"Is {N} (?:\*|times) {N} ({REL}) {N}\?", lambda a, b, w, n: cmp(a * b, w, n)),
    "total": (rf"Is (?:the sum of )?{N} (?:\+|and) {N} ({REL}) {N}\?", lambda a, b, w, n: cmp(a + b, w, n)),
    "difference": (rf"Is the difference between {N} and {N} ({REL}) {N}\?", lambda a, b, w, n: cmp(a - b, w, n)),
    "containers": (rf"Do {N} \w+ of {N} [\w ]+ hold ({REL}) {N} [\w ]+\?", lambda a, b, w, n: cmp(a * b, w, n)),
    "budget": (r"Can you buy (\d+) [\w ]+ at \$(\d+) each with \$(\d+)\?|"
               r"Is \$(\d+) enough to buy (\d+) [\w ]+ that cost \$(\d+) each\?",
               lambda *g: int(g[0]) * int(g[1]) <= int(g[2]) if g[0] else int(g[4]) * int(g[5]) <= int(g[3])),
    "seats": (rf"Can {N} \w+ with {N} seats each carry {N} people\?", lambda a, b, p: a * b >= p),
    "reading": (rf"Is an? {N}-page book read at {N} pages a day finished within (a week|\d+ days)\?",
                lambda p, r, period: r * (7 if period == "a week" else int(period.split()[0])) >= int(p)),
    "travel": (rf"Can [\w ]+ {N} km an hour cover {N} km in {N} hours\?", lambda s, km, h: s * h >= km),
    "units": (rf"Are {N} \w+ ({REL}) {N} ([\w ]+)\?",
              lambda c, w, n, unit: cmp(c, w, n * {"weeks": 7, "hours": 60, "minutes": 60, "years": 12,
                                                   "feet": 12, "dozen eggs": 12}[unit])),
    "divisible": (rf"Is {N} divisible by {N}\?|Is {N} a multiple of {N}\?|Does {N} divide {N} evenly\?",
                  lambda *g: (int(g[0]) % int(g[1]) if g[0] else int(g[2]) % int(g[3]) if g[2]
                              else int(g[5]) % int(g[4])) == 0),
    "sharing": (rf"Can {N} \w+ be shared equally among {N} \w+ with none left over\?", lambda n, d: n % d == 0),
    "parity": (rf"Is (?:the product of )?{N} (?:and|\*|times) {N} (?:an )?(even|odd)(?: number)?\?",
               lambda a, b, w: (a * b % 2 == 0) == (w == "even")),
}


def recompute(record) -> str:
    pattern, formula = QUESTIONS[record["metadata"]["category"]]
    m = re.fullmatch(pattern, record["prompt"])
    assert m, record["prompt"]
    groups = [int(g) if g and g.isdigit() else g for g in m.groups()]
    if record["metadata"]["category"] in ("budget", "divisible"):
        groups = list(m.groups())
    return "yes" if formula(*groups) else "no"


FACT = re.compile(r"(\d+) ([*+/-]) (\d+) = (\d+)(?: remainder (\d+))?")


def check_fact(fact: str) -> int:
    """The fact's arithmetic holds; returns its result."""
    m = FACT.fullmatch(fact)
    assert m, fact
    a, op, b, result, remainder = m.groups()
    a, b, result = int(a), int(b), int(result)
    if op == "/":
        assert (result, int(remainder or 0)) == divmod(a, b), fact
        assert remainder is None or int(remainder) > 0, fact
    else:
        assert {"*": operator.mul, "+": operator.add, "-": operator.sub}[op](a, b) == result, fact
    return result


def test_records_are_correct_and_well_formed():
    splits = generate_splits(SIZES, seed=3)
    for name, records in splits.items():
        for i, record in enumerate(records, 1):
            meta = record["metadata"]
            assert record["id"] == f"yesno-{name}-{i:06d}"
            assert set(record) == {"id", "prompt", "metadata"}
            assert set(meta) == {"expected_answer", "category", "facts", "decomposition"}
            assert validate_prompt_record(record, "x", i) == record
            assert meta["expected_answer"] == recompute(record), record
            assert len(meta["facts"]) == 2 and len(meta["decomposition"]) == 2
            value = check_fact(meta["facts"][0])
            step = meta["decomposition"][1][len("Is "):-1]  # the last step answered: "147 is not at least 148."
            subject, _, rest = step.partition(" ")
            subject = "the remainder" if step.startswith("the remainder") else subject
            rest = step[len(subject) + 1:]
            said = f"{subject[0].upper() + subject[1:]} is {'' if meta['expected_answer'] == 'yes' else 'not '}{rest}."
            assert meta["facts"][1] == said, record
            assert str(value) in meta["decomposition"][1] or meta["decomposition"][1] == "Is the remainder 0?"
            assert meta["decomposition"][1].endswith("?")
    assert splits["train"][0]["metadata"]["category"] == "product"


def test_every_shape_and_both_answers_in_a_split():
    records = generate_splits({"train": 2 * len(SHAPES) * 5}, seed=0)["train"]
    counts = Counter((r["metadata"]["category"], r["metadata"]["expected_answer"]) for r in records)
    assert counts == {(shape, answer): 5 for shape in SHAPES for answer in ("yes", "no")}
    assert 8 <= len(SHAPES) <= 12


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_exactly_balanced_per_split_and_per_even_prefix(seed):
    splits = generate_splits({"train": 500, "dev": 40, "test": 126}, seed)
    for records in splits.values():
        answers = [r["metadata"]["expected_answer"] for r in records]
        for end in range(2, len(answers) + 1, 2):
            assert answers[end - 2:end].count("yes") == 1  # each pair: one yes, one no
        assert Counter(answers) == {"yes": len(answers) // 2, "no": len(answers) // 2}
    # the pair's order is drawn, so the position does not give the answer away
    firsts = [r["metadata"]["expected_answer"] for r in splits["train"][::2]]
    assert 0.35 < firsts.count("yes") / len(firsts) < 0.65


def test_odd_size_differs_by_one():
    answers = Counter(r["metadata"]["expected_answer"] for r in generate_splits({"test": 13}, 0)["test"])
    assert sorted(answers.values()) == [6, 7]


def test_splits_disjoint_and_unique():
    splits = generate_splits({"train": 3000, "dev": 300, "test": 600}, seed=0)
    texts = [r["prompt"] for records in splits.values() for r in records]
    assert len(texts) == len(set(texts)) == 3900


def test_deterministic_and_seed_dependent():
    assert generate_splits(SIZES, 5) == generate_splits(SIZES, 5)
    assert generate_splits(SIZES, 5)["test"] != generate_splits(SIZES, 6)["test"]


def test_sizing_a_split_never_moves_an_earlier_one():
    base = generate_splits({"test": 50, "dev": 20, "train": 100}, 0)
    assert generate_splits({"test": 50, "dev": 20, "train": 400}, 0)["test"] == base["test"]
    assert generate_splits({"test": 50, "dev": 60, "train": 100}, 0)["test"] == base["test"]
    assert generate_splits({"test": 50, "train": 10}, 0)["test"] == base["test"]
    # a longer split starts with the shorter one
    assert generate_splits({"test": 80}, 0)["test"][:50] == base["test"]
    assert generate_splits({"test": 50, "dev": 20, "train": 300}, 0)["train"][:100] == base["train"]


@pytest.mark.parametrize("sizes, message", [({"pool": 3}, "unknown split 'pool'"),
                                            ({"train": -1}, "size must be a non-negative integer"),
                                            ({"train": True}, "size must be a non-negative integer")])
def test_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        generate_splits(sizes, 0)


def test_exhausted_space_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(yesno, "MAX_TRIES", 50)
    with pytest.raises(ValueError, match=r"split test: no new \w+ question in 50 draws"):
        generate_splits({"test": 100_000}, 0)


def test_cli_writes_strategyqa_schema(tmp_path, capsys):
    main(["--out", str(tmp_path), "--sizes", "train=24,test=10", "--seed", "2"])
    assert capsys.readouterr().out.split() == [str(tmp_path / "test.jsonl"), str(tmp_path / "train.jsonl")]
    assert not (tmp_path / "dev.jsonl").exists()
    generated = generate_splits({"train": 24, "test": 10}, 2)
    for split in ("train", "test"):
        lines = (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        assert all(list(row) == ["qid", "question", "answer", "facts", "decomposition"] for row in rows)
        assert all(type(row["answer"]) is bool for row in rows)
        assert [row["answer"] for row in rows] == [r["metadata"]["expected_answer"] == "yes" for r in generated[split]]
        assert [row["qid"] for row in rows] == [r["id"] for r in generated[split]]
        # read back by the StrategyQA reader: the same records, category aside
        back = load_strategyqa(str(tmp_path), split)
        assert [dict(r, metadata={**r["metadata"], "category": "-"}) for r in back] == \
            [dict(r, metadata={**r["metadata"], "category": "-"}) for r in generated[split]]
    first = (tmp_path / "train.jsonl").read_bytes()
    main(["--out", str(tmp_path), "--sizes", "train=24,test=10", "--seed", "2"])
    assert (tmp_path / "train.jsonl").read_bytes() == first


@pytest.mark.parametrize("argv", [["--sizes", "train=x"], ["--sizes", "pool=3"]])
def test_cli_bad_sizes_exit_2(tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), *argv])
    assert exc.value.code == 2


def test_task_splits_through_data():
    config = Config(task=TaskConfig(name="yesno", n_train=40, n_test=20, n_dev=10, seed=4))
    expected = generate_splits({"train": 40, "dev": 10, "test": 20}, 4)
    for split in ("train", "dev", "test"):
        rows = load_task_split(config, split)
        assert [r["prompt"] for r in rows] == [r["prompt"] for r in expected[split]]
        assert {r["dataset"] for r in rows} == {"yesno"}
    with pytest.raises(InputError, match=r"task: split 'ift' does not exist for task 'yesno'"):
        load_task_split(config, "ift")
    with pytest.raises(InputError, match=r"task: split 'dev' does not exist for task 'arithmetic'"):
        load_task_split(Config(), "dev")
    assert set(SPLITS) == {"train", "dev", "test"}
