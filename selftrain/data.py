"""Where prompts come from: the embedded arithmetic task or the config's `datasets`.

Everything is read and validated up front, so a bad line stops a stage before
it writes anything.
"""
from __future__ import annotations

from pathlib import Path

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.records import read_prompt_records, validate_prompt_record


def _task_split(config: Config, split: str) -> list[dict]:
    from selftrain.tasks.arithmetic import generate_split

    t = config.task
    try:
        train, test = generate_split(t.n_train, t.n_test, t.difficulties, t.seed)
    except ValueError as exc:
        raise InputError(f"task: {exc}") from None
    rows = train if split == "train" else test
    return [validate_prompt_record(r, f"task:{t.name}:{split}", i) for i, r in enumerate(rows, 1)]


def _read_dataset(path: str, split: str, fmt: str, need_answer: bool) -> list[dict]:
    local = Path(path).expanduser()
    if local.is_dir():
        local = local / f"{split}.jsonl"
    if local.exists():
        return read_prompt_records(local, need_answer=need_answer)
    if fmt == "gsm8k" or "gsm8k" in path.lower():
        from selftrain.tasks.gsm8k import load_gsm8k

        return [validate_prompt_record(r, path, i) for i, r in enumerate(load_gsm8k(path, split), 1)]
    raise InputError(f"{path}: dataset file not found")


def load_train_prompts(config: Config, iteration: int, need_answer: bool = True) -> list[dict]:
    """The prompts of one iteration (round) under the `sequential` strategy."""
    if config.datasets:
        records = []
        for ds in config.datasets:
            rows = _read_dataset(ds.path, ds.split, ds.format, need_answer)
            if ds.difficulty:
                rows = [dict(r, difficulty=r.get("difficulty", ds.difficulty)) for r in rows]
            records += rows
    else:
        records = _task_split(config, "train")
    if config.samples_per_round:
        # sequential: round r takes the r-th window of samples_per_round prompts, wrapping around
        start = ((iteration - 1) * config.samples_per_round) % len(records)
        window = records[start:] + records[:start]
        records = window[: config.samples_per_round]
    if config.max_samples:
        records = records[: config.max_samples]
    return records


def load_eval_prompts(config: Config, split: str) -> list[dict]:
    if split not in ("train", "test"):
        raise InputError(f"--split {split!r}: expected 'train' or 'test'")
    if config.datasets:
        if split == "train":
            records = load_train_prompts(config, 1)
        elif config.test_file:
            records = _read_dataset(config.test_file, "test", "auto", need_answer=True)
        else:
            raise InputError("config: test_file: needed for evaluation when `datasets` is set")
    else:
        records = _task_split(config, split)
    if config.eval_max_samples:
        records = records[: config.eval_max_samples]
    return records
