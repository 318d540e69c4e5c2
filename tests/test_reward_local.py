"""Local reward model: tiny random classifiers saved to disk, checked against direct forward passes."""
import pytest
import torch

from selftrain.config import Config, RewardConfig
from selftrain.errors import InputError
from selftrain.rewards import get_reward
from selftrain.rewards.local import LocalReward

PROMPTS = ["What is two plus two?", "Name a colour.", "Write one long sentence about the sea and the sky " * 3,
           "Hi", "Why is the sky blue? Explain briefly.", "Count to five."]
RESPONSES = ["Four.", "Blue, like the sea on a clear day in June.", "Waves.", "Hello there, how can I help you today?",
             "Rayleigh scattering.", "1 2 3 4 5"]


def build_llama_classifier(directory, tokenizer, num_labels=1, pad_token_id="tokenizer"):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id if pad_token_id == "tokenizer" else pad_token_id,
        initializer_range=0.2,  # varied scores: each input gets a clearly different one
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def one_label(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("reward_1")
    return str(directory), build_llama_classifier(directory, tokenizer)


def make_reward(model_path, batch_size=4, max_length=512) -> LocalReward:
    config = Config(dtype="fp32", reward_config=RewardConfig(
        type="local", model_path=model_path, reward_batch_size=batch_size, reward_max_length=max_length))
    return get_reward(config)


def records(prompts=PROMPTS, responses=RESPONSES):
    return [{"id": f"r{i}", "prompt_id": f"p{i}", "prompt": p, "response": r, "metadata": {}}
            for i, (p, r) in enumerate(zip(prompts, responses))]


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def direct_logits(model, input_ids, **extra):
    with torch.no_grad():
        return model(input_ids=torch.tensor([input_ids]), **extra).logits[0]


def test_scores_equal_a_direct_forward_pass_and_are_deterministic(one_label, tokenizer):
    path, model = one_label
    reward = make_reward(path)
    results = reward.score(records())
    # the embedded tokenizer adds no special tokens: the pair is prompt tokens then response tokens
    expected = [direct_logits(model, ids(tokenizer, p) + ids(tokenizer, r))[0].item()
                for p, r in zip(PROMPTS, RESPONSES)]
    assert [r["reward_score"] for r in results] == pytest.approx(expected, abs=1e-5)
    assert len({round(e, 3) for e in expected}) == len(expected)  # distinct, so order mistakes would show
    assert all(r["is_correct"] is None and r["answer_found"] and r["reward_truncated"] is None for r in results)
    assert [r["reward_score"] for r in reward.score(records())] == [r["reward_score"] for r in results]
    assert LocalReward.verifiable is False


def test_batched_equals_unbatched_and_order_is_preserved(one_label):
    path, _ = one_label
    unbatched = [r["reward_score"] for r in make_reward(path, batch_size=1).score(records())]
    batched = [r["reward_score"] for r in make_reward(path, batch_size=4).score(records())]
    assert batched == pytest.approx(unbatched, abs=1e-4)
    # reversed input, reversed output: each score stays with its record
    backwards = make_reward(path, batch_size=4).score(records(PROMPTS[::-1], RESPONSES[::-1]))
    assert [r["reward_score"] for r in backwards] == pytest.approx(unbatched[::-1], abs=1e-4)


def test_prompt_from_messages_or_prompt_text(one_label, tokenizer):
    path, model = one_label
    reward = make_reward(path)
    chat = {"id": "m", "response": "Paris.", "prompt_text": "<rendered>",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Italy?"},
                         {"role": "assistant", "content": "Rome."}, {"role": "user", "content": "Of France?"}]}
    rendered = {"id": "t", "response": "Paris.", "prompt_text": "Of France?"}
    expected = direct_logits(model, ids(tokenizer, "Of France?") + ids(tokenizer, "Paris."))[0].item()
    assert [r["reward_score"] for r in reward.score([chat, rendered])] == pytest.approx([expected] * 2, abs=1e-5)
    with pytest.raises(InputError, match=r"^record x: prompt: missing \(scoring needs"):
        reward.score([{"id": "x", "response": "hi"}])


def test_long_prompt_is_cut_from_its_beginning_and_the_response_survives(one_label, tokenizer):
    path, model = one_label
    reward = make_reward(path, max_length=32)
    prompt = " ".join(f"word{i}" for i in range(200))
    response = "The final answer is seven."
    (result,) = reward.score(records([prompt], [response]))
    kept = 32 - len(ids(tokenizer, response))
    expected_ids = ids(tokenizer, prompt)[-kept:] + ids(tokenizer, response)
    features, truncated = reward.encode(prompt, response)
    assert features["input_ids"] == expected_ids and len(expected_ids) == 32 and truncated == "prompt"
    assert result["reward_truncated"] == "prompt"
    assert result["reward_score"] == pytest.approx(direct_logits(model, expected_ids)[0].item(), abs=1e-5)
    # a right-truncated input (the response cut off) scores differently
    wrong = ids(tokenizer, prompt + response)[:32]
    assert result["reward_score"] != pytest.approx(direct_logits(model, wrong)[0].item(), abs=1e-3)


def test_response_longer_than_the_limit_falls_back_to_cutting_both(one_label, tokenizer):
    path, model = one_label
    reward = make_reward(path, max_length=32)
    prompt = " ".join(f"q{i}" for i in range(100))
    response = " ".join(f"a{i}" for i in range(100))
    items = records([prompt, "short prompt", prompt], [response, response, "ok"])
    results = reward.score(items)  # 'only_first' alone would raise on the first two
    assert [r["reward_truncated"] for r in results] == ["prompt+response", "prompt+response", "prompt"]
    for item, result in zip(items, results):
        features, _ = reward.encode(item["prompt"], item["response"])
        assert len(features["input_ids"]) == 32
        assert result["reward_score"] == pytest.approx(direct_logits(model, features["input_ids"])[0].item(), abs=1e-5)
    both, _ = reward.encode(prompt, response)
    assert both["input_ids"][-5:] == ids(tokenizer, response)[-5:]  # the response keeps its end
    assert both["input_ids"][:-16] == ids(tokenizer, prompt)[-16:]  # and the prompt keeps its end, next to it


def test_two_label_model_scores_the_probability_of_label_1(tmp_path, tokenizer):
    model = build_llama_classifier(tmp_path, tokenizer, num_labels=2)
    results = make_reward(str(tmp_path)).score(records())
    expected = [torch.softmax(direct_logits(model, ids(tokenizer, p) + ids(tokenizer, r)), -1)[1].item()
                for p, r in zip(PROMPTS, RESPONSES)]
    assert [r["reward_score"] for r in results] == pytest.approx(expected, abs=1e-5)
    assert all(0 < e < 1 for e in expected) and abs(expected[0] - 0.5) > 1e-3  # not label 0's 1 - p


def test_three_label_model_is_refused(tmp_path, tokenizer):
    build_llama_classifier(tmp_path, tokenizer, num_labels=3)
    with pytest.raises(InputError, match=r"the model has 3 labels; a reward model needs 1"):
        make_reward(str(tmp_path))


def test_tokenizer_without_pad_token_pads_with_eos(tmp_path, smol_tokenizer_dir, tokenizer):
    from transformers import AutoTokenizer

    no_pad = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    no_pad.pad_token = None
    model = build_llama_classifier(tmp_path, no_pad, pad_token_id=None)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    reward = make_reward(str(tmp_path), batch_size=4)  # HF refuses batches > 1 without a pad id
    assert reward.model.config.pad_token_id == tokenizer.eos_token_id
    expected = [direct_logits(model, ids(tokenizer, p) + ids(tokenizer, r))[0].item()
                for p, r in zip(PROMPTS, RESPONSES)]
    assert [r["reward_score"] for r in reward.score(records())] == pytest.approx(expected, abs=1e-4)


def test_encoder_model_with_special_tokens(tmp_path):
    """A BERT-style pair: [CLS] prompt [SEP] response [SEP], with token type ids, cut to the limit."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    bert_tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=1)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    bert_tokenizer.save_pretrained(tmp_path)
    reward = make_reward(str(tmp_path), batch_size=2, max_length=12)
    prompt = " ".join(f"w{i}" for i in range(20))
    features, truncated = reward.encode(prompt, "w30 w31")
    cls_, sep = 2, 3
    assert features["input_ids"] == [cls_] + [words.index(f"w{i}") for i in range(13, 20)] + [sep, 35, 36, sep]
    assert features["token_type_ids"] == [0] * 9 + [1] * 3 and truncated == "prompt"
    items = records([prompt, "w1", "w2 w3"], ["w30 w31", "w5 w6 w7", "w8"])
    results = reward.score(items)
    for item, result in zip(items, results):
        encoded = bert_tokenizer(item["prompt"], item["response"], truncation="only_first", max_length=12)
        if item["prompt"] == prompt:
            encoded = features
        logits = direct_logits(model, encoded["input_ids"], token_type_ids=torch.tensor([encoded["token_type_ids"]]))
        assert result["reward_score"] == pytest.approx(logits[0].item(), abs=1e-5)


def test_missing_model_path_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope"):
        make_reward(str(tmp_path / "nope"))


def test_causal_lm_checkpoint_is_refused(tiny_model_dir):
    with pytest.raises(InputError, match=r"not a trained sequence-classification model \(no weights for score\.weight"):
        make_reward(tiny_model_dir)


def test_bad_sizes_are_input_errors(one_label):
    path, _ = one_label
    with pytest.raises(InputError, match=r"^reward_config\.reward_batch_size: 0 must be >= 1"):
        make_reward(path, batch_size=0)
    with pytest.raises(InputError, match=r"^reward_config\.reward_max_length: 1 leaves no room"):
        make_reward(path, max_length=1)
