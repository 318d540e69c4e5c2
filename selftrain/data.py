"""Where prompts come from, and which of them each round takes.

Sources: the config's `datasets` (seed 000: `path`, `name`, `difficulty`,
`weight`), or the built-in task when `datasets` is empty. A local file holds
seed-000 records, or GSM8K's, IFEval's or StrategyQA's own lines (converted
here); a file holding one JSON array is StrategyQA's (its official train.json). Every
file is read and validated up front, so a bad line stops a stage before it
writes anything. Each prompt record gets `dataset` (the source's name) and,
when its source sets one, a default `difficulty`.

`dataset_selection_strategy` picks the prompts of round r (r = iteration, 1-based):

  sequential             all sources in order; with samples_per_round, round r
                         takes the r-th window of that many prompts (wrapping)
  difficulty_curriculum  round r takes the prompts of level difficulty_progression[r-1]
                         (the last level once the list runs out; by default the levels
                         present, easy first, spread evenly over num_rounds); with
                         samples_per_round, the k-th round on a level takes that level's
                         k-th window
  round_robin            round r takes source (r-1) mod #sources; with
                         samples_per_round, the k-th visit takes its k-th window
  random_weighted        samples_per_round draws (default and at most: as many as
                         there are prompts): each draw picks a source with
                         probability weight / sum(weights) among the sources with
                         prompts not yet in this round, and takes that source's
                         next prompt from a seeded shuffle (continuing across
                         rounds, reshuffled when used up); no prompt twice in a round

All of it depends only on the config (and its `seed`), so every stage, every
rerun and every machine sees the same prompts. `max_samples` then caps the round.

Evaluation data: the task's test split, `test_file`, or, when `datasets` is set
without `test_file`, `eval_holdout` of each source (a fixed draw per source,
independent of `seed`), never used for training.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.records import DIFFICULTIES, REQUIRED_BECAUSE, read_prompt_records, validate_prompt_record
from selftrain.tasks.gsm8k import convert_gsm8k_record, is_gsm8k_record, load_gsm8k
from selftrain.tasks.ifeval_format import convert_ifeval_record, is_ifeval_record
from selftrain.tasks.strategyqa import (claims_strategyqa, convert_strategyqa_record, is_json_array_file,
                                        load_strategyqa, read_strategyqa_file)


@dataclass
class Source:
    name: str
    weight: float
    records: list[dict]


TASK_SPLITS = ("train", "test", "ift", "eft", "judge_eval", "dev")  # ift, eft, judge_eval: ifeval's; dev: yesno's
SPLITS_OF_TASK = {"arithmetic": ("train", "test"), "ifeval": ("train", "test", "ift", "eft", "judge_eval"),
                  "yesno": ("train", "dev", "test")}


def _task_split(config: Config, split: str) -> list[dict]:
    """A split of the built-in task. ifeval's and yesno's splits are disjoint and drawn test first, so
    sizing a later one (IFT, EFT, the iterations' pool = train) never moves a held-out prompt."""
    t = config.task
    try:
        splits = SPLITS_OF_TASK.get(t.name, ("train", "test"))
        if split not in splits:
            raise ValueError(f"split {split!r} does not exist for task {t.name!r} (its splits: {', '.join(splits)})")
        if t.name == "yesno":
            from selftrain.tasks.yesno import generate_splits

            rows = generate_splits({"test": t.n_test, "dev": t.n_dev, "train": t.n_train}, t.seed, t.level)[split]
        elif t.name == "ifeval":
            from selftrain.tasks.instructions import generate_splits

            sr = config.self_rewarding
            sizes = {"test": t.n_test, "judge_eval": sr.judge_eval_prompts, "eft": sr.eft_prompts,
                     "ift": sr.ift_prompts, "pool": t.n_train}
            rows = generate_splits(sizes, t.seed)["pool" if split == "train" else split]
        else:
            from selftrain.tasks.arithmetic import generate_split

            train, test = generate_split(t.n_train, t.n_test, t.difficulties, t.seed)
            rows = train if split == "train" else test
    except ValueError as exc:
        raise InputError(f"task: {exc}") from None
    return [dict(validate_prompt_record(r, f"task:{t.name}:{split}", i), dataset=t.name)
            for i, r in enumerate(rows, 1)]


def load_task_split(config: Config, split: str) -> list[dict]:
    """One split of the built-in task (`TASK_SPLITS`), validated, whatever `datasets` says."""
    if split not in TASK_SPLITS:
        raise InputError(f"task split {split!r}: expected one of {', '.join(TASK_SPLITS)}")
    return _task_split(config, split)


def read_prompt_file(path: str | Path, *, required: tuple[str, ...] = (), id_prefix: str | None = None) -> list[dict]:
    """A local prompt file, validated: seed-000 records, and GSM8K's own lines
    ({question, answer: "... #### 72"}), IFEval's ({key, prompt, instruction_id_list,
    kwargs}) and StrategyQA's ({qid, question, answer: true, facts, decomposition})
    converted to them, mixed freely. A file holding one JSON array is StrategyQA's (its train.json)."""
    stem = Path(path).stem
    if Path(path).is_file() and is_json_array_file(path):
        return _checked(read_strategyqa_file(path, id_prefix), path, required)

    def convert(obj: dict, lineno: int) -> dict:
        if is_ifeval_record(obj):
            return convert_ifeval_record(obj, lineno)
        if is_gsm8k_record(obj):
            return convert_gsm8k_record(obj, lineno, stem)
        # after GSM8K: a question whose answer is not a boolean is a bad StrategyQA row, reported as such
        return convert_strategyqa_record(obj, lineno, id_prefix or stem, gsm8k_too=True) if claims_strategyqa(obj) else obj

    return read_prompt_records(path, required=required, id_prefix=id_prefix, convert=convert)


def _checked(records: list[dict], path, required: tuple[str, ...]) -> list[dict]:
    """Converted records, validated as a prompt file's are (required metadata, unique ids)."""
    checked, seen = [], set()
    for i, record in enumerate(records, 1):
        record = validate_prompt_record(record, path, i)
        for key in required:
            if key not in record["metadata"]:
                raise InputError(f"{path}: record {record['id']}: metadata.{key}: missing "
                                 f"({REQUIRED_BECAUSE.get(key, 'the reward needs it')})")
        if record["id"] in seen:
            raise InputError(f"{path}: record {record['id']}: id appears twice")
        seen.add(record["id"])
        checked.append(record)
    return checked


def _read_dataset(path: str, split: str, fmt: str, required: tuple[str, ...], id_prefix: str | None = None) -> list[dict]:
    local = Path(path).expanduser()
    if local.is_dir():
        jsonl, json_array = local / f"{split}.jsonl", local / f"{split}.json"  # .json: StrategyQA's official layout
        local = json_array if json_array.is_file() and not jsonl.exists() else jsonl
    if local.exists():
        return read_prompt_file(local, required=required, id_prefix=id_prefix)
    if fmt == "gsm8k" or "gsm8k" in path.lower():
        return [validate_prompt_record(r, path, i) for i, r in enumerate(load_gsm8k(path, split), 1)]
    if "strategyqa" in path.lower():  # a hub id such as voidful/StrategyQA
        return _checked(load_strategyqa(path, split, id_prefix), path, required)
    raise InputError(f"{path}: dataset file not found")


def required_metadata(config: Config) -> tuple[str, ...]:
    """Metadata every prompt must carry for the configured reward (checked before generation)."""
    rc = config.reward_config
    if rc.type != "rule_based":
        return ()
    return {"math": ("expected_answer",), "code": ("test_cases",),
            "regex": () if rc.regex_pattern else ("regex_pattern",),
            "ifeval": ("instruction_id_list", "kwargs"), "yesno": ("expected_answer",)}.get(rc.rule_type, ())


def needs_expected_answer(config: Config) -> bool:
    return "expected_answer" in required_metadata(config)


def _sources(config: Config) -> list[Source]:
    """Every source's prompts, validated, with `dataset` and default `difficulty` set."""
    if not config.datasets:
        return [Source(config.task.name, 1.0, _task_split(config, "train"))]
    required = required_metadata(config)
    sources, owner = [], {}
    stems = [_file_stem(ds.path, ds.split) for ds in config.datasets]
    for i, ds in enumerate(config.datasets):
        name = ds.name or stems[i]
        # records without an id are named after their file and line; two files of the same name get the entry's index
        prefix = stems[i] if stems.count(stems[i]) == 1 else f"{i}-{stems[i]}"
        rows = []
        for r in _read_dataset(ds.path, ds.split, ds.format, required, prefix):
            if r["id"] in owner:
                raise InputError(f"{ds.path}: id {r['id']!r} is also in {owner[r['id']]}; "
                                 f"ids must be unique across datasets (give records an 'id')")
            owner[r["id"]] = ds.path
            row = dict(r, dataset=name)
            if ds.difficulty and "difficulty" not in r:
                row["difficulty"] = ds.difficulty
            rows.append(row)
        sources.append(Source(name, ds.weight, rows))
    return sources


def _file_stem(path: str, split: str) -> str:
    local = Path(path).expanduser()
    return (local / f"{split}.jsonl").stem if local.is_dir() else local.stem


def _holdout(config: Config, sources: list[Source]) -> list[dict]:
    """The prompts kept out of training for evaluation (datasets without test_file), sources interleaved.

    The draw depends on the source's name only, not on `seed`: a different
    sampling seed must not move prompts between training and evaluation."""
    if not config.datasets or config.test_file or not config.eval_holdout:
        return []
    per_source = []
    for source in sources:
        n = len(source.records)
        count = min(n - 1, max(1, round(n * config.eval_holdout))) if n > 1 else 0
        per_source.append(random.Random(f"holdout:{source.name}").sample(source.records, count))
    longest = max((len(rows) for rows in per_source), default=0)
    return [rows[i] for i in range(longest) for rows in per_source if i < len(rows)]


def _window(records: list[dict], size: int, visit: int) -> list[dict]:
    """The `visit`-th (0-based) window of `size` records, wrapping around; everything when size is 0."""
    if not size or not records:
        return list(records)
    start = (visit * size) % len(records)
    return (records[start:] + records[:start])[:size] if size < len(records) else list(records)


def curriculum_level(config: Config, iteration: int, present: list[str]) -> str:
    progression = config.difficulty_progression
    if progression:
        return progression[min(iteration, len(progression)) - 1]
    levels = [d for d in DIFFICULTIES if d in present]
    if not levels:
        raise InputError("difficulty_curriculum: no prompt has a difficulty (set it per record or per dataset)")
    return levels[min(len(levels) - 1, (iteration - 1) * len(levels) // max(config.num_rounds, 1))]


def _difficulty_curriculum(config: Config, pool: list[dict], iteration: int) -> list[dict]:
    unlabeled = [r["id"] for r in pool if "difficulty" not in r]
    if unlabeled:
        raise InputError(f"difficulty_curriculum: {len(unlabeled)} prompts have no difficulty (first: "
                         f"{unlabeled[0]!r}); set it per record or with datasets[].difficulty")
    present = sorted({r["difficulty"] for r in pool})
    for r in range(1, max(iteration, config.num_rounds) + 1):  # every round's level, before round 1 starts
        wanted = curriculum_level(config, r, present)
        if wanted not in present:
            raise InputError(f"difficulty_curriculum: round {r} takes level {wanted!r}, "
                             f"but no prompt has it (levels present: {', '.join(present)})")
    level = curriculum_level(config, iteration, present)
    rows = [r for r in pool if r["difficulty"] == level]
    visit = sum(curriculum_level(config, r, present) == level for r in range(1, iteration))
    return _window(rows, config.samples_per_round, visit)


def _random_weighted(config: Config, sources: list[Source], iteration: int) -> list[dict]:
    live = [s for s in sources if s.records]
    total = sum(len(s.records) for s in live)
    per_round = min(config.samples_per_round or total, total)  # a prompt appears at most once per round
    cursors = [0] * len(live)
    orders: list[list[dict]] = [[] for _ in live]

    def take(i: int, taken: set[str]) -> dict:
        """Source i's next prompt not yet in this round: a seeded shuffle, reshuffled each pass."""
        while True:
            if cursors[i] == len(orders[i]):
                epoch = len(orders[i]) // len(live[i].records)
                shuffled = list(live[i].records)
                random.Random(f"{config.seed}:random_weighted:{live[i].name}:{epoch}").shuffle(shuffled)
                orders[i] += shuffled
            cursors[i] += 1
            record = orders[i][cursors[i] - 1]
            if record["id"] not in taken:
                return record

    chosen: list[dict] = []
    for r in range(1, iteration + 1):  # replay earlier rounds so each source continues where it stopped
        rng = random.Random(f"{config.seed}:random_weighted:round:{r}")
        chosen, taken, left = [], set(), [len(s.records) for s in live]
        for _ in range(per_round):
            open_ = [i for i in range(len(live)) if left[i]]  # sources with prompts not yet in this round
            i = rng.choices(open_, weights=[live[j].weight for j in open_])[0]
            record = take(i, taken)
            chosen.append(record)
            taken.add(record["id"])
            left[i] -= 1
    return chosen


def load_train_prompts(config: Config, iteration: int) -> list[dict]:
    """The prompts of round `iteration` under `dataset_selection_strategy`."""
    sources = _sources(config)
    held = {r["id"] for r in _holdout(config, sources)}
    if held:
        sources = [Source(s.name, s.weight, [r for r in s.records if r["id"] not in held]) for s in sources]
    pool = [r for s in sources for r in s.records]
    if not pool:
        raise InputError("datasets: no training prompts left")
    strategy, round_ = config.dataset_selection_strategy, max(iteration, 1) + config.round_offset
    if strategy == "sequential":
        records = _window(pool, config.samples_per_round, round_ - 1)
    elif strategy == "difficulty_curriculum":
        records = _difficulty_curriculum(config, pool, round_)
    elif strategy == "round_robin":
        index = (round_ - 1) % len(sources)
        visit = (round_ - 1) // len(sources)
        records = _window(sources[index].records, config.samples_per_round, visit)
    elif strategy == "random_weighted":
        records = _random_weighted(config, sources, round_)
    else:
        raise ValueError(f"unknown dataset_selection_strategy {strategy!r}")  # Config.validate refuses it
    if config.max_samples:
        records = records[: config.max_samples]
    return records


def load_eval_prompts(config: Config, split: str) -> list[dict]:
    if split not in ("train", "test"):
        raise InputError(f"--split {split!r}: expected 'train' or 'test'")
    if not config.datasets:
        records = _task_split(config, split)
    elif split == "train":
        records = load_train_prompts(config, 1)
    elif config.test_file:
        records = [dict(r, dataset=Path(config.test_file).stem) for r in
                   _read_dataset(config.test_file, "test", "auto", required_metadata(config))]
    elif config.eval_holdout:
        records = _holdout(config, _sources(config))
        log(f"evaluation: {len(records)} prompts held out of the datasets (eval_holdout={config.eval_holdout}; "
            f"set test_file to use a separate file)")
    else:
        raise InputError("config: test_file: needed for evaluation when `datasets` is set and eval_holdout is 0")
    if not records:
        raise InputError("config: no evaluation prompts (datasets too small to hold any out: set test_file "
                         "or raise eval_holdout)")
    if config.eval_max_samples:
        records = records[: config.eval_max_samples]
    return records


def describe_round(config: Config, records: list[dict]) -> dict:
    """What a round took, for the stage metrics: counts per dataset and difficulty."""
    def count(key):
        out: dict[str, int] = {}
        for r in records:
            out[r.get(key, "none")] = out.get(r.get(key, "none"), 0) + 1
        return dict(sorted(out.items()))

    return {"strategy": config.dataset_selection_strategy, "prompts": len(records),
            "per_dataset": count("dataset"), "per_difficulty": count("difficulty")}

