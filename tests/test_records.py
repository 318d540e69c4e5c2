"""Tests for selftrain.records: seed-000 prompt validation (with exact `path:line:`
locations) and the resume-safe JsonlAppender."""

import json

import pytest

from selftrain.errors import InputError
from selftrain.records import JsonlAppender, answer_text, read_jsonl, read_prompt_records, validate_prompt_record


def write_lines(path, lines) -> str:
    """Write raw lines (str as-is, anything else JSON-encoded), one per line."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


GOOD = {"prompt": "What is 1 + 1?"}


# --- valid seed-000 shapes ----------------------------------------------------

def test_plain_prompt_gets_a_line_based_id(tmp_path):
    path = write_lines(tmp_path / "prompts.jsonl", [GOOD, "", {"prompt": "Second?"}])
    records = read_prompt_records(path)
    assert [r["id"] for r in records] == ["prompts-000001", "prompts-000003"]
    assert records[0]["prompt"] == "What is 1 + 1?"
    assert records[0]["metadata"] == {}


def test_full_record_keeps_fields_and_stringifies_answers(tmp_path):
    lines = [
        {"id": "a", "prompt": "2 + 3?", "difficulty": "medium",
         "metadata": {"expected_answer": 5, "category": "math"}},
        {"id": 7, "prompt": "1.5 * 2?", "metadata": {"expected_answer": 3.0}},
        {"id": "c", "prompt": "Name it", "metadata": {"expected_answer": "Paris"}},
    ]
    records = read_prompt_records(write_lines(tmp_path / "p.jsonl", lines), need_answer=True)
    assert records[0]["difficulty"] == "medium"
    assert records[0]["metadata"] == {"expected_answer": "5", "category": "math"}
    assert records[1]["id"] == "7"
    assert records[1]["metadata"]["expected_answer"] == "3.0"
    assert records[2]["metadata"]["expected_answer"] == "Paris"


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard", "expert"])
def test_every_difficulty_is_accepted(difficulty):
    record = validate_prompt_record({"prompt": "q", "difficulty": difficulty}, "f.jsonl", 3)
    assert record["difficulty"] == difficulty
    assert record["id"] == "f-000003"


def test_test_cases_record():
    cases = [{"input": "1 2", "expected_output": "3"}, {"input": "", "expected_output": "0"}]
    record = validate_prompt_record({"prompt": "Add", "metadata": {"test_cases": cases}}, "t.jsonl", 1)
    assert record["metadata"]["test_cases"] == cases


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
         {"role": "user", "content": "and 3+3?"}],
    ],
)
def test_messages_record(tmp_path, messages):
    records = read_prompt_records(write_lines(tmp_path / "m.jsonl", [{"id": "m", "messages": messages}]))
    assert records[0]["messages"] == messages
    assert "prompt" not in records[0]


def test_validation_does_not_mutate_the_input():
    obj = {"prompt": "q", "metadata": {"expected_answer": 4}}
    validate_prompt_record(obj, "f.jsonl", 1)
    assert obj == {"prompt": "q", "metadata": {"expected_answer": 4}}


def test_lines_of_another_format_are_not_converted_here(tmp_path):
    """records knows only the seed-000 shape (data.read_prompt_file converts GSM8K)."""
    path = write_lines(tmp_path / "gsm.jsonl", [{"question": "Big?", "answer": "1000 + 234 = 1234\n#### 1,234"}])
    with pytest.raises(InputError, match=r":1: prompt: missing"):
        read_prompt_records(path)


def test_convert_hook_runs_before_validation_and_its_errors_name_the_line(tmp_path):
    def convert(obj, lineno):
        if "q" not in obj:
            raise ValueError("q: missing")
        return {"prompt": obj["q"], "metadata": {"line": lineno}}

    path = write_lines(tmp_path / "q.jsonl", [{"q": "one?"}, "", {"q": "two?"}])
    records = read_prompt_records(path, convert=convert)
    assert [(r["prompt"], r["metadata"]["line"], r["id"]) for r in records] == [("one?", 1, "q-000001"),
                                                                              ("two?", 3, "q-000003")]
    bad = write_lines(tmp_path / "bad.jsonl", [{"q": "one?"}, {"x": 1}])
    with pytest.raises(InputError, match=rf"^{bad}:2: q: missing$"):
        read_prompt_records(bad, convert=convert)


@pytest.mark.parametrize("answer, text", [
    ("Paris", "Paris"), (" 12 ", " 12 "), (5, "5"), (-3, "-3"), (10**30, str(10**30)), (3.0, "3.0"), (2.5, "2.5"),
    (1e-07, "0.0000001"), (1e20, "100000000000000000000"), (-0.25, "-0.25"),
])
def test_answer_text_keeps_strings_and_writes_numbers_exactly(answer, text):
    assert answer_text(answer) == text


@pytest.mark.parametrize("answer", [float("nan"), float("inf"), float("-inf"), True, None, [1], {"a": 1}])
def test_answer_text_refuses_what_is_no_answer(answer):
    with pytest.raises(ValueError, match="expected a string or"):
        answer_text(answer)


# --- errors: `path:line: field: ...` ---------------------------------------------

# Each case: lines of the file, the line number and the text the error must name.
ERRORS = {
    "bad json": (["{\"prompt\": \"ok\"}", "{\"prompt\": "], 2, "not valid JSON"),
    "non-object": ([GOOD, "", "[1, 2]"], 3, "expected a JSON object, got list"),
    "string line": (["\"just text\""], 1, "expected a JSON object, got str"),
    "missing prompt": ([GOOD, {"id": "x", "difficulty": "easy"}], 2, "prompt: missing"),
    "empty prompt": ([{"prompt": "   "}], 1, "prompt: expected a non-empty string"),
    "prompt int": ([GOOD, GOOD, {"prompt": 42}], 3, "prompt: expected a non-empty string, got 42"),
    "difficulty": ([{"prompt": "q", "difficulty": "impossible"}], 1, "difficulty: 'impossible' is not one of"),
    "metadata list": ([{"prompt": "q", "metadata": [1]}], 1, "metadata: expected an object, got list"),
    "answer list": ([{"prompt": "q", "metadata": {"expected_answer": [1]}}], 1, "metadata.expected_answer"),
    "answer bool": ([{"prompt": "q", "metadata": {"expected_answer": True}}], 1, "metadata.expected_answer"),
    "category int": ([{"prompt": "q", "metadata": {"category": 3}}], 1, "metadata.category"),
    "test_cases empty": ([{"prompt": "q", "metadata": {"test_cases": []}}], 1, "metadata.test_cases: expected a non-empty list"),
    "test_cases not list": ([{"prompt": "q", "metadata": {"test_cases": "1 2 -> 3"}}], 1, "metadata.test_cases"),
    "test_case item": ([{"prompt": "q", "metadata": {"test_cases": [5]}}], 1, "metadata.test_cases[0]: expected an object"),
    "test_case output": ([{"prompt": "q", "metadata": {"test_cases": [{"input": "1", "expected_output": 2}]}}],
                         1, "metadata.test_cases[0].expected_output"),
    "messages empty": ([{"messages": []}], 1, "messages: expected a non-empty list"),
    "messages role": ([{"messages": [{"role": "bot", "content": "x"}]}], 1, "messages[0].role: 'bot'"),
    "messages content": ([{"messages": [{"role": "user", "content": None}]}], 1, "messages[0].content"),
    "messages end with assistant": (
        [GOOD, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}],
        2, "messages: the last message must be from the user"),
    "id bool": ([{"id": True, "prompt": "q"}], 1, "id: expected a string"),
    "duplicate id": ([{"id": "a", "prompt": "q"}, {"id": "b", "prompt": "q"}, "", {"id": "a", "prompt": "r"}],
                     4, "id: 'a' appears twice"),
    "answer NaN": ([GOOD, '{"prompt": "q", "metadata": {"expected_answer": NaN}}'], 2,
                   "metadata.expected_answer: expected a string or a finite number, got nan"),
    "answer Infinity": (['{"prompt": "q", "metadata": {"expected_answer": Infinity}}'], 1,
                        "metadata.expected_answer: expected a string or a finite number, got inf"),
    "answer -Infinity": (['{"prompt": "q", "metadata": {"expected_answer": -Infinity}}'], 1,
                         "metadata.expected_answer: expected a string or a finite number, got -inf"),
}


@pytest.mark.parametrize("lines, lineno, text", ERRORS.values(), ids=ERRORS.keys())
def test_bad_line_names_path_line_and_field(tmp_path, lines, lineno, text):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(InputError) as info:
        read_prompt_records(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{lineno}: "), message
    assert text in message


def test_need_answer_names_the_missing_field(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "q", "metadata": {"expected_answer": 1}}, GOOD])
    with pytest.raises(InputError) as info:
        read_prompt_records(path, need_answer=True)
    assert str(info.value).startswith(f"{path}:2: metadata.expected_answer: missing")


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match="file is empty") as info:
        read_prompt_records(path)
    assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(InputError, match="file is empty"):
        read_jsonl(path)
    assert read_jsonl(path, allow_empty=True) == []


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_prompt_records(tmp_path / "nope.jsonl")


# --- JsonlAppender ------------------------------------------------------------------

def read_ids(path) -> list:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_appender_flushes_each_record(tmp_path):
    path = tmp_path / "out" / "gen.jsonl"
    appender = JsonlAppender(path)
    appender.write({"id": "a", "response": "x"})
    assert read_ids(path) == ["a"]  # visible before close
    appender.write({"id": "b", "response": "é ✓"})
    assert path.read_text(encoding="utf-8").splitlines()[1] == json.dumps({"id": "b", "response": "é ✓"}, ensure_ascii=False)
    appender.close()


def test_appender_skips_ids_already_written(tmp_path):
    path = tmp_path / "gen.jsonl"
    with JsonlAppender(path) as appender:
        appender.write({"id": "a", "n": 1})
        appender.write({"id": "a", "n": 2})  # same run: skipped too
        appender.write({"id": "b", "n": 1})
    with JsonlAppender(path) as appender:
        assert appender.done == {"a", "b"}
        appender.write({"id": "b", "n": 3})
        appender.write({"id": "c", "n": 1})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"id": "a", "n": 1}, {"id": "b", "n": 1}, {"id": "c", "n": 1}]


def test_appender_truncates_a_torn_last_line(tmp_path):
    path = tmp_path / "gen.jsonl"
    with JsonlAppender(path) as appender:
        appender.write({"id": "a"})
        appender.write({"id": "b"})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "respo')  # killed mid-write: no newline
    with JsonlAppender(path) as appender:
        assert appender.done == {"a", "b"}
        assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
        appender.write({"id": "c", "response": "done"})
    assert read_ids(path) == ["a", "b", "c"]
    assert json.loads(path.read_text().splitlines()[2]) == {"id": "c", "response": "done"}


def test_appender_torn_only_line_leaves_an_empty_file(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text('{"id": "a", "x"')
    with JsonlAppender(path) as appender:
        assert appender.done == set()
    assert path.read_text() == ""


def test_appender_refuses_a_complete_line_that_is_not_a_record(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text('{"id": "a"}\n{"no_id": 1}\n')
    with pytest.raises(InputError) as info:
        JsonlAppender(path)
    assert str(info.value).startswith(f"{path}:2: cannot resume")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_appender_resumes_records_with_unicode_line_separators(tmp_path, separator):
    path = tmp_path / "gen.jsonl"
    with JsonlAppender(path) as appender:
        appender.write({"id": "a", "response": f"one{separator}two"})
    with JsonlAppender(path) as appender:
        assert appender.done == {"a"}
