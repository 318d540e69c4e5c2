"""The script reward on real subprocesses, starting with the seed's own template.

The template is read from the seed document at test time (the Python block after
"**Script Template:**"), given a `calculate_score`, and run as the seed says.
Then scripts that break the contract each way: a crash, too few lines, a score
that is not a finite number or is missing, foreign ids, a `--function` the
script ignores, a missing file, a script (and its child) that never ends.
"""
from __future__ import annotations

import json
import re
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from selftrain.config import Config, RewardConfig
from selftrain.errors import InputError
from selftrain.rewards import get_reward
from selftrain.stages.judge import judge_file

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

# The start of every hand-written test script: the seed's command line, the input read.
HEADER = """\
import argparse, json, sys
parser = argparse.ArgumentParser()
parser.add_argument('--input'); parser.add_argument('--output'); parser.add_argument('--function')
args = parser.parse_args()
items = [json.loads(line) for line in open(args.input)]
def write(rows):
    with open(args.output, 'w') as f:
        f.writelines(json.dumps(row) + '\\n' for row in rows)
"""


def seed_template() -> str:
    documents = sorted(SEEDS.glob("000_*.txt"))
    if not documents:
        pytest.skip(f"seed 000 document (000_*.txt) not found under {SEEDS}")
    _, found, after = documents[0].read_text().partition("**Script Template:**")
    block = re.search(r"```python\n(.*?)```", after, re.S)
    if not found or not block:
        pytest.skip(f"{documents[0]}: no Python block after '**Script Template:**'")
    return block.group(1)


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch) -> Path:
    """The reward's temporary folders go under tmp_path, where a test can look at them."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def template_scorer(tmp_path) -> Path:
    path = tmp_path / "my_scorer.py"
    path.write_text("def calculate_score(prompt, response):\n    return len(response) / 10\n\n" + seed_template())
    return path


def write_script(tmp_path: Path, body: str, name: str = "scorer.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def script_config(path, **reward) -> Config:
    config = Config()
    config.reward_config = RewardConfig(type="script", script_path=str(path), **reward)
    return config.validate()


def samples(n: int) -> list[dict]:
    """Judge-stage records; response i has length i + 1."""
    return [{"id": f"s{i}", "prompt_id": f"p{i // 2}", "prompt": f"question {i}", "response": "x" * (i + 1),
             "metadata": {"category": "test"}} for i in range(n)]


def failure(config: Config, records: list[dict]) -> str:
    with pytest.raises(InputError) as error:
        get_reward(config).score(records)
    return str(error.value)


def test_the_seed_template_scores_every_record(template_scorer, private_tempdir):
    records = samples(5) + [{"id": "m", "prompt_id": "pm", "response": "from messages",
                             "messages": [{"role": "user", "content": "a chat question"}], "metadata": {}}]
    reward = get_reward(script_config(template_scorer))
    results = reward.score(records)
    assert [r["reward_score"] for r in results] == [0.1, 0.2, 0.3, 0.4, 0.5, 1.3]
    assert all(r["is_correct"] is None and r["answer_found"] is True for r in results)
    assert reward.verifiable is False
    assert list(private_tempdir.iterdir()) == []  # the temporary input and output are gone


def test_the_script_gets_the_whole_record_with_a_prompt_in_ascii(tmp_path):
    seen = tmp_path / "seen.jsonl"
    spy = write_script(tmp_path, f"""
        import shutil, os
        shutil.copy(args.input, {str(seen)!r})
        write([{{**item, 'reward_score': 1, 'cwd': os.getcwd()}} for item in items])
    """)
    records = samples(1) + [{"id": "c", "prompt_id": "pc", "response": "café ☕", "prompt_text": "<rendered>",
                             "messages": [{"role": "user", "content": "naïve?"}], "metadata": {"k": 1}}]
    get_reward(script_config(spy)).score(records)
    assert seen.read_bytes().isascii()
    sent = [json.loads(line) for line in seen.read_text().splitlines()]
    assert sent[0] == records[0]
    assert sent[1] == {**records[1], "prompt": "naïve?"}  # the last user message, not the rendered prompt


def test_script_path_is_relative_to_the_current_directory_where_it_runs(tmp_path, monkeypatch):
    write_script(tmp_path, "import os\nwrite([{'reward_score': len(os.getcwd())} for item in items])\n")
    monkeypatch.chdir(tmp_path)
    results = get_reward(script_config("scorer.py")).score(samples(2))
    assert [r["reward_score"] for r in results] == [float(len(str(tmp_path)))] * 2


def test_output_is_matched_by_id_in_any_order_else_by_position(tmp_path):
    shuffled = write_script(tmp_path, """
        write([{'id': item['id'], 'reward_score': len(item['response'])} for item in reversed(items)])
    """, "shuffled.py")
    anonymous = write_script(tmp_path, """
        write([{'reward_score': len(item['response'])} for item in items])
    """, "anonymous.py")
    for script in (shuffled, anonymous):
        results = get_reward(script_config(script)).score(samples(4))
        assert [r["reward_score"] for r in results] == [1.0, 2.0, 3.0, 4.0]


def test_the_judge_stage_runs_the_template(template_scorer, tmp_path):
    source, target = tmp_path / "samples.jsonl", tmp_path / "judged.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in samples(3)))
    metrics = judge_file(script_config(template_scorer), source, target)
    judged = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["id"], r["reward_score"]) for r in judged] == [("s0", 0.1), ("s1", 0.2), ("s2", 0.3)]
    assert metrics["mean_reward"] == 0.2 and metrics["no_answer"] == 0


def test_a_crash_is_reported_with_the_tail_of_stderr(tmp_path, private_tempdir):
    script = write_script(tmp_path, """
        for i in range(40):
            print(f'progress line {i}', file=sys.stderr)
        raise ValueError('boom')
    """)
    message = failure(script_config(script), samples(2))
    assert str(script) in message and "exited with code 1" in message
    assert "ValueError: boom" in message and "progress line 39" in message
    assert "progress line 20\n" not in message  # only the last 20 lines
    kept = next(private_tempdir.iterdir())
    assert str(kept) in message and (kept / "input.jsonl").is_file()


def test_the_template_with_another_function_writes_nothing(template_scorer):
    message = failure(script_config(template_scorer, script_function="other"), samples(2))
    assert "wrote no output file (did the script handle --function other?)" in message


@pytest.mark.parametrize("body, expected", [
    ("write([{**item, 'reward_score': 1} for item in items[:-1]])", "output has 2 records for 3 input records"),
    ("write([])", "wrote an empty output file (did the script handle --function score?)"),
    ("write([{**item, 'reward_score': 'high' if i == 1 else 1} for i, item in enumerate(items)])",
     'output line 2: reward_score: expected a number, got "high"'),
    ("write([{**item, 'reward_score': None} for item in items])", "output line 1: reward_score: expected a number"),
    ("write([{**item, 'reward_score': True} for item in items])", "output line 1: reward_score: expected a number"),
    ("write([{**item, 'reward_score': float('nan')} for item in items])", "reward_score: expected a finite number"),
    ("write(items)", "output line 1: reward_score: missing"),
    ("write([{'id': 'zzz' if i == 2 else item['id'], 'reward_score': 1} for i, item in enumerate(items)])",
     "output line 3: id: \"zzz\" is not an input record's id"),
    ("write([{'id': items[0]['id'], 'reward_score': 1} for item in items])", "output line 2: id: \"s0\""),
    ("write([{'reward_score': 1}, *({**item, 'reward_score': 1} for item in items[1:])])",
     "output line 1: id: missing"),
    ("open(args.output, 'w').write('{\"reward_score\": 1}\\nnot json\\n{}\\n')", "output line 2: not valid JSON"),
])
def test_output_that_breaks_the_contract_is_an_error(tmp_path, body, expected):
    message = failure(script_config(write_script(tmp_path, body)), samples(3))
    assert expected in message and "scorer.py" in message


def test_a_script_that_never_ends_is_stopped_with_its_children(tmp_path):
    script = write_script(tmp_path, """
        import subprocess, time
        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])  # holds the output pipes
        print('still thinking', file=sys.stderr, flush=True)
        time.sleep(60)
    """)
    started = time.monotonic()
    message = failure(script_config(script, script_timeout=1.0), samples(1))
    assert time.monotonic() - started < 10
    assert "still running after script_timeout=1.0 s" in message and "still thinking" in message


@pytest.mark.parametrize("path, expected", [
    ("", "reward_config.script_path: missing"),
    ("no/such/scorer.py", "reward_config.script_path: no/such/scorer.py: file not found"),
])
def test_a_missing_script_is_reported_before_any_work(path, expected):
    with pytest.raises(InputError, match=re.escape(expected)):
        get_reward(script_config(path))
