"""Tests for selftrain.generation.engine: the continuous-batching engine against plain
`model.generate`, per-request sampling streams, stop/length handling, and the
sampling primitives."""

import pytest
import torch

from selftrain.errors import InputError
from selftrain.generation import SamplingParams, request_seed
from selftrain.generation.engine import Engine, TokenRequest, common_prefix_length, sample_next
from selftrain.models import load_model

MAX_NEW = 16
SYSTEM = "You are a careful assistant. Answer briefly."
QUESTIONS = [
    "hi",
    "What is 2 + 2?",
    "Compute 17 * 3 and explain every step you take along the way, one line per step.",
    "x",
    "Name three colours of the rainbow, please.",
    "Why?",
]


# --- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    """Chat prompts of different lengths sharing the system-prompt prefix."""
    ids = []
    for question in QUESTIONS:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len({len(i) for i in ids}) >= 4, "prompts should differ in length"
    assert common_prefix_length(ids) >= 10, "prompts should share a chat-template prefix"
    return ids


@pytest.fixture(scope="module")
def reference(model, tokenizer, prompt_ids):
    """Greedy tokens of unpadded one-at-a-time `model.generate` (eos included if produced)."""
    refs = []
    with torch.inference_mode():
        for ids in prompt_ids:
            out = model.generate(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=[tokenizer.eos_token_id],
                pad_token_id=tokenizer.pad_token_id,
            )
            refs.append(out[0, len(ids):].tolist())
    # The tiny random model must produce varied tokens, or equality proves little.
    assert len({tuple(r) for r in refs}) == len(refs)
    assert all(len(set(r)) > 3 for r in refs)
    return refs


def expected(raw: list[int], stops: set[int], limit: int) -> tuple[list[int], str]:
    """What a Completion should hold given the reference tokens."""
    for i, token in enumerate(raw[:limit]):
        if token in stops:
            return raw[:i], "stop"
    assert len(raw) >= limit
    return raw[:limit], "length"


def run(model, tokenizer, prompts, params, keys=None, seed=0, **kwargs) -> dict:
    kwargs.setdefault("progress", False)
    engine = Engine(model, tokenizer, params, **kwargs)
    keys = keys or [f"r{i}" for i in range(len(prompts))]
    requests = [TokenRequest(key, ids, request_seed(seed, key)) for key, ids in zip(keys, prompts)]
    completions = list(engine.generate(requests))
    assert sorted(c.key for c in completions) == sorted(keys), "one completion per request"
    assert engine.stats["generated_tokens"] == sum(len(c.token_ids) for c in completions)
    return {c.key: c for c in completions}


GREEDY = SamplingParams(temperature=0, max_new_tokens=MAX_NEW)


# --- greedy equivalence -----------------------------------------------------

@pytest.mark.parametrize("batch_size", [2, 8])
def test_continuous_greedy_matches_unpadded_generate(model, tokenizer, prompt_ids, reference, batch_size):
    # batch_size 2 forces refills and left-padding merges; 8 runs all prompts in one group.
    got = run(model, tokenizer, prompt_ids, GREEDY, batch_size=batch_size)
    for i, raw in enumerate(reference):
        tokens, reason = expected(raw, {tokenizer.eos_token_id}, MAX_NEW)
        assert got[f"r{i}"].token_ids == tokens, f"prompt {i}"
        assert got[f"r{i}"].finish_reason == reason


def test_hf_engine_greedy_matches_unpadded_generate(model, tokenizer, prompt_ids, reference):
    got = run(model, tokenizer, prompt_ids, GREEDY, batch_size=4, engine="hf")
    for i, raw in enumerate(reference):
        tokens, reason = expected(raw, {tokenizer.eos_token_id}, MAX_NEW)
        assert got[f"r{i}"].token_ids == tokens, f"prompt {i}"
        assert got[f"r{i}"].finish_reason == reason


def test_single_request_uses_prefix_path(model, tokenizer, prompt_ids, reference):
    # One request: everything but its last token is the "shared prefix".
    got = run(model, tokenizer, [prompt_ids[2]], GREEDY, batch_size=1)
    assert got["r0"].token_ids == expected(reference[2], {tokenizer.eos_token_id}, MAX_NEW)[0]


# --- length and stop ----------------------------------------------------------

def test_max_new_tokens_is_respected(model, tokenizer, prompt_ids, reference):
    limit = 5
    assert all(tokenizer.eos_token_id not in raw[:limit] for raw in reference)
    got = run(model, tokenizer, prompt_ids, SamplingParams(temperature=0, max_new_tokens=limit), batch_size=3)
    for i, raw in enumerate(reference):
        assert got[f"r{i}"].token_ids == raw[:limit]
        assert got[f"r{i}"].finish_reason == "length"


@pytest.mark.parametrize("engine", ["selftrain", "hf"])
def test_stop_token_ends_sequence_and_is_excluded(model, tokenizer, prompt_ids, reference, engine):
    # A stop id the greedy reference really produces, after at least two tokens.
    target = reference[2]
    position = next(j for j in range(2, len(target)) if target[j] not in target[:j])
    stop = target[position]
    stops = {stop, tokenizer.eos_token_id}
    got = run(model, tokenizer, prompt_ids, GREEDY, batch_size=2, stop_ids=stops, engine=engine)
    assert got["r2"].token_ids == target[:position]
    assert got["r2"].finish_reason == "stop"
    assert stop not in got["r2"].token_ids
    for i, raw in enumerate(reference):  # the other prompts stop where their reference hits a stop id
        tokens, reason = expected(raw, stops, MAX_NEW)
        assert got[f"r{i}"].token_ids == tokens, f"prompt {i}"
        assert got[f"r{i}"].finish_reason == reason


# --- sampling is per request ----------------------------------------------------

SAMPLE = SamplingParams(temperature=1.0, max_new_tokens=10)


def test_sampling_does_not_depend_on_batch_companions(model, tokenizer, prompt_ids):
    alone = run(model, tokenizer, [prompt_ids[2]], SAMPLE, keys=["target"], batch_size=1, seed=7)
    others = [prompt_ids[i % len(prompt_ids)] for i in range(7)]
    crowd_prompts = others[:3] + [prompt_ids[2]] + others[3:]
    crowd_keys = [f"other{i}" for i in range(3)] + ["target"] + [f"other{i}" for i in range(3, 7)]
    crowded = run(model, tokenizer, crowd_prompts, SAMPLE, keys=crowd_keys, batch_size=8, seed=7)
    refilled = run(model, tokenizer, crowd_prompts, SAMPLE, keys=crowd_keys, batch_size=3, seed=7)
    assert len(alone["target"].token_ids) == 10
    assert crowded["target"].token_ids == alone["target"].token_ids
    assert refilled["target"].token_ids == alone["target"].token_ids


def test_different_keys_or_seeds_give_different_samples(model, tokenizer, prompt_ids):
    prompts = [prompt_ids[1]] * 4
    keys = ["a", "b", "c", "d"]
    first = run(model, tokenizer, prompts, SAMPLE, keys=keys, batch_size=4, seed=0)
    samples = [tuple(first[k].token_ids) for k in keys]
    assert len(set(samples)) == 4, "each key has its own random stream"
    again = run(model, tokenizer, prompts, SAMPLE, keys=keys, batch_size=4, seed=0)
    assert [tuple(again[k].token_ids) for k in keys] == samples, "same key + seed reproduces"
    reseeded = run(model, tokenizer, prompts, SAMPLE, keys=keys, batch_size=4, seed=1)
    assert tuple(reseeded["a"].token_ids) != samples[0]


# --- sample_next ------------------------------------------------------------------

LOGITS = torch.tensor([2.0, 1.0, 0.0, -1.0])


def draw(logits: torch.Tensor, params: SamplingParams, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return sample_next(logits.expand(n, -1), params, [gen] * n)  # one generator, n successive draws


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / len(tokens)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sample_next_matches_softmax(temperature):
    tokens = draw(LOGITS, SamplingParams(temperature=temperature), 20_000)
    target = torch.softmax(LOGITS.double() / temperature, -1)
    assert torch.allclose(frequencies(tokens, 4), target, atol=0.015), (frequencies(tokens, 4), target)


def test_sample_next_greedy_is_argmax():
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(3))
    got = sample_next(logits, SamplingParams(temperature=0), [torch.Generator() for _ in range(16)])
    assert torch.equal(got, logits.argmax(-1))


def test_sample_next_top_k_1_is_argmax():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    got = sample_next(logits, SamplingParams(temperature=1.5, top_k=1), gens)
    assert torch.equal(got, logits.argmax(-1))


def test_sample_next_top_k_2_renormalises_the_two_best():
    tokens = draw(LOGITS, SamplingParams(temperature=1.0, top_k=2), 20_000)
    target = torch.tensor([torch.e / (torch.e + 1), 1 / (torch.e + 1), 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(frequencies(tokens, 4), target, atol=0.015)


def test_sample_next_small_top_p_keeps_only_the_top_token():
    tokens = draw(LOGITS, SamplingParams(temperature=1.0, top_p=0.05), 2_000)
    assert set(tokens.tolist()) == {0}


def test_sample_next_top_p_keeps_the_token_that_crosses_it():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p=0.6 keeps the first two (0.5 < 0.6 <= 0.8).
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    tokens = draw(logits, SamplingParams(temperature=1.0, top_p=0.6), 20_000)
    target = torch.tensor([0.625, 0.375, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(frequencies(tokens, 4), target, atol=0.015)


def test_sample_next_rows_use_their_own_generator():
    logits = LOGITS.expand(3, -1)
    params = SamplingParams(temperature=1.0)
    together = sample_next(logits, params, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    for row, s in enumerate((5, 6, 7)):
        alone = sample_next(LOGITS.unsqueeze(0), params, [torch.Generator().manual_seed(s)])
        assert int(alone[0]) == int(together[row])


# --- helpers and argument checks ----------------------------------------------------

@pytest.mark.parametrize(
    "sequences, length",
    [
        ([], 0),
        ([[1, 2, 3]], 3),
        ([[1, 2, 3], [1, 2, 3]], 3),
        ([[1, 2, 3], [1, 2, 4]], 2),
        ([[1, 2, 3], [1, 2]], 2),
        ([[1, 2], [1, 2, 3, 4], [1, 2, 3]], 2),
        ([[1, 2, 3], [1, 9, 3], [1, 2, 3]], 1),
        ([[5, 2], [1, 2]], 0),
        ([[1, 2], []], 0),
    ],
)
def test_common_prefix_length(sequences, length):
    assert common_prefix_length(sequences) == length


def test_bad_engine_name_is_input_error(model, tokenizer):
    with pytest.raises(InputError, match="generation engine 'vllm'"):
        Engine(model, tokenizer, GREEDY, engine="vllm", progress=False)


def test_batch_size_zero_is_input_error(model, tokenizer):
    with pytest.raises(InputError, match="batch_size 0"):
        Engine(model, tokenizer, GREEDY, batch_size=0, progress=False)


def test_default_stop_ids_come_from_model_and_tokenizer(model, tokenizer):
    engine = Engine(model, tokenizer, GREEDY, progress=False)
    assert tokenizer.eos_token_id in engine.stop_ids.tolist()


def test_no_requests_yields_nothing(model, tokenizer):
    assert list(Engine(model, tokenizer, GREEDY, progress=False).generate([])) == []
