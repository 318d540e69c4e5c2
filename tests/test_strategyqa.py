"""StrategyQA's format: JSONL and the official JSON array, conversion, and errors that name file, line and field."""
import json
import sys
import types

import pytest

from selftrain.config import Config, DatasetConfig, RewardConfig
from selftrain.data import load_train_prompts, read_prompt_file, required_metadata
from selftrain.errors import InputError
from selftrain.tasks.strategyqa import (claims_strategyqa, convert_strategyqa_record, is_strategyqa_record,
                                        iter_json_array, load_strategyqa, read_strategyqa_file)

HAMSTER = {"qid": "b8677742616fef051f00", "term": "Hamster", "description": "a small rodent",
           "question": "Do hamsters provide food for any animals?", "answer": True,
           "facts": ["Hamsters are prey animals.", "Prey are food for predators."],
           "decomposition": ["What type of animal are hamsters?",
                             "Do prey animals provide food for any other animals?"],
           "evidence": [[["no_evidence"]]]}
CHOCOLATE = {"qid": "4b9a3e1a7d", "question": "Can a dog eat chocolate safely?", "answer": False,
             "facts": ["Chocolate contains theobromine."], "decomposition": ["What does chocolate contain?"]}
HAMSTER_RECORD = {"id": "b8677742616fef051f00", "prompt": "Do hamsters provide food for any animals?",
                  "metadata": {"expected_answer": "yes", "category": "strategyqa", "facts": HAMSTER["facts"],
                               "decomposition": HAMSTER["decomposition"]}}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_convert_record():
    assert is_strategyqa_record(HAMSTER)
    assert convert_strategyqa_record(HAMSTER, 3, "train") == HAMSTER_RECORD
    bare = convert_strategyqa_record({"question": "Is ice cold?", "answer": False}, 7, "dev")
    assert bare == {"id": "dev-000007", "prompt": "Is ice cold?",
                    "metadata": {"expected_answer": "no", "category": "strategyqa"}}


@pytest.mark.parametrize("row, message", [
    ({"question": "Q?", "answer": "yes"}, "answer: expected true or false, got 'yes'"),
    ({"question": "Q?", "answer": 1}, "answer: expected true or false, got 1"),
    ({"question": "Q?", "answer": None}, "answer: expected true or false, got None"),
    ({"question": "Q?"}, "answer: missing (expected true or false)"),
    ({"question": "Q?", "answer": "just 3"}, "answer: expected true or false, got 'just 3' (a StrategyQA answer is a "
                                             "JSON boolean)"),
    ({"question": "Q?", "answer": "maybe"}, "answer: expected true or false, got 'maybe' (a StrategyQA answer is a "
                                            "JSON boolean)"),
    ({"question": "", "answer": True}, "question: expected a non-empty string, got ''"),
    ({"question": "Q?", "answer": True, "facts": "one fact"}, "facts: expected a list of strings, got 'one fact'"),
    ({"question": "Q?", "answer": True, "decomposition": [1]}, "decomposition: expected a list of strings"),
    ({"question": "Q?", "answer": True, "qid": ["x"]}, "qid: expected a string"),
])
def test_bad_rows(row, message):
    with pytest.raises(ValueError) as exc:
        convert_strategyqa_record(row, 1, "x")
    assert str(exc.value).startswith(message)


def test_the_gsm8k_hint_only_where_gsm8k_rows_are_read_too():
    """A reader of StrategyQA alone (distill.dataset) never mentions GSM8K; a mixed prompt file's reader,
    which also takes GSM8K rows, tells a text answer both shapes."""
    with pytest.raises(ValueError) as exc:
        convert_strategyqa_record({"question": "Q?", "answer": "72"}, 1, "x", gsm8k_too=True)
    assert str(exc.value) == ("answer: expected true or false, got '72' (a StrategyQA answer is a JSON boolean; "
                              "a GSM8K answer ends in '#### <number>')")
    with pytest.raises(ValueError) as exc:
        convert_strategyqa_record({"question": "Q?", "answer": "72"}, 1, "x")
    assert "GSM8K" not in str(exc.value)


def test_which_rows_are_strategyqa():
    assert not is_strategyqa_record({"question": "Q", "answer": "yes"})
    assert not is_strategyqa_record({"question": "Q", "answer": True, "prompt": "P"})
    assert claims_strategyqa({"question": "Q", "answer": "yes"})  # claimed, so its bad answer is reported
    assert claims_strategyqa({"question": "Q"})
    assert not claims_strategyqa({"question": "Q", "answer": "x\n#### 3"})  # GSM8K's
    assert not claims_strategyqa({"prompt": "P", "question": "Q", "answer": True})
    assert not claims_strategyqa({"messages": [], "question": "Q", "answer": True})
    assert not claims_strategyqa({"answer": True})


def test_jsonl_file(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [HAMSTER, {"question": "Is ice cold?", "answer": True}])
    records = read_strategyqa_file(path)
    assert records[0] == HAMSTER_RECORD
    assert records[1]["id"] == "train-000002" and records[1]["metadata"]["expected_answer"] == "yes"
    assert load_strategyqa(str(tmp_path), "train") == records
    assert load_strategyqa(str(path), "test") == records


def test_json_array_pretty_printed(tmp_path):
    path = tmp_path / "strategyqa_train.json"
    path.write_text(json.dumps([HAMSTER, CHOCOLATE, {"question": "Is ice cold?", "answer": True}], indent=2))
    records = read_strategyqa_file(path)
    assert records[0] == HAMSTER_RECORD
    assert [r["metadata"]["expected_answer"] for r in records] == ["yes", "no", "yes"]
    assert records[2]["id"] == "strategyqa_train-000003"  # a row without qid is named by its element
    lines = path.read_text().splitlines()
    starts = [line for line, _, _ in iter_json_array(path)]
    assert [lines[s - 1].strip() for s in starts] == ["{"] * 3
    assert starts[0] == 2 and starts[1] > starts[0] + 10
    assert load_strategyqa(str(tmp_path), "strategyqa_train") == records
    one_line = tmp_path / "one_line.json"
    one_line.write_text(json.dumps([HAMSTER, CHOCOLATE]))
    assert [line for line, _, _ in iter_json_array(one_line)] == [1, 1]
    assert read_strategyqa_file(one_line) == records[:2]


def test_json_array_bad_answer_names_line_and_element(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([HAMSTER, CHOCOLATE, {"qid": "q3", "question": "Q?", "answer": "yes"}], indent=2))
    starts = [line for line, _, _ in iter_json_array(path)]
    assert path.read_text().splitlines()[starts[2] - 1] == "  {" and '"q3"' in path.read_text().splitlines()[starts[2]]
    with pytest.raises(InputError) as exc:
        read_strategyqa_file(path)
    assert str(exc.value) == f"{path}:{starts[2]}: element 3: answer: expected true or false, got 'yes'"


@pytest.mark.parametrize("text, line, message", [
    ('[\n{"question": "Q?", "answer": true},\n{"question": \n', 4, "not valid JSON"),
    ('[\n{"question": "Q?", "answer": true}\n{"question": "R?", "answer": true}]', 3,
     "not valid JSON (expected ',' or ']' after element 1)"),
    ('[{"question": "Q?", "answer": true},]', 1, "not valid JSON"),
    ('[{"question": "Q?", "answer": true}]\n]', 1, "not valid JSON (text after the closing ']')"),
    ('[\n"a string"\n]', 2, "element 1: expected a JSON object, got str"),
])
def test_malformed_json_arrays(tmp_path, text, line, message):
    path = tmp_path / "train.json"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        load_strategyqa(str(path), "train")
    assert str(exc.value).startswith(f"{path}:{line}: {message}")


def test_json_or_jsonl_by_content_not_suffix(tmp_path):
    path = tmp_path / "train.json"  # JSONL under a .json name is read as JSONL
    write_jsonl(path, [HAMSTER, CHOCOLATE])
    assert [r["id"] for r in read_strategyqa_file(path)] == [HAMSTER["qid"], CHOCOLATE["qid"]]
    with pytest.raises(InputError, match=rf"^{path}:1: expected a JSON array"):
        list(iter_json_array(path))


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "train.json").write_text("[]")
    with pytest.raises(InputError, match="file is empty"):
        load_strategyqa(str(tmp_path / "train.json"), "train")
    with pytest.raises(InputError, match=r"no test.jsonl or test.json in"):
        load_strategyqa(str(tmp_path), "test")
    with pytest.raises(InputError, match="no such file or directory"):
        load_strategyqa(str(tmp_path / "absent.json"), "train")


def test_hub_failure_is_an_input_error_naming_the_id(monkeypatch):
    def offline(name, split=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(InputError) as exc:
        load_strategyqa("voidful/StrategyQA", "train")
    message = str(exc.value)
    assert message.startswith("voidful/StrategyQA: cannot load split 'train' from the Hugging Face hub "
                              "(ConnectionError: Couldn't reach 'voidful/StrategyQA'")
    assert "local StrategyQA file" in message and "\n" not in message


def test_hub_rows_are_converted_and_checked(monkeypatch):
    rows = {"train": [HAMSTER, {"question": "Is ice cold?", "answer": True}], "test": [{"qid": "t1", "question": "Q?"}]}
    monkeypatch.setitem(sys.modules, "datasets",
                        types.SimpleNamespace(load_dataset=lambda name, split=None: rows[split]))
    records = load_strategyqa("someone/strategyqa", "train")
    assert records[0] == HAMSTER_RECORD and records[1]["id"] == "strategyqa-train-000002"
    with pytest.raises(InputError, match=r"^someone/strategyqa\[test\]:1: answer: missing"):
        load_strategyqa("someone/strategyqa", "test")
    config = Config(datasets=[DatasetConfig(path="someone/strategyqa")], eval_holdout=0.0,
                    reward_config=RewardConfig(rule_type="yesno"))
    # a dataset entry names rows without qid after its source, as for local files
    assert [r["id"] for r in load_train_prompts(config, 1)] == ["b8677742616fef051f00", "strategyqa-000002"]


# --- through data.read_prompt_file, next to the other formats ----------------------------------------

def test_read_prompt_file_converts_strategyqa_lines(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        HAMSTER,
        {"question": "Is ice cold?", "answer": False},
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},  # GSM8K's
        {"id": "own", "prompt": "Is 2 even?", "metadata": {"expected_answer": "yes"}},
    ])
    config = Config(reward_config=RewardConfig(rule_type="yesno"))
    assert required_metadata(config) == ("expected_answer",)
    records = read_prompt_file(path, required=required_metadata(config))
    assert records[0] == HAMSTER_RECORD
    assert records[1] == {"id": "mixed-000002", "prompt": "Is ice cold?",
                          "metadata": {"expected_answer": "no", "category": "strategyqa"}}
    assert records[2]["id"] == "gsm8k-mixed-000003" and records[2]["metadata"]["expected_answer"] == "7"
    assert records[3]["id"] == "own"
    assert read_prompt_file(path, id_prefix="0-mixed")[1]["id"] == "0-mixed-000002"


@pytest.mark.parametrize("answer, shown", [('"yes"', "'yes'"), ("1", "1"), ("null", "None")])
def test_read_prompt_file_bad_answer_names_file_line_and_field(tmp_path, answer, shown):
    path = write_jsonl(tmp_path / "train.jsonl", [HAMSTER, f'{{"question": "Q?", "answer": {answer}}}'])
    with pytest.raises(InputError) as exc:
        read_prompt_file(path)
    assert str(exc.value) == f"{path}:2: answer: expected true or false, got {shown}"


def test_read_prompt_file_maybe_answer_names_file_line_and_strategyqa(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [HAMSTER, {"question": "Q?", "answer": "maybe"}])
    with pytest.raises(InputError) as exc:
        read_prompt_file(path)
    assert str(exc.value).startswith(f"{path}:2: answer: expected true or false, got 'maybe' "
                                     f"(a StrategyQA answer is a JSON boolean")


def test_read_prompt_file_missing_answer(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [HAMSTER, {"qid": "x", "question": "Q?", "facts": []}])
    with pytest.raises(InputError, match=rf"^{path}:2: answer: missing \(expected true or false\)$"):
        read_prompt_file(path)


def test_read_prompt_file_json_array_and_dataset_dir(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([HAMSTER, CHOCOLATE], indent=1))
    records = read_prompt_file(path, required=("expected_answer",))
    assert records[0] == HAMSTER_RECORD and records[1]["metadata"]["expected_answer"] == "no"
    with pytest.raises(InputError, match=r"record b8677742616fef051f00: metadata.test_cases: missing"):
        read_prompt_file(path, required=("test_cases",))
    config = Config(datasets=[DatasetConfig(path=str(tmp_path))], eval_holdout=0.0,
                    reward_config=RewardConfig(rule_type="yesno"))
    assert [r["prompt"] for r in load_train_prompts(config, 1)] == [HAMSTER["question"], CHOCOLATE["question"]]
    path.write_text(json.dumps([HAMSTER, {"question": "Q?", "answer": "no"}], indent=1))
    with pytest.raises(InputError, match=r"train.json:\d+: element 2: answer: expected true or false, got 'no'"):
        load_train_prompts(config, 1)


def test_duplicate_qids_are_refused(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([HAMSTER, HAMSTER]))
    with pytest.raises(InputError, match="id appears twice"):
        read_prompt_file(path)
    jsonl = write_jsonl(tmp_path / "dup.jsonl", [HAMSTER, HAMSTER])
    with pytest.raises(InputError, match=rf"{jsonl}:2: id: 'b8677742616fef051f00' appears twice"):
        read_prompt_file(jsonl)


@pytest.mark.parametrize("layout", ["jsonl", "json_array", "folder"])
def test_a_maybe_answer_in_the_distillation_dataset_names_file_and_line_and_no_other_task(tmp_path, layout):
    """distill.dataset with `"answer": "maybe"` on its third record: the file and line of that record, and
    a hint about StrategyQA's answers (the GSM8K hint once appended here does not apply)."""
    from selftrain.config import load_config
    from selftrain.distill import questions

    rows = [HAMSTER, CHOCOLATE, {"qid": "q3", "question": "Is a tomato a fruit?", "answer": "maybe"}]
    folder = tmp_path / "sqa"
    folder.mkdir()
    if layout == "jsonl":
        path = source = write_jsonl(folder / "train.jsonl", rows)
        line = 3
    else:
        path = folder / "train.json"
        path.write_text(json.dumps(rows, indent=2))
        source = folder if layout == "folder" else path
        line = [start for start, _, _ in iter_json_array(path)][2]
    config = load_config(None, {"method": "distill", "distill": {"dataset": str(source)},
                                "task": {"name": "yesno", "n_train": 1, "n_dev": 1, "n_test": 1},
                                "reward_config": {"type": "rule_based", "rule_type": "yesno"}})
    with pytest.raises(InputError) as exc:
        questions(config, "train")
    element = "" if layout == "jsonl" else "element 3: "
    assert str(exc.value) == (f"{path}:{line}: {element}answer: expected true or false, got 'maybe' "
                              f"(a StrategyQA answer is a JSON boolean)")


def test_one_file_is_carved_into_disjoint_seeded_splits_for_distillation(tmp_path):
    from selftrain.config import load_config
    from selftrain.distill import questions

    rows = [{"qid": f"q{i:02d}", "question": f"Is {i} even?", "answer": i % 2 == 0} for i in range(30)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)

    def config(n_train, seed=0):
        return load_config(None, {"method": "distill", "seed": seed, "distill": {"dataset": str(path)},
                                  "task": {"name": "yesno", "n_train": n_train, "n_dev": 5, "n_test": 8},
                                  "reward_config": {"type": "rule_based", "rule_type": "yesno"}})

    splits = {s: [r["id"] for r in questions(config(17), s)] for s in ("train", "dev", "test")}
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [17, 5, 8]
    assert sorted(sum(splits.values(), [])) == sorted(r["qid"] for r in rows)  # disjoint, nothing lost
    assert [r["id"] for r in questions(config(10), "test")] == splits["test"]  # sizing train moves no test question
    assert [r["id"] for r in questions(config(17, seed=1), "test")] != splits["test"]
    with pytest.raises(InputError, match=r"train.jsonl: 30 questions, fewer than the 31 the splits need"):
        questions(config(18), "train")
