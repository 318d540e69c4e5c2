"""The seed's `.env` reaching an API, and the one token-limit rule of distillation.

Covered: which backend `distill.teacher_generation.backend: auto` gives for each kind of teacher name
(`teacher_generation`: a checkpoint on disk, `trained`, the embedded model, a hub id, a served name, with
and without a base URL from the config or $OPENAI_BASE_URL); the `.env`-only configuration resolves to
OpenAI's API with chat completions and, without OPENAI_API_KEY, is refused by the key check; teacher
replies counted with the student's tokenizer against `max_new_tokens` (`check_targets_fit`), and the config
no longer compares `max_new_tokens` with `teacher_max_tokens` (tokens of two tokenizers). The teacher
stage itself, over real HTTP, is in tests/test_teacher_stage.py.
"""
from __future__ import annotations

import pytest

from selftrain.checks import check_runnable, check_targets_fit, student_tokens
from selftrain.config import DISTILL_ENV, load_config
from selftrain.errors import InputError
from selftrain.stages.teacher import OPENAI_URL, check_key, resolve_teacher, teacher_generation

SEED_ENV = {"DATASET_NAME": "", "TRAIN_SAMPLES": "200", "RANDOM_SEED": "42", "MAX_NEW_TOKENS": "35",
            "BATCH_SIZE": "8", "USE_4BIT": "False", "GPT4_MODEL": "gpt-4.1-nano-2025-04-14",
            "GPT4_MAX_TOKENS": "150", "GPT4_TEMPERATURE": "0.3", "DRY_RUN": "False"}
DISTILL = {"method": "distill", "task": {"name": "yesno"}, "reward_config": {"type": "rule_based", "rule_type": "yesno"}}


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*DISTILL_ENV, "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def teacher(name: str, **generation):
    return load_config(None, {**DISTILL, "distill": {"teacher_model": name, "teacher_generation": generation}})


def decided(config, environ=None) -> tuple[str, str, str]:
    gen, _ = teacher_generation(config, environ or {})
    return gen.backend, gen.api, gen.base_url


def test_the_seed_env_alone_resolves_to_openai_chat_and_without_its_key_is_refused(clean_env):
    for name, value in SEED_ENV.items():
        clean_env.setenv(name, value)
    config = load_config(None, {k: v for k, v in DISTILL.items()})
    assert config.distill.teacher_model == "gpt-4.1-nano-2025-04-14"
    assert config.distill.teacher_generation.backend == "auto"  # nothing about the teacher but the name
    gen = resolve_teacher(config).distill.teacher_generation
    assert (gen.backend, gen.api, gen.base_url, gen.api_key_env) == ("openai", "chat", OPENAI_URL, "OPENAI_API_KEY")
    with pytest.raises(InputError) as exc:
        check_key(config)
    assert str(exc.value) == (f"distill.teacher_generation.api_key_env: $OPENAI_API_KEY is not set: the teacher at "
                              f"{OPENAI_URL} needs a key (export it; nothing was sent)")
    clean_env.setenv("OPENAI_API_KEY", "sk-test")
    check_key(config)


def test_a_loopback_base_url_from_the_environment_needs_no_key(clean_env):
    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    config = teacher("gpt-4.1-nano-2025-04-14")
    assert decided(config, {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}) == ("openai", "chat",
                                                                             "http://127.0.0.1:8000/v1")
    check_key(config)  # teacher_requires_key: auto allows none on loopback
    with pytest.raises(InputError, match=r"\$OPENAI_API_KEY is not set: the teacher at http://127.0.0.1:8000/v1"):
        check_key(load_config(None, {**DISTILL, "distill": {"teacher_model": "gpt-x", "teacher_requires_key": "always"}}))


def test_what_a_teacher_name_can_be_decides_the_backend(clean_env, tmp_path):
    checkpoint = tmp_path / "teacher_ckpt"
    checkpoint.mkdir()
    server = {"OPENAI_BASE_URL": "http://10.0.0.5:8000/v1"}
    hub = "HuggingFaceTB/SmolLM2-360M-Instruct"
    local = ("auto", "completions", "")
    assert decided(teacher(str(checkpoint))) == local
    assert decided(teacher(str(checkpoint)), server) == local  # a checkpoint on disk stays local
    assert decided(teacher("trained")) == local
    assert decided(teacher("trained"), server) == local
    assert decided(teacher("smollm2-135m")) == local  # the embedded model
    assert decided(teacher(hub)) == local  # fetched from the hub
    assert decided(teacher(hub), server) == ("openai", "chat", server["OPENAI_BASE_URL"])  # a server serves it
    assert decided(teacher("smollm2-135m"), server) == ("openai", "chat", server["OPENAI_BASE_URL"])
    assert decided(teacher("gpt-4.1-nano-2025-04-14")) == ("openai", "chat", OPENAI_URL)
    assert decided(teacher("gpt-4.1-nano-2025-04-14"), server) == ("openai", "chat", server["OPENAI_BASE_URL"])
    # the config's base_url over the openai client's variable
    assert decided(teacher("gpt-x", base_url="http://127.0.0.1:9/v1"), server) == ("openai", "chat",
                                                                                "http://127.0.0.1:9/v1")
    # a backend set in the config is kept, whatever the name
    assert decided(teacher("gpt-x", backend="hf")) == ("hf", "completions", "")
    assert decided(teacher("gpt-x", backend="openai", base_url="http://h:1/v1")) == ("openai", "completions",
                                                                                   "http://h:1/v1")
    with pytest.raises(InputError, match=r"^\$OPENAI_BASE_URL: 'localhost:8000' is not an http\(s\) URL$"):
        teacher_generation(teacher("gpt-x"), {"OPENAI_BASE_URL": "localhost:8000"})
    _, why = teacher_generation(teacher("gpt-4.1-nano-2025-04-14"), {})
    assert "no checkpoint, embedded model or hub id" in why and "$OPENAI_BASE_URL" in why


# --- token limits: the teacher's replies as the student's tokenizer counts them --------------------

REPLY = ("## Step-by-Step Reasoning\n1. 23 * 4 = 92.\n2. 92 is more than 60.\n\n"
         "## Final Assessment\nBased on this analysis, the answer is: **YES**")


def test_a_target_counts_the_student_tokens_training_puts_behind_the_prompt(tokenizer):
    chat = load_config(None, DISTILL)
    n = len(tokenizer(REPLY, add_special_tokens=False)["input_ids"])
    assert student_tokens(chat, tokenizer, REPLY) == n + 1  # and the end-of-turn token
    plain = load_config(None, {**DISTILL, "use_chat_template": False})
    assert student_tokens(plain, tokenizer, REPLY) == len(tokenizer(" " + REPLY, add_special_tokens=False)["input_ids"]) + 1


def test_every_target_must_fit_in_max_new_tokens_and_the_error_names_its_line(tokenizer, tmp_path):
    n = student_tokens(load_config(None, DISTILL), tokenizer, REPLY)
    short = "## Final Assessment\nThe answer is: **NO**"
    targets = [(1, short), (4, REPLY), (7, REPLY + " Indeed.")]
    path = tmp_path / "teacher_outputs.jsonl"
    longest = student_tokens(load_config(None, DISTILL), tokenizer, targets[2][1])
    assert longest > n
    counts = check_targets_fit(load_config(None, {**DISTILL, "max_new_tokens": longest}), tokenizer, targets, path)
    assert counts == [student_tokens(load_config(None, DISTILL), tokenizer, short), n, longest]
    with pytest.raises(InputError) as exc:
        check_targets_fit(load_config(None, {**DISTILL, "max_new_tokens": n - 1}), tokenizer, targets, path)
    assert str(exc.value) == (f"{path}:4: max_new_tokens: {n - 1} is below the {n} tokens of the target made from "
                              f"this line, as the student's tokenizer counts them with its end-of-turn token (2 of 3 "
                              f"targets are longer, the longest {longest}): evaluation would cut them off before "
                              f"their final assessment; set max_new_tokens >= {longest}")


def test_the_config_no_longer_compares_token_counts_of_two_tokenizers():
    # teacher_max_tokens counts the teacher's tokens (an API's tokenizer): nothing to compare before replies exist
    check_runnable(load_config(None, {**DISTILL, "task": {"name": "yesno", "n_dev": 4}, "max_new_tokens": 100,
                                      "distill": {"teacher_max_tokens": 150}}))
