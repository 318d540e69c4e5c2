"""Tests for selftrain.prompts: the one prompt builder shared by every stage."""

import json
from types import SimpleNamespace

import pytest

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.prompts import (
    HINT_TEMPLATE,
    MATH_EXAMPLES,
    PromptSpec,
    build_messages,
    encode_example,
    encode_prompt,
    few_shot_examples,
    load_prompt_spec,
    render_prompt,
)

SYSTEM = "Solve it. End with 'Answer: <number>'."
RECORD = {"id": "r1", "prompt": "What is 12 + 30?", "metadata": {"expected_answer": "42"}}


def user(content):
    return {"role": "user", "content": content}


def assistant(content):
    return {"role": "assistant", "content": content}


# --- build_messages -------------------------------------------------------------

def test_zero_shot_is_system_then_question():
    assert build_messages(RECORD, PromptSpec(SYSTEM)) == [
        {"role": "system", "content": SYSTEM}, user("What is 12 + 30?"),
    ]


@pytest.mark.parametrize("k", [1, 3, len(MATH_EXAMPLES)])
def test_k_few_shot_pairs_between_system_and_question(k):
    messages = build_messages(RECORD, PromptSpec(SYSTEM, k=k))
    assert len(messages) == 2 + 2 * k
    assert messages[0] == {"role": "system", "content": SYSTEM}
    for i, (question, answer) in enumerate(MATH_EXAMPLES[:k]):
        assert messages[1 + 2 * i] == user(question)
        assert messages[2 + 2 * i] == assistant(answer)
    assert messages[-1] == user("What is 12 + 30?")


def test_no_system_message_when_system_prompt_is_empty():
    assert build_messages(RECORD, PromptSpec("", k=1)) == [
        user(MATH_EXAMPLES[0][0]), assistant(MATH_EXAMPLES[0][1]), user("What is 12 + 30?"),
    ]


def test_hint_is_added_to_the_last_user_turn_only():
    plain = build_messages(RECORD, PromptSpec(SYSTEM, k=2))
    hinted = build_messages(RECORD, PromptSpec(SYSTEM, k=2), hint="42")
    assert hinted[:-1] == plain[:-1]
    assert hinted[-1] == user("What is 12 + 30?" + HINT_TEMPLATE.format(answer="42"))
    assert "The correct answer is 42." in hinted[-1]["content"]
    assert all("correct answer" not in m["content"] for m in plain)
    assert RECORD["prompt"] == "What is 12 + 30?"  # the record itself is untouched


def test_messages_record_without_system_gets_the_spec_system_prompt():
    record = {"messages": [user("2+2?"), assistant("4"), user("and 3+3?")]}
    messages = build_messages(record, PromptSpec(SYSTEM, k=1), hint="6")
    assert messages == [
        {"role": "system", "content": SYSTEM},
        user(MATH_EXAMPLES[0][0]), assistant(MATH_EXAMPLES[0][1]),
        user("2+2?"), assistant("4"), user("and 3+3?" + HINT_TEMPLATE.format(answer="6")),
    ]
    assert record["messages"][-1] == user("and 3+3?")  # not mutated by the hint


def test_messages_record_with_own_system_keeps_it_first():
    record = {"messages": [{"role": "system", "content": "Record system."}, user("Hi?")]}
    messages = build_messages(record, PromptSpec(SYSTEM, k=1))
    assert messages == [
        {"role": "system", "content": "Record system."},
        user(MATH_EXAMPLES[0][0]), assistant(MATH_EXAMPLES[0][1]),
        user("Hi?"),
    ]


# --- few-shot pool --------------------------------------------------------------------

def test_k_larger_than_builtin_pool_is_input_error():
    with pytest.raises(InputError, match=f"k={len(MATH_EXAMPLES) + 1}: only {len(MATH_EXAMPLES)} few-shot"):
        few_shot_examples(PromptSpec(SYSTEM, k=len(MATH_EXAMPLES) + 1))


def test_few_shot_file(tmp_path):
    path = tmp_path / "shots.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(3)))
    assert few_shot_examples(PromptSpec(SYSTEM, k=2, few_shot_file=str(path))) == [("q0", "a0"), ("q1", "a1")]
    with pytest.raises(InputError, match=f"k=4: only 3 few-shot examples in {path}"):
        few_shot_examples(PromptSpec(SYSTEM, k=4, few_shot_file=str(path)))


def test_few_shot_file_bad_line(tmp_path):
    path = tmp_path / "shots.jsonl"
    path.write_text('{"prompt": "q", "response": "a"}\n{"prompt": "q2"}\n')
    with pytest.raises(InputError) as info:
        few_shot_examples(PromptSpec(SYSTEM, k=1, few_shot_file=str(path)))
    assert str(info.value).startswith(f"{path}:2: ")


def test_k_zero_ignores_the_pool():
    assert few_shot_examples(PromptSpec(SYSTEM, k=0, few_shot_file="/does/not/exist.jsonl")) == []


# --- render_prompt ----------------------------------------------------------------------

def test_render_with_chat_template(tokenizer):
    text = render_prompt(tokenizer, RECORD, PromptSpec(SYSTEM, k=1))
    assert text == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{MATH_EXAMPLES[0][0]}<|im_end|>\n"
        f"<|im_start|>assistant\n{MATH_EXAMPLES[0][1]}<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_trained_prompt_is_the_unhinted_prompt(tokenizer):
    # A rationale is generated from the hinted prompt but trained on `prompt_text`
    # rendered with hint=None: the two differ by exactly the hint text.
    spec = PromptSpec(SYSTEM, k=2)
    prompt_text = render_prompt(tokenizer, RECORD, spec, hint=None)
    assert prompt_text == render_prompt(tokenizer, RECORD, spec)
    hinted = render_prompt(tokenizer, RECORD, spec, hint="42")
    hint_text = HINT_TEMPLATE.format(answer="42")
    assert hinted != prompt_text
    assert hinted.count(hint_text) == 1
    assert hinted.replace(hint_text, "") == prompt_text
    assert hinted.index(hint_text) == prompt_text.rindex("What is 12 + 30?") + len("What is 12 + 30?")


def test_render_without_chat_template(tokenizer):
    spec = PromptSpec(SYSTEM, k=2, use_chat_template=False)
    (q1, a1), (q2, a2) = MATH_EXAMPLES[:2]
    assert render_prompt(tokenizer, RECORD, spec) == (
        f"{SYSTEM}\n\n"
        f"Question: {q1}\nSolution: {a1}\n\n"
        f"Question: {q2}\nSolution: {a2}\n\n"
        "Question: What is 12 + 30?\nSolution:"
    )
    hinted = render_prompt(tokenizer, RECORD, spec, hint="42")
    assert hinted.endswith(f"Question: What is 12 + 30?{HINT_TEMPLATE.format(answer='42')}\nSolution:")


def test_chat_template_required_when_asked():
    no_template = SimpleNamespace(chat_template=None)
    with pytest.raises(InputError, match="no chat template"):
        render_prompt(no_template, RECORD, PromptSpec(SYSTEM))


# --- encode_example -----------------------------------------------------------------------

@pytest.mark.parametrize("use_chat_template", [True, False])
def test_encode_example_masks_prompt_and_ends_with_eos(tokenizer, use_chat_template):
    spec = PromptSpec(SYSTEM, k=1, use_chat_template=use_chat_template)
    prompt_text = render_prompt(tokenizer, RECORD, spec)
    response = "12 + 30 = 42.\nAnswer: 42"
    example = encode_example(tokenizer, prompt_text, response, spec)
    prompt_ids = encode_prompt(tokenizer, prompt_text, spec)
    n = len(prompt_ids)
    ids, labels = example["input_ids"], example["labels"]

    assert len(ids) == len(labels) > n + 1
    assert ids[:n] == prompt_ids  # training sees exactly what generation is fed
    assert labels[:n] == [-100] * n  # no loss on any prompt token
    assert labels[n:] == ids[n:]  # loss on every reply token
    assert -100 not in labels[n:]
    assert labels[-1] == tokenizer.eos_token_id  # models must learn to stop
    assert ids.count(tokenizer.eos_token_id) == prompt_ids.count(tokenizer.eos_token_id) + 1
    reply = tokenizer.decode(ids[n:-1])
    assert reply == (response if use_chat_template else " " + response)


def test_encode_example_without_eos_is_input_error(tokenizer):
    spec = PromptSpec(SYSTEM, use_chat_template=False)

    class NoEos:
        eos_token_id = None

        def __call__(self, text, add_special_tokens=True):
            return tokenizer(text, add_special_tokens=add_special_tokens)

    with pytest.raises(InputError, match="no eos_token"):
        encode_example(NoEos(), "Question: q\nSolution:", "a", spec)


# --- PromptSpec persistence ------------------------------------------------------------------

def test_prompt_spec_from_config_and_saved_checkpoint(tmp_path):
    config = Config(k=2, system_prompt="S", few_shot_file="f.jsonl", use_chat_template=False)
    spec = PromptSpec.from_config(config)
    assert spec == PromptSpec("S", 2, "f.jsonl", False)
    assert load_prompt_spec(tmp_path) is None
    (tmp_path / "selftrain_config.json").write_text(json.dumps({"prompt_spec": spec.to_dict()}))
    assert load_prompt_spec(tmp_path) == spec
