"""The one prompt builder: generation, rationalization, training and evaluation
all render prompts here, so their formats cannot drift apart (the failure that
sank seed 003's phase B and many STaR reproductions).

A prompt is: the system prompt, K few-shot exchanges (user question, assistant
answer), then the record's own question (or its `messages`). With a chat
template the tokenizer renders it; without one a plain `Question:/Solution:`
layout is used. Rationalization adds the answer as a hint to the last user
turn; the kept rationale is trained on the prompt *without* the hint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selftrain.errors import InputError

# Built-in few-shot examples for math: short reasoning, then the answer line the
# judge reads first. Short on purpose: the model copies their length.
MATH_EXAMPLES = [
    ("What is 23 + 45?", "23 + 45 = 68.\nAnswer: 68"),
    ("Calculate: 6 * 7 - 5", "6 * 7 = 42. 42 - 5 = 37.\nAnswer: 37"),
    ("Evaluate: (14 + 6) * 3", "14 + 6 = 20. 20 * 3 = 60.\nAnswer: 60"),
    ("Sam has 15 marbles and wins 9 more. How many marbles does he have?", "15 + 9 = 24.\nAnswer: 24"),
    ("What is 58 + 37?", "58 + 37 = 95.\nAnswer: 95"),
    ("Calculate: 4 + 8 * 3", "8 * 3 = 24. 4 + 24 = 28.\nAnswer: 28"),
    ("A box holds 6 eggs. How many eggs are in 7 boxes?", "6 * 7 = 42.\nAnswer: 42"),
    ("Evaluate: 50 - (12 + 9)", "12 + 9 = 21. 50 - 21 = 29.\nAnswer: 29"),
    ("Mia reads 12 pages a day for 5 days, then 8 more pages. How many pages did she read?",
     "12 * 5 = 60. 60 + 8 = 68.\nAnswer: 68"),
    ("What is 76 + 19?", "76 + 19 = 95.\nAnswer: 95"),
]

HINT_TEMPLATE = "\n(The correct answer is {answer}. Explain the steps that lead to it, then end with 'Answer: {answer}'.)"


@dataclass(frozen=True)
class PromptSpec:
    system_prompt: str
    k: int = 0
    few_shot_file: str = ""
    use_chat_template: bool = True

    @classmethod
    def from_config(cls, config) -> "PromptSpec":
        return cls(config.system_prompt, config.k, config.few_shot_file, config.use_chat_template)

    def to_dict(self) -> dict:
        return {"system_prompt": self.system_prompt, "k": self.k, "few_shot_file": self.few_shot_file,
                "use_chat_template": self.use_chat_template}


def few_shot_examples(spec: PromptSpec) -> list[tuple[str, str]]:
    if spec.k == 0:
        return []
    if spec.few_shot_file:
        from selftrain.records import iter_jsonl

        pool = []
        for lineno, obj in iter_jsonl(spec.few_shot_file):
            if not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("response"), str):
                raise InputError(f"{spec.few_shot_file}:{lineno}: few-shot example needs string 'prompt' and 'response'")
            pool.append((obj["prompt"], obj["response"]))
    else:
        pool = MATH_EXAMPLES
    if spec.k > len(pool):
        source = spec.few_shot_file or "the built-in math examples"
        raise InputError(f"k={spec.k}: only {len(pool)} few-shot examples in {source}")
    return pool[: spec.k]


def build_messages(record: dict, spec: PromptSpec, hint: str | None = None) -> list[dict]:
    """Chat messages for a record: system, few-shot turns, then the question."""
    own = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
    messages = []
    if spec.system_prompt and own[0]["role"] != "system":
        messages.append({"role": "system", "content": spec.system_prompt})
    elif own[0]["role"] == "system":
        messages.append(own[0])
        own = own[1:]
    for question, answer in few_shot_examples(spec):
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages += [dict(m) for m in own]
    if hint is not None:
        messages[-1]["content"] += HINT_TEMPLATE.format(answer=hint)
    return messages


def render_prompt(tokenizer, record: dict, spec: PromptSpec, hint: str | None = None) -> str:
    """The exact text the model sees before its reply."""
    messages = build_messages(record, spec, hint)
    if spec.use_chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("use_chat_template is true but this tokenizer has no chat template; set it to false")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"] + "\n\n")
        elif m["role"] == "user":
            parts.append(f"Question: {m['content']}\n")
        else:
            parts.append(f"Solution: {m['content']}\n\n")
    return "".join(parts) + "Solution:"


def encode_prompt(tokenizer, text: str, spec: PromptSpec) -> list[int]:
    # A chat template already writes its special tokens; the plain layout lets the
    # tokenizer add its own (BOS for models that use one).
    return tokenizer(text, add_special_tokens=not spec.use_chat_template)["input_ids"]


def completion_text(response: str, spec: PromptSpec) -> str:
    """What follows the prompt in a training example (EOS is added as a token id)."""
    return response if spec.use_chat_template else " " + response.strip()


def encode_example(tokenizer, prompt_text: str, response: str, spec: PromptSpec) -> dict:
    """input_ids and labels for SFT: loss on the reply and its EOS, never on the prompt."""
    prompt_ids = encode_prompt(tokenizer, prompt_text, spec)
    reply_ids = tokenizer(completion_text(response, spec), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("tokenizer has no eos_token: training targets could not end, and models would never stop")
    reply_ids = reply_ids + [eos]  # every target ends with EOS (TRL #1623: models that never stop)
    return {"input_ids": prompt_ids + reply_ids, "labels": [-100] * len(prompt_ids) + reply_ids}


def load_prompt_spec(directory: str | Path) -> PromptSpec | None:
    """The prompt spec a checkpoint was trained with, if it recorded one."""
    import json

    path = Path(directory) / "selftrain_config.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text()).get("prompt_spec")
    return PromptSpec(**data) if data else None
