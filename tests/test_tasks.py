import json
import re
from collections import Counter
from pathlib import Path

import pytest

from selftrain.errors import InputError
from selftrain.tasks import arithmetic, gsm8k
from selftrain.tasks.arithmetic import DIFFICULTIES, generate_split, main, write_task

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO.parent / "shared" / "data" / "gsm8k"  # the repository's ../shared, wherever it is cloned

# Independent recomputation of each word-problem template from its prompt text.
WORD_PROBLEMS = [
    (r"has (\d+) \w+\. \w+ buys (\d+) bags with (\d+) \w+ each and gives away (\d+)\.",
     lambda a, b, c, d: a + b * c - d),
    (r"packs (\d+) boxes with (\d+) \w+ in each box\. It sells (\d+) ", lambda a, b, c: a * b - c),
    (r"reads (\d+) pages a day for (\d+) days, then reads (\d+) more", lambda a, b, c: a * b + c),
    (r"A box holds (\d+) \w+\. \w+ fills (\d+) boxes and has (\d+) ", lambda a, b, c: a * b + c),
    (r"earns \$(\d+) per hour and works (\d+) hours\. \w+ spends \$(\d+) ", lambda a, b, c: a * b - c),
    (r"^(\d+) \w+ are shared equally among (\d+) friends\. Each friend then gives away (\d+)\.",
     lambda t, n, d: t // n - d if t % n == 0 else None),
]


def recompute(record):
    prompt = record["prompt"]
    if record["difficulty"] == "expert":
        for pattern, formula in WORD_PROBLEMS:
            if m := re.search(pattern, prompt):
                return formula(*map(int, m.groups()))
        raise AssertionError(f"no template matches: {prompt}")
    m = re.fullmatch(r"(?:What is |Calculate: |Evaluate: )([\d+\-*() ]+)\??", prompt)
    assert m, prompt
    return eval(m.group(1))  # only digits, + - * ( ) and spaces


def test_answers_are_correct_and_well_formed():
    train, test = generate_split(400, 100, list(DIFFICULTIES), seed=3)
    for record in train + test:
        meta = record["metadata"]
        assert set(record) == {"id", "prompt", "difficulty", "metadata"}
        assert re.fullmatch(r"-?\d+", meta["expected_answer"])
        assert int(meta["expected_answer"]) == recompute(record), record
        assert int(meta["expected_answer"]) >= 0
        expected_category = "word_problem" if record["difficulty"] == "expert" else "arithmetic"
        assert meta["category"] == expected_category
    hard = [r["prompt"] for r in train if r["difficulty"] == "hard"]
    assert all("(" in p for p in hard)
    assert train[42]["id"] == "arith-train-000042" and test[7]["id"] == "arith-test-000007"
    expert_kinds = {i for r in train if r["difficulty"] == "expert"
                    for i, (p, _) in enumerate(WORD_PROBLEMS) if re.search(p, r["prompt"])}
    assert len(expert_kinds) == len(WORD_PROBLEMS)


def test_easy_format():
    train, _ = generate_split(50, 0, ["easy"], seed=0)
    for r in train:
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", r["prompt"]).groups())
        assert 10 <= a <= 99 and 10 <= b <= 99


def test_difficulty_round_robin_counts():
    train, test = generate_split(10, 5, ["easy", "medium", "expert"], seed=1)
    assert [r["difficulty"] for r in train[:4]] == ["easy", "medium", "expert", "easy"]
    assert Counter(r["difficulty"] for r in train) == {"easy": 4, "medium": 3, "expert": 3}
    assert Counter(r["difficulty"] for r in test) == {"easy": 2, "medium": 2, "expert": 1}


def test_no_duplicates_and_disjoint():
    train, test = generate_split(1500, 500, ["easy", "medium"], seed=0)
    train_prompts = [r["prompt"] for r in train]
    test_prompts = [r["prompt"] for r in test]
    assert len(set(train_prompts)) == len(train_prompts)
    assert len(set(test_prompts)) == len(test_prompts)
    assert not set(train_prompts) & set(test_prompts)
    assert len({r["id"] for r in train + test}) == len(train) + len(test)


def test_whole_easy_space_and_too_small_space():
    train, test = generate_split(8000, 100, ["easy"], seed=0)
    assert len({r["prompt"] for r in train + test}) == 90 * 90
    with pytest.raises(ValueError, match="8101 distinct easy problems"):
        generate_split(8000, 101, ["easy"], seed=0)


def test_retry_limit_raises(monkeypatch):
    monkeypatch.setattr(arithmetic, "MAX_TRIES", 5)
    monkeypatch.setattr(arithmetic, "make_problem",
                        lambda rng, d: {"prompt": "same", "difficulty": d, "metadata": {}})
    with pytest.raises(ValueError, match="too small"):
        generate_split(2, 0, ["medium"], seed=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown difficulty"):
        generate_split(1, 1, ["easy", "impossible"], seed=0)
    with pytest.raises(ValueError, match="empty"):
        generate_split(1, 1, [], seed=0)


def test_write_task_deterministic(tmp_path):
    args = (30, 10, ["easy", "medium", "hard", "expert"])
    a = write_task(tmp_path / "a", *args, seed=7)
    b = write_task(tmp_path / "b", *args, seed=7)
    c = write_task(tmp_path / "c", *args, seed=8)
    assert a == (tmp_path / "a" / "train.jsonl", tmp_path / "a" / "test.jsonl")
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["test.jsonl", "train.jsonl"]
    lines = a[0].read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30 and json.loads(lines[0])["id"] == "arith-train-000000"


def test_cli(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n_train", "6", "--n_test", "2",
          "--difficulties", "easy,hard", "--seed", "0"])
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 6
    assert str(tmp_path / "test.jsonl") in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--difficulties", "easy,nope"])
    assert exc.value.code == 2


# ---------------------------------------------------------------- gsm8k

def test_convert_record():
    raw = {"question": "Q?", "answer": "Half is 48/2 = <<48/2=24>>24.\nSo 1,024.\n#### 1,024"}
    assert gsm8k.is_gsm8k_record(raw)
    assert gsm8k.convert_gsm8k_record(raw, 3, "train") == {
        "id": "gsm8k-train-000003",
        "prompt": "Q?",
        "metadata": {"expected_answer": "1024", "category": "gsm8k",
                     "reference_rationale": "Half is 48/2 = 24.\nSo 1,024."},
    }


def test_is_gsm8k_record():
    assert not gsm8k.is_gsm8k_record({"question": "Q", "answer": "no marker"})
    assert not gsm8k.is_gsm8k_record({"question": "Q", "answer": "#### 1", "prompt": "P"})
    assert not gsm8k.is_gsm8k_record({"question": "Q", "answer": "#### 1", "messages": []})
    assert not gsm8k.is_gsm8k_record({"answer": "#### 1"})
    assert not gsm8k.is_gsm8k_record({"prompt": "P", "metadata": {}})


@pytest.mark.skipif(not GSM8K_DIR.is_dir(), reason=f"{GSM8K_DIR} not present (../shared is not beside the repository)")
def test_load_real_gsm8k():
    records = gsm8k.load_gsm8k(str(GSM8K_DIR), "test")
    lines = (GSM8K_DIR / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == len([line for line in lines if line.strip()])
    first = json.loads(lines[0])
    final_line = first["answer"].strip().split("\n")[-1]
    assert final_line.startswith("####")
    assert records[0]["metadata"]["expected_answer"] == final_line[4:].strip().replace(",", "")
    assert records[0]["prompt"] == first["question"]
    assert records[0]["id"] == "gsm8k-test-000001" and records[-1]["id"] == f"gsm8k-test-{len(records):06d}"
    for r in records:
        assert re.fullmatch(r"-?[\d.]+", r["metadata"]["expected_answer"]), r
        assert "<<" not in r["metadata"]["reference_rationale"]
        assert "####" not in r["metadata"]["reference_rationale"]
    # a single file works the same, and split only names the ids
    from_file = gsm8k.load_gsm8k(str(GSM8K_DIR / "test.jsonl"), "test")
    assert from_file == records


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"answer": "x\\n#### 3"}', "question: missing or not a string"),
    ('{"question": "Q", "answer": "just 3"}', "answer: no '#### <number>' final answer"),
    ('{"question": "Q", "answer": "x\\n####   "}', "answer: nothing after '####'"),
])
def test_malformed_lines(tmp_path, line, problem):
    path = tmp_path / "train.jsonl"
    good = json.dumps({"question": "Q", "answer": "x\n#### 1"})
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        gsm8k.load_gsm8k(str(tmp_path), "train")
    assert str(exc.value).startswith(f"{path}:3: {problem}")


def test_missing_local_sources(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        gsm8k.load_gsm8k(str(tmp_path), "test")
    with pytest.raises(InputError, match="no such file"):
        gsm8k.load_gsm8k(str(tmp_path / "absent.jsonl"), "test")
