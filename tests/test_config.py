"""Tests for selftrain.config: loading, precedence, validation messages, shipped configs."""

import json
from pathlib import Path

import pytest

from selftrain.checks import check_runnable
from selftrain.config import Config, DatasetConfig, load_config, parse_set_overrides
from selftrain.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIGS = sorted(REPO_ROOT.glob("configs/*.yaml")) + sorted(REPO_ROOT.glob("configs/*.json"))


def write(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, overrides=None) -> str:
    with pytest.raises(InputError) as info:
        load_config(path, overrides)
    return str(info.value)


# --- defaults and file formats -------------------------------------------------------

def test_defaults_validate():
    config = load_config()
    assert config == Config()
    assert config.validate() is config
    assert config.base_model_path == "smollm2-135m"
    assert config.task.difficulties == ["easy"]
    check_runnable(config)


def test_yaml_file_loads(tmp_path):
    path = write(tmp_path, "run.yaml", """
name: mine
num_rounds: 5
learning_rate: 3e-4          # YAML 1.1 reads this as a string; it must still become a float
temperature: 0.9
rationalize: false
task: {difficulties: [easy, hard], n_train: 10}
reward_config: {type: rule_based, rule_type: math}
datasets:
  - {path: data/a.jsonl, difficulty: medium, weight: 2}
""")
    config = load_config(path)
    assert config.name == "mine"
    assert config.num_rounds == 5
    assert config.learning_rate == pytest.approx(3e-4) and isinstance(config.learning_rate, float)
    assert config.temperature == 0.9
    assert config.rationalize is False
    assert config.task.difficulties == ["easy", "hard"]
    assert config.task.n_train == 10
    assert config.task.n_test == 200  # unset nested keys keep their defaults
    assert config.datasets == [DatasetConfig(path="data/a.jsonl", difficulty="medium", weight=2.0)]


def test_json_file_loads(tmp_path):
    path = write(tmp_path, "run.json", json.dumps({"num_generations_per_prompt": 8, "top_p": 0.9,
                                                   "task": {"seed": 3}}))
    config = load_config(path)
    assert (config.num_generations_per_prompt, config.top_p, config.task.seed) == (8, 0.9, 3)


def test_empty_yaml_is_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "empty.yaml", "# nothing\n")) == Config()


def test_missing_file(tmp_path):
    assert "config file not found" in error_of(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name, text, expected", [
    ("bad.yaml", "num_rounds: [1,\n", "not valid yaml"),
    ("bad.json", "{\"num_rounds\": 1,", "not valid json"),
    ("list.yaml", "- 1\n- 2\n", "expected a mapping of keys at the top level"),
])
def test_unparseable_file(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


# --- unknown keys and bad values -------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("bogus: 1\n", "unknown key 'bogus'"),
    ("learning_rat: 0.1\n", "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    ("task: {bogus: 1}\n", "unknown key 'task.bogus'"),
    ("task: {n_trian: 5}\n", "unknown key 'task.n_trian' (did you mean 'task.n_train'?)"),
    ("reward_config: {api_kye: x}\n", "unknown key 'reward_config.api_kye' (did you mean 'reward_config.api_key'?)"),
    ("datasets: [{path: a.jsonl, wieght: 2}]\n",
     "unknown key 'datasets[0].wieght' (did you mean 'datasets[0].weight'?)"),
    ("datasets: [{path: a.jsonl, zzz: 2}]\n", "unknown key 'datasets[0].zzz'"),  # nothing close: no hint
])
def test_unknown_key_names_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, "run.yaml", text)
    assert error_of(path) == f"{path}: {expected}"


@pytest.mark.parametrize("text, key, expected", [
    ("num_rounds: three\n", "num_rounds", "expected an integer, got 'three'"),
    ("num_rounds: 2.5\n", "num_rounds", "expected an integer, got 2.5"),
    ("learning_rate: fast\n", "learning_rate", "expected a number"),
    ("temperature: true\n", "temperature", "expected a number, got True"),
    ("rationalize: maybe\n", "rationalize", "expected true or false"),
    ("task: 5\n", "task", "expected a mapping"),
    ("task: {difficulties: 3}\n", "task.difficulties", "expected a list"),
    ("task: {n_train: [1]}\n", "task.n_train", "expected an integer"),
    ("system_prompt: [a]\n", "system_prompt", "expected a string"),
    ("datasets: [3]\n", "datasets[0]", "expected a mapping"),
    ("top_p: 0\n", "top_p", "must be in (0, 1]"),
    ("top_p: 1.5\n", "top_p", "must be in (0, 1]"),
    ("temperature: -1\n", "temperature", "-1.0 must be >= 0"),
    ("top_k: -1\n", "top_k", "-1 must be >= 0"),
    ("batch_size: 0\n", "batch_size", "0 must be >= 1"),
    ("learning_rate: 0\n", "learning_rate", "must be > 0"),
    ("warmup_ratio: 1\n", "warmup_ratio", "must be in [0, 1)"),
    ("filter_strategy: best\n", "filter_strategy", "'best' is not one of correct, top_k_percent"),
    ("generation: {backend: vllm}\n", "generation.backend",
     "'vllm' is not one of auto, selftrain, selftrain_int8, hf, llama_cpp, openai"),
    ("generation: {gguf_type: q4_0}\n", "generation.gguf_type", "'q4_0' is not one of q8_0, f16, bf16, f32"),
    ("generation: {backend: openai}\n", "generation.base_url", "missing: the openai backend needs the server's URL"),
    ("generation: {max_concurrency: 0}\n", "generation.max_concurrency", "0 must be >= 1"),
    ("method: dpo\n", "method", "'dpo' is not one of star, expert_iteration"),
    ("temperature: .nan\n", "temperature", "expected a finite number, got nan"),
    ("learning_rate: .inf\n", "learning_rate", "expected a finite number, got inf"),
    ("dtype: int8\n", "dtype", "'int8' is not one of"),
    ("task: {difficulties: [easy, insane]}\n", "task.difficulties[1]", "'insane' is not one of"),
    ("reward_config: {type: magic}\n", "reward_config.type", "'magic' is not one of"),
    ("datasets: [{difficulty: easy}]\n", "datasets[0].path", "missing"),
    ("datasets: [{path: a.jsonl, weight: 0}]\n", "datasets[0].weight", "must be > 0"),
])
def test_bad_value_names_file_and_key(tmp_path, text, key, expected):
    path = write(tmp_path, "run.yaml", text)
    message = error_of(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message


def test_bad_override_value_is_input_error():
    with pytest.raises(InputError, match=r"^config: top_p: "):
        load_config(None, {"top_p": 0})


# --- precedence -----------------------------------------------------------------------------

def test_precedence_defaults_file_overrides(tmp_path):
    path = write(tmp_path, "run.yaml", "num_rounds: 5\ntemperature: 0.9\ntask: {n_train: 50, seed: 2}\n")
    config = load_config(path, {"num_rounds": 7, "temperature": None, "task.n_train": 9, "lora_r": "4"})
    assert config.num_rounds == 7  # override beats file
    assert config.temperature == 0.9  # None override: file value kept
    assert config.task.n_train == 9  # dotted override reaches the nested section
    assert config.task.seed == 2  # ...without dropping the file's other nested keys
    assert config.lora_r == 4  # CLI strings are coerced
    assert config.max_new_tokens == Config().max_new_tokens  # untouched: default


def test_override_errors_name_the_file(tmp_path):
    path = write(tmp_path, "run.yaml", "num_rounds: 5\n")
    assert error_of(path, {"num_rounds": 0}) == f"{path}: num_rounds: 0 must be >= 1"


def test_list_override_from_comma_string():
    assert load_config(None, {"task.difficulties": "easy, medium"}).task.difficulties == ["easy", "medium"]


def test_parse_set_overrides():
    assert parse_set_overrides(["k=2", "name=run one", "task.n_train=10", "rationalize=false", "top_p=0.5"]) == {
        "k": 2, "name": "run one", "task.n_train": 10, "rationalize": False, "top_p": 0.5,
    }
    with pytest.raises(InputError, match="expected key=value"):
        parse_set_overrides(["k2"])


# --- shipped configs -------------------------------------------------------------------------

def test_there_are_shipped_configs():
    assert len(SHIPPED_CONFIGS) >= 1


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses_validates_and_is_supported(path):
    config = load_config(path)
    assert config.validate(str(path)) is config
    check_runnable(config, str(path))


# --- check_runnable and to_dict ---------------------------------------------------------------

@pytest.mark.parametrize("overrides, expected", [
    ({"reward_config.type": "local", "filter_strategy": "correct"},
     "run.yaml: filter_strategy: 'correct' keeps verified-correct samples, but reward type 'local'"),
    ({"reward_config.type": "api", "filter_strategy": "correct"}, "reward type 'api' gives scores"),
    ({"reward_config.type": "script", "filter_strategy": "threshold", "balance_by": "answer"},
     "run.yaml: balance_by: 'answer' balances metadata.expected_answer classes"),
    ({"reward_config.rule_type": "code", "balance_by": "answer"}, "balance_by: 'answer' balances"),
])
def test_check_runnable_refuses_combinations_that_cannot_work(overrides, expected):
    config = load_config(None, overrides)  # each value is valid on its own
    with pytest.raises(InputError, match=expected.replace("(", r"\(")):
        check_runnable(config, "run.yaml")


@pytest.mark.parametrize("overrides", [
    {"reward_config.type": "local", "filter_strategy": "top_k_percent"},
    {"reward_config.rule_type": "code"}, {"reward_config.rule_type": "json"},
    {"reward_config.rule_type": "regex", "balance_by": "category"},
    {"dataset_selection_strategy": "round_robin"}, {"dataset_selection_strategy": "random_weighted"},
])
def test_check_runnable_accepts_every_seed000_value(overrides):
    check_runnable(load_config(None, overrides))


def test_qlora_without_4bit_support_stops_with_a_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    config = load_config(None, {"training_method": "qlora"})
    with pytest.raises(InputError, match="run.yaml: training_method: qlora needs bitsandbytes 4-bit"):
        check_runnable(config, "run.yaml")


def test_enable_difficulty_curriculum_needs_the_curriculum_strategy():
    with pytest.raises(InputError, match="enable_difficulty_curriculum: true needs dataset_selection_strategy"):
        load_config(None, {"enable_difficulty_curriculum": True, "dataset_selection_strategy": "round_robin"})
    load_config(None, {"enable_difficulty_curriculum": True, "dataset_selection_strategy": "difficulty_curriculum"})


def test_to_dict_redacts_api_key(tmp_path):
    config = load_config(None, {"reward_config.api_key": "sk-secret"})
    data = config.to_dict()
    assert data["reward_config"]["api_key"] == "<redacted>"
    assert "sk-secret" not in json.dumps(data)
    assert config.reward_config.api_key == "sk-secret"  # the config itself keeps it
    assert config.to_dict(redact=False)["reward_config"]["api_key"] == "sk-secret"
    assert data["num_rounds"] == config.num_rounds and data["task"]["n_train"] == config.task.n_train
    from selftrain.runs import StageOutput

    out = StageOutput(tmp_path / "samples.jsonl", tmp_path / "samples.done")
    out.finish(config, {"n": 1}, {"stage": "generate"})
    text = (tmp_path / "samples.done").read_text()
    saved = json.loads(text)
    assert saved["stage"] == "generate" and saved["metrics"]["n"] == 1
    assert saved["config"]["reward_config"]["api_key"] == "<redacted>" and "sk-secret" not in text


def test_to_dict_leaves_empty_api_key_empty():
    assert Config().to_dict()["reward_config"]["api_key"] == ""


def test_dotted_override_through_a_plain_value_is_an_input_error():
    from selftrain.config import load_config

    with pytest.raises(InputError, match="num_rounds: expected an integer"):
        load_config(None, {"num_rounds.x": 3})


def test_dotted_override_into_a_scalar_from_the_file_is_an_input_error(tmp_path):
    from selftrain.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("task: 5\n")
    with pytest.raises(InputError, match="task.n_train: 'task' is not a section"):
        load_config(path, {"task.n_train": 3})


# --- the generation: section and keys that moved ---------------------------------------------

def test_set_overrides_reach_the_generation_section():
    overrides = parse_set_overrides(["generation.backend=openai", "generation.base_url=http://127.0.0.1:8000/v1",
                                     "generation.max_concurrency=3", "method=expert_iteration"])
    config = load_config(None, overrides)
    assert config.generation.backend == "openai" and config.generation.max_concurrency == 3
    assert config.generation.base_url == "http://127.0.0.1:8000/v1" and config.method == "expert_iteration"
    assert config.generation.api == "completions"  # unset keys of the section keep their defaults
    with pytest.raises(InputError, match=r"^config: generation.base_url: missing"):
        load_config(None, parse_set_overrides(["generation.backend=openai"]))


def test_set_generation_backend_through_a_stage_command_line(tmp_path):
    from selftrain.cli import base_parser, resolve_config

    path = write(tmp_path, "run.yaml", "generation: {backend: hf}\n")
    args = base_parser("test").parse_args(["--config", str(path), "--set", "generation.backend=openai",
                                           "--set", "generation.base_url=http://127.0.0.1:9/v1"])
    config = resolve_config(args, {})
    assert (config.generation.backend, config.generation.base_url) == ("openai", "http://127.0.0.1:9/v1")


def test_the_old_generation_engine_key_says_where_it_went(tmp_path):
    path = write(tmp_path, "run.yaml", "generation_engine: hf\n")
    assert error_of(path) == f"{path}: 'generation_engine' is now 'generation.backend' (same values)"
    assert error_of(None, parse_set_overrides(["generation_engine=hf"])) == (
        "config: 'generation_engine' is now 'generation.backend' (same values)")


def test_each_section_validates_itself():
    from selftrain.config import GenerationConfig, RewardConfig, TaskConfig

    with pytest.raises(InputError, match=r"^f.yaml: reward_config.api_timeout: 0 must be > 0$"):
        RewardConfig(api_timeout=0).validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: task.n_train/n_test: must be >= 1$"):
        TaskConfig(n_test=0).validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: datasets\[2\].format: 'csv' is not one of auto, seed000, gsm8k$"):
        DatasetConfig(path="a.jsonl", format="csv").validate("f.yaml", 2)
    with pytest.raises(InputError, match=r"^f.yaml: generation.timeout: 0 must be > 0$"):
        GenerationConfig(timeout=0).validate("f.yaml")
    for section in (RewardConfig(), TaskConfig(), GenerationConfig()):
        section.validate("f.yaml")
    DatasetConfig(path="a.jsonl").validate("f.yaml", 0)


def test_self_rewarding_and_dpo_sections():
    from selftrain.config import DPOSection, SelfRewardingConfig

    with pytest.raises(InputError, match=r"^f.yaml: self_rewarding.judge_samples: 0 must be >= 1$"):
        SelfRewardingConfig(judge_samples=0).validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: self_rewarding.length_control: 1.5 must be in \[0, 1\]$"):
        SelfRewardingConfig(length_control=1.5).validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: dpo.loss_type: 'xyz' is not one of sigmoid, cal_dpo, dr_dpo, "):
        DPOSection(loss_type="xyz").validate("f.yaml")
    for loss in ("sigmoid", "cal_dpo", "dr_dpo", "ipo", "hinge", "robust"):
        DPOSection(loss_type=loss).validate("f.yaml")
    config = load_config(None, {"method": "self_rewarding", "task.name": "ifeval", "dpo.beta": 0.2,
                                "self_rewarding.judge_samples": 2})
    assert (config.dpo.beta, config.self_rewarding.judge_samples, config.task.name) == (0.2, 2, "ifeval")


# --- python -m selftrain.config CONFIG KEY (the Makefile reads num_rounds and method with it) ----

def config_value(*args) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "selftrain.config", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_module_prints_one_resolved_value(tmp_path):
    path = write(tmp_path, "run.yaml", "num_rounds: 5\nmethod: expert_iteration\ngeneration: {backend: hf}\n")
    for key, expected in (("num_rounds", "5"), ("method", "expert_iteration"), ("generation.backend", "hf"),
                          ("temperature", str(Config().temperature))):
        proc = config_value(path, key)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected + "\n", ""), key


@pytest.mark.parametrize("args, expected", [
    (("{path}", "num_roundz"), "error: {path}: no key 'num_roundz'"),
    (("{path}", "num_rounds.x"), "error: {path}: no key 'num_rounds.x'"),
    (("{missing}", "num_rounds"), "error: {missing}: config file not found"),
    (("{path}",), "error: usage: python -m selftrain.config CONFIG KEY"),
])
def test_module_bad_file_or_key_is_one_error_line_and_exit_2(tmp_path, args, expected):
    names = {"path": write(tmp_path, "run.yaml", "num_rounds: 5\n"), "missing": tmp_path / "nope.yaml"}
    proc = config_value(*(a.format(**names) for a in args))
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected.format(**names) + "\n")

