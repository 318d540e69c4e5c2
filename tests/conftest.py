"""Shared fixtures: the embedded model's tokenizer and a tiny random Llama built from it.

Unit tests use `tiny_model_dir` (2 layers, hidden size 32, random weights, no hub);
tests that need the real embedded model are marked `slow`.
"""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: uses the real embedded model")


@pytest.fixture(scope="session")
def smol_tokenizer_dir() -> str:
    """Directory of the converted embedded SmolLM2-135M checkpoint (~25 s the first time)."""
    from selftrain.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smol_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> str:
    """A tiny random Llama (fp32, 2 layers, hidden 32) with the embedded model's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # With the default 0.02 a tied-embedding random model just echoes its last
        # input token ("\n" forever), which makes generation tests meaningless;
        # 0.2 gives varied, tie-free greedy continuations.
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def weightless_env(tmp_path_factory, smol_tokenizer_dir) -> dict:
    """A stage subprocess's environment with a model cache that holds the embedded model's tokenizer and
    config but no weights (a stage on the openai backend needs only the student's tokenizer; one that
    tried to load weights would fail), no OPENAI_API_KEY, no proxy, offline."""
    import os
    import shutil

    cache = tmp_path_factory.mktemp("weightless_cache")
    model = cache / "models" / "smollm2-135m"
    model.mkdir(parents=True)
    for f in Path(smol_tokenizer_dir).iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")):
            shutil.copy(f, model / f.name)
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy") and k != "OPENAI_API_KEY"}
    env.update(SELFTRAIN_CACHE=str(cache), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return env
