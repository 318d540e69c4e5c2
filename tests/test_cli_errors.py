"""Bad input stops a stage script before any model load and before any output.

Each case runs the real entry-point script as a subprocess and checks the
contract of `selftrain.cli.run`: exit code 2, exactly one non-empty line on
stderr of the form `error: <location>: <what>`, the location naming the file
and line (or the config key / flag), and no file written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

GOOD = {"id": "p1", "prompt": "What is 2 + 3?", "metadata": {"expected_answer": "5"}}
GOOD2 = {"id": "p2", "prompt": "What is 4 + 4?", "metadata": {"expected_answer": "8"}}


def run_script(script: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line, after checking the exit code and the one-line shape."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


class CreateData:
    """create_data.py --steps generate with datasets from a config in tmp_path."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.out = tmp_path / "out.jsonl"
        self.samples = tmp_path / "out.samples.jsonl"

    def config_for(self, dataset: Path, **extra) -> Path:
        return write_config(self.tmp / "config.json", {"datasets": [{"path": str(dataset)}], **extra})

    def run(self, config: Path, *extra):
        before = snapshot(self.tmp)
        proc = run_script("create_data.py", "--config", config, "--output", self.out, *extra)
        line = error_line(proc)
        assert not self.out.exists()
        assert not self.samples.exists()
        assert snapshot(self.tmp) == before, "a failed stage wrote or changed files"
        return line


@pytest.fixture
def cd(tmp_path):
    return CreateData(tmp_path)


def test_bad_json_line_names_file_and_line(cd, tmp_path):
    data = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), '{"prompt": "What is 1 + 1?",', json.dumps(GOOD2)])
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line.startswith(f"error: {data}:2: not valid JSON"), line


def test_record_missing_prompt(cd, tmp_path):
    data = write_lines(tmp_path / "noprompt.jsonl",
                       [json.dumps(GOOD), json.dumps({"id": "x", "metadata": {"expected_answer": "1"}})])
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line.startswith(f"error: {data}:2: prompt: missing"), line


def test_record_with_wrong_type(cd, tmp_path):
    data = write_lines(tmp_path / "wrongtype.jsonl",
                       [json.dumps(GOOD), json.dumps(GOOD2),
                        json.dumps({"id": "x", "prompt": 5, "metadata": {"expected_answer": "5"}})])
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line.startswith(f"error: {data}:3: prompt: expected a non-empty string"), line
    assert "got 5" in line


def test_record_missing_expected_answer(cd, tmp_path):
    data = write_lines(tmp_path / "noanswer.jsonl", [json.dumps(GOOD), json.dumps({"id": "x", "prompt": "Hi?"})])
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line.startswith(f"error: {data}:2: metadata.expected_answer: missing"), line


def test_blank_lines_keep_file_line_numbers(cd, tmp_path):
    data = write_lines(tmp_path / "blank.jsonl", ["", json.dumps(GOOD), "   ", "[1, 2]"])
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line.startswith(f"error: {data}:4: expected a JSON object, got list"), line


def test_duplicate_id(cd, tmp_path):
    data = write_lines(tmp_path / "dup.jsonl", [json.dumps(GOOD), json.dumps(GOOD2), json.dumps(GOOD)])
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line.startswith(f"error: {data}:3: id: 'p1' appears twice"), line


def test_empty_dataset_file(cd, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line == f"error: {data}: file is empty (no records)", line


def test_missing_dataset_file(cd, tmp_path):
    data = tmp_path / "absent.jsonl"
    line = cd.run(cd.config_for(data), "--steps", "generate")
    assert line == f"error: {data}: dataset file not found", line


def test_config_unknown_key(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD)])
    config = cd.config_for(data, temprature=0.5)
    line = cd.run(config, "--steps", "generate")
    assert line.startswith(f"error: {config}: unknown key 'temprature'"), line
    assert "did you mean 'temperature'" in line


def test_config_nested_unknown_key(cd, tmp_path):
    config = write_config(tmp_path / "config.json", {"task": {"n_train": 3, "difficulty": "easy"}})
    line = cd.run(config, "--steps", "generate")
    assert line.startswith(f"error: {config}: unknown key 'task.difficulty'"), line


def test_config_wrong_value_type(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD)])
    config = cd.config_for(data, temperature="hot")
    line = cd.run(config, "--steps", "generate")
    assert line == f"error: {config}: temperature: expected a number, got 'hot'", line


def test_yaml_config_syntax_error(cd, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("k: 1\ntask: {n_train: 3\nmax_new_tokens: 8\n")
    line = cd.run(config, "--steps", "generate")
    assert line.startswith(f"error: {config}: not valid yaml"), line
    assert "line" in line  # the parser's own position


def test_combination_that_cannot_run_stops_before_any_work(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD)])
    config = cd.config_for(data, reward_config={"type": "local"}, filter_strategy="correct")
    line = cd.run(config, "--steps", "generate")
    assert line.startswith(f"error: {config}: filter_strategy: 'correct' keeps verified-correct samples"), line


def test_missing_model_path(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD), json.dumps(GOOD2)])
    line = cd.run(cd.config_for(data), "--steps", "generate", "--model_name", "/nonexistent/model")
    assert line.startswith("error: model /nonexistent/model: no such local checkpoint"), line


def test_model_dir_without_config_json(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD)])
    not_a_model = tmp_path / "notamodel"
    not_a_model.mkdir()
    line = cd.run(cd.config_for(data), "--steps", "generate", "--model_name", not_a_model)
    assert line == f"error: model path {not_a_model}: no config.json (not a transformers checkpoint)", line


def test_missing_config_file(cd, tmp_path):
    config = tmp_path / "nope.yaml"
    line = cd.run(config, "--steps", "generate")
    assert line == f"error: {config}: config file not found", line


def test_unknown_step_flag(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD)])
    line = cd.run(cd.config_for(data), "--steps", "generate,bogus")
    assert line.startswith("error: --steps: unknown step 'bogus'"), line


def test_bad_set_override(cd, tmp_path):
    data = write_lines(tmp_path / "ok.jsonl", [json.dumps(GOOD)])
    config = cd.config_for(data)
    line = cd.run(config, "--steps", "generate", "--set", "max_new_tokens=0")
    assert line == f"error: {config}: max_new_tokens: 0 must be >= 1", line


def test_every_step_validates_before_writing(cd, tmp_path):
    """Without --steps (all four steps) a bad line still stops everything before a write."""
    data = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "not json"])
    line = cd.run(cd.config_for(data))
    assert line.startswith(f"error: {data}:2: not valid JSON"), line
    for sibling in ("out.judged.jsonl", "out.rationales.jsonl", "out.config.json"):
        assert not (tmp_path / sibling).exists()


def test_run_dir_not_created_on_bad_input(tmp_path):
    data = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "not json"])
    config = write_config(tmp_path / "config.json", {"datasets": [{"path": str(data)}]})
    run_dir = tmp_path / "run"
    proc = run_script("create_data.py", "--config", config, "--run_dir", run_dir, "--steps", "generate")
    assert error_line(proc).startswith(f"error: {data}:2: not valid JSON")
    assert not run_dir.exists()


def samples_file(path: Path, records: list[dict | str]) -> Path:
    return write_lines(path, [r if isinstance(r, str) else json.dumps(r) for r in records])


def sample(i: int, **extra) -> dict:
    return {"id": f"p{i}#0", "prompt_id": f"p{i}", "prompt": f"What is {i} + 1?",
            "metadata": {"expected_answer": str(i + 1)}, "response": f"Answer: {i + 1}",
            "finish_reason": "stop", "num_tokens": 4, **extra}


def judge_run(tmp_path: Path, source: Path) -> str:
    out = tmp_path / "judged.jsonl"
    before = snapshot(tmp_path)
    proc = run_script("judge.py", "--input", source, "--output", out)
    line = error_line(proc)
    assert not out.exists()
    assert snapshot(tmp_path) == before
    return line


def test_judge_line_without_response(tmp_path):
    bad = sample(2)
    del bad["response"]
    source = samples_file(tmp_path / "s.jsonl", [sample(1), bad, sample(3)])
    line = judge_run(tmp_path, source)
    assert line.startswith(f"error: {source}:2: response: missing"), line


def test_judge_bad_json_line(tmp_path):
    source = samples_file(tmp_path / "s.jsonl", [sample(1), sample(2), '{"id": "p3#0", "resp'])
    line = judge_run(tmp_path, source)
    assert line.startswith(f"error: {source}:3: not valid JSON"), line


def test_judge_empty_input(tmp_path):
    source = tmp_path / "s.jsonl"
    source.write_text("\n")
    line = judge_run(tmp_path, source)
    assert line == f"error: {source}: file is empty (no records)", line


def test_judge_line_number_counts_blank_lines(tmp_path):
    bad = sample(2)
    del bad["response"]
    source = samples_file(tmp_path / "s.jsonl", ["", sample(1), bad])
    line = judge_run(tmp_path, source)
    assert line.startswith(f"error: {source}:3: response: missing"), line


def train_run(tmp_path: Path, train_file: Path) -> str:
    out = tmp_path / "model"
    before = snapshot(tmp_path)
    started = time.perf_counter()
    proc = run_script("train.py", "--train_file", train_file, "--output_dir", out,
                      "--base_model", "/nonexistent/never-loaded")
    line = error_line(proc)
    assert time.perf_counter() - started < 60
    assert not out.exists() and not (tmp_path / "model.partial").exists()
    assert snapshot(tmp_path) == before
    return line


def test_train_empty_file(tmp_path):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("")
    line = train_run(tmp_path, train_file)
    assert line.startswith(f"error: {train_file}: no training examples"), line


def test_train_record_without_response(tmp_path):
    spec = {"system_prompt": "s", "k": 0, "few_shot_file": "", "use_chat_template": True}
    train_file = samples_file(tmp_path / "train.jsonl", [
        {"prompt_text": "Q1", "response": "A1", "prompt_spec": spec},
        {"prompt_text": "Q2", "prompt_spec": spec},
    ])
    line = train_run(tmp_path, train_file)
    assert line.startswith(f"error: {train_file}:2: response: missing or not a string"), line


def test_train_record_without_prompt_spec(tmp_path):
    train_file = samples_file(tmp_path / "train.jsonl", [{"prompt_text": "Q1", "response": "A1"}])
    line = train_run(tmp_path, train_file)
    assert line == f"error: {train_file}:1: prompt_spec: missing", line


def test_train_missing_file(tmp_path):
    train_file = tmp_path / "absent.jsonl"
    line = train_run(tmp_path, train_file)
    assert line == f"error: {train_file}: file not found", line


def test_train_iteration_zero(tmp_path):
    train_file = samples_file(tmp_path / "train.jsonl", [{"prompt_text": "Q", "response": "A"}])
    proc = run_script("train.py", "--train_file", train_file, "--iteration", "0", "--output_dir", tmp_path / "m")
    assert error_line(proc).startswith("error: --iteration 0: training starts at iteration 1")
    assert not (tmp_path / "m").exists()


# --- judge: numeric expected answers (seed 000 allows them), and no empty or half output file ----------

def test_judge_accepts_numeric_expected_answers(tmp_path):
    rows = [sample(1, metadata={"expected_answer": 2}), sample(2, metadata={"expected_answer": 3.0}, response="Answer: 3"),
            sample(3, metadata={"expected_answer": 4}, response="Answer: 5"),
            sample(4, metadata={"expected_answer": 1e-07}, response="Answer: 0.0000001")]
    source = samples_file(tmp_path / "s.jsonl", rows)
    out = tmp_path / "judged.jsonl"
    proc = run_script("judge.py", "--input", source, "--output", out)
    assert proc.returncode == 0, proc.stderr
    judged = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["predicted"], r["is_correct"]) for r in judged] == [
        ("p1#0", "2", True), ("p2#0", "3", True), ("p3#0", "5", False), ("p4#0", "0.0000001", True)]
    assert judged[0]["metadata"] == {"expected_answer": 2}  # the sample is kept as it came
    assert not (tmp_path / "judged.jsonl.partial").exists()


@pytest.mark.parametrize("answer, expected", [
    ("NaN", "metadata.expected_answer: expected a string or a finite number, got nan"),
    ("Infinity", "metadata.expected_answer: expected a string or a finite number, got inf"),
    ("true", "metadata.expected_answer: expected a string or number, got True"),
    ("[1]", "metadata.expected_answer: expected a string or number, got [1]"),
])
def test_judge_unusable_expected_answer_names_file_and_line(tmp_path, answer, expected):
    text = json.dumps(sample(2)).replace('"expected_answer": "3"', f'"expected_answer": {answer}')
    source = samples_file(tmp_path / "s.jsonl", [sample(1), text, sample(3)])
    assert judge_run(tmp_path, source) == f"error: {source}:2: {expected}"


def test_judge_missing_expected_answer_names_file_and_line(tmp_path):
    source = samples_file(tmp_path / "s.jsonl", [sample(1), sample(2, metadata={})])
    assert judge_run(tmp_path, source) == (
        f"error: {source}:2: metadata.expected_answer: missing (math scoring needs it)")


class FailingReward:
    """Scores like the math reward until it has scored `good` records, then fails."""

    name = "failing"

    def __init__(self, good: int, error: BaseException):
        self.left, self.error = good, error

    def score(self, records):
        if self.left < len(records):
            raise self.error
        self.left -= len(records)
        return [{"reward_score": 1.0, "is_correct": True, "answer_found": True} for _ in records]


@pytest.mark.parametrize("error", [RuntimeError("scorer crashed"), KeyboardInterrupt()])
def test_judge_by_hand_builds_its_output_aside_and_resumes(tmp_path, monkeypatch, error):
    from selftrain.config import Config
    from selftrain.stages import judge

    source = samples_file(tmp_path / "s.jsonl", [sample(i) for i in range(5)])
    out, partial = tmp_path / "judged.jsonl", tmp_path / "judged.jsonl.partial"
    monkeypatch.setattr(judge, "CHUNK", 2)
    monkeypatch.setattr(judge, "get_reward", lambda config: FailingReward(2, error))
    with pytest.raises(type(error)):
        judge.judge_file(Config(), source, out, aside=True)
    assert not out.exists()  # a half file never sits where a finished one would
    assert [json.loads(line)["id"] for line in partial.read_text().splitlines()] == ["p0#0", "p1#0"]

    monkeypatch.setattr(judge, "get_reward", lambda config: FailingReward(3, error))  # only the 3 left to do
    metrics = judge.judge_file(Config(), source, out, aside=True)
    assert metrics["samples"] == 5 and not partial.exists()
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"p{i}#0" for i in range(5)]


@pytest.mark.parametrize("aside", [False, True])
def test_judge_failing_before_any_record_leaves_no_file(tmp_path, monkeypatch, aside):
    from selftrain.config import Config
    from selftrain.stages import judge

    source = samples_file(tmp_path / "s.jsonl", [sample(1), sample(2)])
    monkeypatch.setattr(judge, "get_reward", lambda config: FailingReward(0, RuntimeError("down")))
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError):
        judge.judge_file(Config(), source, tmp_path / "judged.jsonl", aside=aside)
    assert snapshot(tmp_path) == before


def test_judge_in_a_run_keeps_the_unfinished_file_to_resume(tmp_path, monkeypatch):
    """In a run the marker tells finished from unfinished: the timestamped file is appended to on rerun."""
    from selftrain.config import Config
    from selftrain.stages import judge

    source = samples_file(tmp_path / "s.jsonl", [sample(i) for i in range(3)])
    out = tmp_path / "judged_20250101-000000.jsonl"
    monkeypatch.setattr(judge, "CHUNK", 1)
    monkeypatch.setattr(judge, "get_reward", lambda config: FailingReward(1, RuntimeError("down")))
    with pytest.raises(RuntimeError):
        judge.judge_file(Config(), source, out)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["p0#0"]
