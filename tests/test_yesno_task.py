"""The built-in yes/no task: exact balance, disjoint splits, determinism, correct facts, the CLI's files; the
`mixed` level as it always was, the `sums` level's strict two-digit questions that a rough guess cannot decide."""
import hashlib
import json
import operator
import re
from collections import Counter

import pytest

from selftrain.config import Config, TaskConfig, load_config
from selftrain.data import load_task_split
from selftrain.errors import InputError
from selftrain.records import validate_prompt_record
from selftrain.tasks import yesno
from selftrain.tasks.strategyqa import load_strategyqa
from selftrain.tasks.yesno import LEVELS, SHAPES, SPLITS, generate_splits, main

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
    "two_digit_sum": (rf"Is (?:the sum of )?{N} (?:\+|and) {N} ({REL}) {N}\?", lambda a, b, w, n: cmp(a + b, w, n)),
    "two_digit_difference": (rf"Is (?:the difference between )?{N} (?:-|and) {N} ({REL}) {N}\?",
                             lambda a, b, w, n: cmp(a - b, w, n)),
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


@pytest.mark.parametrize("level", list(LEVELS))
def test_records_are_correct_and_well_formed(level):
    splits = generate_splits(SIZES, 3, level)
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
    assert splits["train"][0]["metadata"]["category"] == LEVELS[level][0]


@pytest.mark.parametrize("level", list(LEVELS))
def test_every_shape_and_both_answers_in_a_split(level):
    shapes = LEVELS[level]
    records = generate_splits({"train": 2 * len(shapes) * 5}, 0, level)["train"]
    counts = Counter((r["metadata"]["category"], r["metadata"]["expected_answer"]) for r in records)
    assert counts == {(shape, answer): 5 for shape in shapes for answer in ("yes", "no")}
    assert 8 <= len(LEVELS["mixed"]) <= 12 and set(SHAPES) == {s for shapes in LEVELS.values() for s in shapes}


@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_exactly_balanced_per_split_and_per_even_prefix(seed, level):
    splits = generate_splits({"train": 500, "dev": 40, "test": 126}, seed, level)
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


@pytest.mark.parametrize("level", list(LEVELS))
def test_splits_disjoint_and_unique(level):
    splits = generate_splits({"train": 3000, "dev": 300, "test": 600}, 0, level)
    texts = [r["prompt"] for records in splits.values() for r in records]
    assert len(texts) == len(set(texts)) == 3900


@pytest.mark.parametrize("level", list(LEVELS))
def test_deterministic_and_seed_dependent(level):
    assert generate_splits(SIZES, 5, level) == generate_splits(SIZES, 5, level)
    assert generate_splits(SIZES, 5, level)["test"] != generate_splits(SIZES, 6, level)["test"]


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


# --- levels ---------------------------------------------------------------------------------------------------------

DEMO = {"train": 400, "dev": 160, "test": 200}  # configs/distill.yaml's sizes
# generate_splits(DEMO, 0) and the CLI's train.jsonl for them, taken before levels existed: `mixed` must not move
MIXED_SHA256 = "72a4efc70f1db324496975196a3e7253c01b764eb73420c2f8f23d196ffddd80"
MIXED_TRAIN_JSONL_SHA256 = "a3899c2f2f007feac3b12f71b4fa373d571d6da3cc24e08b3828c463b9c8e088"


def sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_mixed_level_is_the_task_as_it_was(tmp_path):
    splits = generate_splits(DEMO, 0)
    assert sha256(splits) == MIXED_SHA256
    assert generate_splits(DEMO, 0, "mixed") == splits
    assert splits["test"][0] == {"id": "yesno-test-000001", "prompt": "Is 19 * 2 smaller than 35?", "metadata": {
        "expected_answer": "no", "category": "product", "facts": ["19 * 2 = 38", "38 is not less than 35."],
        "decomposition": ["What is 19 * 2?", "Is 38 less than 35?"]}}
    assert splits["train"][-1]["prompt"] == "Can someone walking 6 km an hour cover 35 km in 5 hours?"
    main(["--out", str(tmp_path / "a"), "--sizes", "train=400,dev=160,test=200", "--seed", "0"])
    main(["--out", str(tmp_path / "b"), "--sizes", "train=400,dev=160,test=200", "--seed", "0", "--level", "mixed"])
    for d in ("a", "b"):
        assert hashlib.sha256((tmp_path / d / "train.jsonl").read_bytes()).hexdigest() == MIXED_TRAIN_JSONL_SHA256


SUM = re.compile(rf"Is (?:the sum of |the difference between )?{N} (?:\+|-|and) {N} ({REL}) {N}\?")


def parsed(record) -> tuple[int, int, str, int, int]:
    """a, b, the comparison words, the compared number and the true result of a `sums` question."""
    a, b, words, n = SUM.fullmatch(record["prompt"]).groups()
    a, b, n = int(a), int(b), int(n)
    return a, b, words, n, a + b if record["metadata"]["category"] == "two_digit_sum" else a - b


def test_sums_questions_are_strict_two_digit_and_never_tied():
    records = generate_splits({"train": 4000}, 0, "sums")["train"]
    margins, words_used = Counter(), Counter()
    for r in records:
        a, b, words, n, value = parsed(r)
        assert all(10 <= x <= 99 for x in (a, b, n, value)), r["prompt"]
        assert words in ("more than", "greater than", "less than", "smaller than"), r["prompt"]
        assert abs(n - value) in (1, 9), r["prompt"]  # never a tie, never a far-off number
        margins[abs(n - value)] += 1
        words_used[words] += 1
        sign = "+" if r["metadata"]["category"] == "two_digit_sum" else "-"
        plain = "more than" if words in ("more than", "greater than") else "less than"
        said = "" if r["metadata"]["expected_answer"] == "yes" else "not "
        assert r["metadata"]["decomposition"] == [f"What is {a} {sign} {b}?", f"Is {value} {plain} {n}?"]
        assert r["metadata"]["facts"] == [f"{a} {sign} {b} = {value}", f"{value} is {said}{plain} {n}."]
    assert 0.25 < margins[9] / len(records) < 0.33 and len(words_used) == 4
    assert Counter(r["metadata"]["category"] for r in records) == {"two_digit_sum": 2000, "two_digit_difference": 2000}


def test_sums_record_in_the_schema_a_gold_reply_is_written_from():
    """Step, its fact, comparison, its fact: "1. What is 18 + 53? 18 + 53 = 71. 2. Is 71 more than 72? ..."."""
    assert generate_splits(DEMO, 0, "sums")["test"][0] == {
        "id": "yesno-test-000001", "prompt": "Is the sum of 18 and 53 greater than 72?",
        "metadata": {"expected_answer": "no", "category": "two_digit_sum",
                     "facts": ["18 + 53 = 71", "71 is not more than 72."],
                     "decomposition": ["What is 18 + 53?", "Is 71 more than 72?"]}}


def r10(x: int) -> int:
    return 10 * ((x + 5) // 10)


def right(estimate: int, words: str, n: int, answer: str) -> float:
    """How right answering from `estimate` instead of the result is: 1, 0, or 0.5 (a coin) when it ties n."""
    return 0.5 if estimate == n else float(cmp(estimate, words, n) == (answer == "yes"))


def best_rule_accuracy(records, seen) -> float:
    """Accuracy of the best answer per value of seen(a, b, n, value, sign) (with the shape and the comparison
    words): the most a model that sees only that part of a question reaches on these records. The parts are
    summaries (how far n is from a guess), so each value is seen often enough for the count to mean something."""
    table = {}
    for r in records:
        a, b, words, n, value = parsed(r)
        sign = 1 if r["metadata"]["category"] == "two_digit_sum" else -1
        key = (sign, words, seen(a, b, n, value, sign))
        table.setdefault(key, Counter())[r["metadata"]["expected_answer"]] += 1
    return sum(max(c.values()) for c in table.values()) / len(records)


@pytest.mark.parametrize("seed", [0, 1])
def test_sums_a_tens_digit_guess_does_not_decide_exact_arithmetic_does(seed):
    splits = generate_splits(DEMO, seed, "sums")
    for name, records in splits.items():
        exact, tens, rounded = [], [], []
        for r in records:
            a, b, words, n, value = parsed(r)
            sub = r["metadata"]["category"] == "two_digit_difference"
            exact.append(right(value, words, n, r["metadata"]["expected_answer"]))
            guess = 10 * (a // 10) + (-1 if sub else 1) * 10 * (b // 10)  # the tens digits alone: 47 + 38 -> 70
            tens.append(right(guess, words, n, r["metadata"]["expected_answer"]))
            guess = r10(a) + (-1 if sub else 1) * r10(b)  # the operands rounded to tens: 47 + 38 -> 90
            rounded.append(right(guess, words, n, r["metadata"]["expected_answer"]))
        assert sum(exact) == len(records), name
        assert sum(tens) / len(records) <= 0.75, (name, sum(tens) / len(records))
        assert sum(rounded) / len(records) <= 0.78, (name, sum(rounded) / len(records))


def test_sums_no_part_of_a_question_decides_it():
    records = [r for seed in range(20) for split in generate_splits(DEMO, seed, "sums").values() for r in split]
    parts = {"the tens digits": lambda a, b, n, v, sign: n - 10 * (a // 10) - sign * 10 * (b // 10),
             "the operands rounded to tens": lambda a, b, n, v, sign: n - r10(a) - sign * r10(b),
             "the result rounded to tens": lambda a, b, n, v, sign: n - r10(v),
             "the result's exact tens digit": lambda a, b, n, v, sign: n - 10 * (v // 10),
             "the units digits": lambda a, b, n, v, sign: ((a + sign * b) % 10, n % 10),
             "the compared number alone": lambda a, b, n, v, sign: n}
    reached = {name: round(best_rule_accuracy(records, seen), 3) for name, seen in parts.items()}
    assert max(reached.values()) <= 0.75, reached
    assert reached["the compared number alone"] <= 0.62, reached
    assert best_rule_accuracy(records, lambda a, b, n, v, sign: n % 10) <= 0.55
    assert best_rule_accuracy(records, lambda a, b, n, v, sign: (v, n)) == 1.0


def test_sums_has_room_for_the_demo_many_times_over():
    splits = generate_splits({"test": 2000, "dev": 1600, "train": 8000}, 0, "sums")
    texts = [r["prompt"] for records in splits.values() for r in records]
    assert len(set(texts)) == len(texts) == 11600


def test_unknown_level(tmp_path):
    with pytest.raises(ValueError, match=r"unknown level 'easy'; expected one of mixed, sums"):
        generate_splits(DEMO, 0, "easy")
    path = tmp_path / "run.yaml"
    path.write_text("task: {name: yesno, level: easy}\n")
    with pytest.raises(InputError, match=r"run.yaml: task.level: 'easy' is not one of mixed, sums$"):
        load_config(path)
    path.write_text("task: {name: arithmetic, level: sums}\n")
    with pytest.raises(InputError, match=r"run.yaml: task.level: 'sums': only the yesno task has levels"):
        load_config(path)
    assert load_config(None, {"task.name": "yesno", "task.level": "sums"}).task.level == "sums"
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--level", "easy"])
    assert exc.value.code == 2 and not list(tmp_path.glob("*.jsonl"))


def test_level_reaches_the_task_splits_and_the_cli(tmp_path):
    config = Config(task=TaskConfig(name="yesno", n_train=40, n_test=20, n_dev=10, seed=4, level="sums"))
    expected = generate_splits({"train": 40, "dev": 10, "test": 20}, 4, "sums")
    for split in ("train", "dev", "test"):
        assert [r["prompt"] for r in load_task_split(config, split)] == [r["prompt"] for r in expected[split]]
    main(["--out", str(tmp_path), "--sizes", "train=24,test=10", "--seed", "2", "--level", "sums"])
    first = (tmp_path / "train.jsonl").read_bytes()
    back = load_strategyqa(str(tmp_path), "train")
    assert [r["prompt"] for r in back] == [r["prompt"] for r in generate_splits({"train": 24}, 2, "sums")["train"]]
    main(["--out", str(tmp_path), "--sizes", "train=24,test=10", "--seed", "2", "--level", "sums"])
    assert (tmp_path / "train.jsonl").read_bytes() == first
