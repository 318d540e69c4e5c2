"""Local reward: a Hugging Face sequence-classification reward model scores (prompt, response).

`reward_config.model_path` is a local checkpoint directory or a hub id (default
OpenAssistant/reward-model-deberta-v3-large-v2, fetched on first use; offline,
a one-line InputError). It runs on CUDA if available, else the CPU, in the
run's `dtype` ("auto": bf16 where the hardware runs it fast, else fp32).

Input: the tokenizer's text pair (prompt, response), as the OpenAssistant model
card does. The prompt is the record's `prompt`, else the last user message of
`messages`, else `prompt_text`.

Truncation to min(reward_max_length, the model's limit) tokens: the response is
what is scored, so the prompt loses tokens first, from its beginning (the end,
next to the response, is kept): 'only_first' with left truncation. A response
that alone leaves no room for the prompt would make 'only_first' fail, so such
an item falls back to 'longest_first': both keep their ends, and the response
loses its beginning. The result's `reward_truncated` says which happened
(None, "prompt" or "prompt+response").

Score: the logit of a single-label model (num_labels 1), or the probability of
label 1 (softmax over the two logits, in [0, 1]) for a two-label classifier;
other label counts are refused. A checkpoint without a trained classification
head (e.g. a plain causal LM) is refused too: its head would be random.

Batching: items are sorted by length (longest first, so memory limits show at
once), padded on the right to the longest in each batch of reward_batch_size,
and returned in the original order. A tokenizer without a pad token pads with
eos, and the model config's pad_token_id is set to the tokenizer's (decoder
models pool the last non-pad token, so with pad = eos trailing eos tokens are
skipped, the same way in every batch).
"""
from __future__ import annotations

import torch

from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.models import default_device, from_pretrained, load_tokenizer, parse_dtype
from selftrain.rewards import question_of

NO_LIMIT = 10**12  # tokenizers without a known limit report int(1e30)


class LocalReward:
    name = "local"
    verifiable = False

    def __init__(self, config):
        self.config = config
        rc = config.reward_config
        for key in ("reward_batch_size", "reward_max_length"):
            if getattr(rc, key) < 1:
                raise InputError(f"reward_config.{key}: {getattr(rc, key)} must be >= 1")
        self.where = f"reward_config.model_path {rc.model_path}"
        self.batch_size = rc.reward_batch_size
        self.device = default_device()
        self.tokenizer = load_tokenizer(rc.model_path)
        self.model = load_classifier(rc.model_path, parse_dtype(config.dtype, self.device), self.device)
        self.num_labels = self.model.config.num_labels
        if self.num_labels not in (1, 2):
            raise InputError(f"{self.where}: the model has {self.num_labels} labels; a reward model needs 1 "
                             f"(the score) or 2 (the score is label 1's probability)")
        self._align_padding()
        self.tokenizer.truncation_side = "left"  # the prompt loses its beginning, not its end
        self.tokenizer.padding_side = "right"  # positions stay those of an unpadded input
        self.max_length = self._max_length(rc.reward_max_length)
        self.n_special = self.tokenizer.num_special_tokens_to_add(pair=True)
        if self.max_length < self.n_special + 2:
            raise InputError(f"reward_config.reward_max_length: {self.max_length} leaves no room for a prompt and "
                             f"a response next to the model's {self.n_special} special tokens")
        log(f"reward model {rc.model_path}: {self.num_labels} label(s), {self.model.dtype}, {self.device}, "
            f"inputs up to {self.max_length} tokens")

    def score(self, records: list[dict]) -> list[dict]:
        encoded = []
        for record in records:
            features, truncated = self.encode(question_of(record), record["response"])
            if not features["input_ids"]:
                raise InputError(f"record {record.get('id')}: nothing to score (empty prompt and response)")
            encoded.append((features, truncated))
        scores = self._scores([features for features, _ in encoded])
        return [
            {"reward_score": s, "is_correct": None, "answer_found": bool(record["response"].strip()),
             "reward_truncated": truncated}
            for s, record, (_, truncated) in zip(scores, records, encoded)
        ]

    def encode(self, prompt: str, response: str) -> tuple[dict, str | None]:
        """Tokenize one pair within max_length: (features, None | "prompt" | "prompt+response")."""
        tok = self.tokenizer
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        n_response = len(tok(response, add_special_tokens=False)["input_ids"])
        room = self.max_length - self.n_special
        # 'only_first' raises unless at least one prompt token survives; then cut both instead.
        strategy = "only_first" if n_response < room else "longest_first"
        features = tok(prompt, response, truncation=strategy, max_length=self.max_length)
        if n_prompt + n_response <= room:
            return features, None
        return features, "prompt" if strategy == "only_first" else "prompt+response"

    def _scores(self, features: list[dict]) -> list[float]:
        """Model scores for encoded inputs, batched by length, in the input order."""
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        scores = [0.0] * len(features)
        with torch.inference_mode():
            for begin in range(0, len(order), self.batch_size):
                chunk = order[begin:begin + self.batch_size]
                batch = self.tokenizer.pad([features[i] for i in chunk], padding=True, return_tensors="pt")
                logits = self.model(**batch.to(self.device)).logits.float()
                values = logits[:, 0] if self.num_labels == 1 else torch.softmax(logits, dim=-1)[:, 1]
                for i, value in zip(chunk, values.tolist()):
                    scores[i] = value
        return scores

    def _align_padding(self) -> None:
        pad_id = self.tokenizer.pad_token_id  # load_tokenizer already fell back to eos
        if pad_id is None:
            raise InputError(f"{self.where}: the tokenizer has neither a pad nor an eos token to pad batches with")
        self.model.config.pad_token_id = pad_id
        self.model.config.get_text_config().pad_token_id = pad_id  # where decoder heads look it up

    def _max_length(self, wanted: int) -> int:
        limits = [wanted]
        if self.tokenizer.model_max_length < NO_LIMIT:
            limits.append(self.tokenizer.model_max_length)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
        return min(limits)


def load_classifier(model_path: str, dtype: torch.dtype, device: torch.device):
    """The sequence-classification model, refusing one whose weights do not cover it (a random head)."""
    from transformers import AutoModelForSequenceClassification

    model, info = from_pretrained(AutoModelForSequenceClassification, model_path, dtype=dtype,
                                  output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"reward_config.model_path {model_path}: not a trained sequence-classification model "
                         f"(no weights for {shown}; they would be random)")
    return model.to(device).eval()
