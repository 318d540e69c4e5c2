"""GGUF exports of checkpoints (gguf_export.py) and the in-process llama.cpp backend
(llama_cpp_local.py), against real llama.cpp: no mocks.

The embedded model's checkpoint (the fp32 model the project rebuilds from the shipped GGUF)
exported to f32 must give llama.cpp the HF model's logits and the engine's greedy replies; a
changed checkpoint must export to a file that follows the change. The caching, the atomic write,
the refusal of other architectures and the per-request sampling run on the tiny random Llama.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is a pinned test dependency (make setup-test)")

from selftrain.config import load_config  # noqa: E402
from selftrain.data import load_train_prompts  # noqa: E402
from selftrain.errors import InputError  # noqa: E402
from selftrain.generation import Request, SamplingParams, get_backend, request_seed  # noqa: E402
from selftrain.generation import gguf_export  # noqa: E402
from selftrain.generation.gguf_export import export_gguf, export_path, gguf_of  # noqa: E402
from selftrain.generation.llama_cpp_local import LlamaCppBackend  # noqa: E402
from selftrain.generation.local import LocalBackend  # noqa: E402
from selftrain.models import _gguf_location, load_model, load_tokenizer  # noqa: E402
from selftrain.prompts import PromptSpec, encode_prompt, render_prompt  # noqa: E402
from selftrain.self_rewarding import expected_score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = load_config(str(REPO / "configs" / "tiny.yaml"), {})
SPEC = PromptSpec.from_config(CONFIG)
GREEDY = SamplingParams(0.0, 1.0, 0, 32)


def prompts(tokenizer, n: int, params: SamplingParams = GREEDY) -> list[Request]:
    records = load_train_prompts(CONFIG, 1)[:n]
    return [Request(r["id"], render_prompt(tokenizer, r, SPEC), None, params, request_seed(0, r["id"]))
            for r in records]


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits at every position of `ids` (its own high-level API, not our backend), with an
    f32 KV cache: llama.cpp's default f16 cache alone moves the logits by up to 0.05 (measured)."""
    f32 = llama_cpp.GGML_TYPE_F32
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, logits_all=True, verbose=False,
                          n_threads=torch.get_num_threads(), type_k=f32, type_v=f32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def linked_copy(source: str | Path, target: Path) -> Path:
    """A checkpoint directory whose files are links to `source`'s (exports land in `target`)."""
    target.mkdir()
    for f in Path(source).iterdir():
        if f.suffix != ".gguf" and f.is_file():
            os.symlink(f, target / f.name)
    return target


# ------------------------------------------------------------ the embedded model's checkpoint

@pytest.fixture(scope="module")
def smol(smol_tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("smol_gguf")
    checkpoint = linked_copy(smol_tokenizer_dir, root / "checkpoint")
    return {"dir": checkpoint, "f32": export_gguf(checkpoint, root / "f32.gguf", "f32"),
            "q8_0": export_gguf(checkpoint, root / "q8_0.gguf", "q8_0"),
            "model": load_model(str(checkpoint), dtype="fp32", device="cpu"),
            "tokenizer": load_tokenizer(str(checkpoint))}


@pytest.fixture(scope="module")
def engine_greedy(smol):
    backend = LocalBackend(str(smol["dir"]), SPEC, engine="selftrain", batch_size=8, progress=False,
                           model=smol["model"], tokenizer=smol["tokenizer"])
    return {c.key: c.token_ids for c in backend.generate(prompts(smol["tokenizer"], 8))}


@pytest.mark.slow
def test_f32_export_gives_llama_cpp_the_hf_models_logits(smol):
    tokenizer = smol["tokenizer"]
    ids = list(encode_prompt(tokenizer, prompts(tokenizer, 1)[0].prompt_text, SPEC))  # as every backend encodes it
    got, expected = llama_logits(smol["f32"], ids), hf_logits(smol["model"], ids)
    assert got.shape == expected.shape == (len(ids), 49152)
    # measured: max |diff| 1e-4 (mean 1e-5) on logits of magnitude ~20: float32 summation order
    assert np.abs(got - expected).max() < 1e-3
    assert (got.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.slow
def test_the_export_carries_the_tokenizer_llama_cpps_converter_wrote_for_the_shipped_file(smol):
    import gguf

    def fields(path):
        reader = gguf.GGUFReader(path)
        return {k: reader.fields[k].contents() for k in reader.fields if k.startswith("tokenizer.")}

    shipped, ours = fields(Path(*_gguf_location("smollm2-135m"))), fields(smol["q8_0"])
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        assert ours[key] == shipped[key], key
    # the shipped file says "smollm" (digits split one by one); the rebuilt tokenizer.json has a plain
    # byte-level pre-tokenizer, so the export names llama.cpp's equivalent of what the HF tokenizer does
    assert ours["tokenizer.ggml.pre"] == "gpt-2"


@pytest.mark.slow
def test_llama_cpp_greedy_replies_on_the_f32_export_are_the_engines(smol, engine_greedy):
    with LlamaCppBackend(str(smol["dir"]), SPEC, batch_size=3, progress=False, tokenizer=smol["tokenizer"],
                         gguf_path=smol["f32"]) as backend:
        got = {c.key: c for c in backend.generate(prompts(smol["tokenizer"], 8))}
        assert backend.describe()["linear"] == "f32"
        assert backend.stats.completions == 8 and backend.stats.completion_tokens == sum(
            c.num_tokens for c in got.values())
    assert {k: c.token_ids for k, c in got.items()} == engine_greedy  # 8 prompts, 3 slots: slots are reused
    for c in got.values():
        assert c.finish_reason in ("stop", "length") and c.text == smol["tokenizer"].decode(c.token_ids)


@pytest.mark.slow
def test_q8_0_greedy_replies_mostly_agree_with_the_engines(smol, engine_greedy):
    with LlamaCppBackend(str(smol["dir"]), SPEC, batch_size=8, progress=False, tokenizer=smol["tokenizer"],
                         gguf_path=smol["q8_0"]) as backend:
        assert backend.describe()["linear"] == "q8_0"
        got = {c.key: c.token_ids for c in backend.generate(prompts(smol["tokenizer"], 8))}
    same = sum(got[k] == engine_greedy[k] for k in engine_greedy)
    assert same >= 6, f"{same}/8 q8_0 greedy replies equal the fp32 engine's"  # measured: 7/8 (10/12 on 12)


def judge_requests(n: int) -> list:
    """Judge-like requests that share a rubric prefix and end at the score's position."""
    from selftrain.generation.base import ScoreRequest

    prefix = "<|im_start|>system\nYou grade replies from 0 to 5.<|im_end|>\n<|im_start|>user\n" + "Check it. " * 20
    return [ScoreRequest(f"r{i}", prefix + f"Reply {i}: " + "more words " * (i % 4)
                         + "<|im_end|>\n<|im_start|>assistant\nScore: ", ("0", "1", "2", "3", "4", "5"),
                         shared_prefix=prefix) for i in range(6)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["f32", "q8_0"])
def test_llama_cpp_scores_options_as_the_hf_model_and_whatever_shares_the_call(smol, kind):
    requests = judge_requests(6)
    with LlamaCppBackend(str(smol["dir"]), SPEC, batch_size=4, progress=False, tokenizer=smol["tokenizer"],
                         gguf_path=smol[kind]) as backend:
        together = {r.key: r.logprobs for r in backend.score_options(requests)}
        list(backend.generate(prompts(smol["tokenizer"], 2)))  # generation between scoring calls clears the cache
        # a stage resumed after a kill asks the rest in another order and split: bit-identical results
        apart = {r.key: r.logprobs for part in (requests[4:], requests[:2][::-1], requests[2:4])
                 for r in backend.score_options(part)}
        assert backend.stats.completions == 2 + 2 * len(requests)
    assert apart == together
    local = LocalBackend(str(smol["dir"]), SPEC, batch_size=4, progress=False, model=smol["model"],
                         tokenizer=smol["tokenizer"])
    hf = {r.key: r.logprobs for r in local.score_options(requests)}
    for key, values in together.items():
        assert all(v <= 0 for v in values)
        if kind == "f32":  # float32 summation order only (measured 1.1e-3 at most)
            assert values == pytest.approx(hf[key], abs=5e-3), key
        # q8_0 weights and llama.cpp's f16 KV cache move a log-probability by up to ~0.2 (measured 0.16), the
        # judge's expected score by less (measured 0.075 at most on a 0..5 scale)
        assert values == pytest.approx(hf[key], abs=0.3), key
        assert expected_score(values)[0] == pytest.approx(expected_score(hf[key])[0], abs=0.15), key


@pytest.mark.slow
def test_a_changed_checkpoint_exports_to_a_file_that_follows_the_change(smol, tmp_path):
    model = load_model(str(smol["dir"]), dtype="fp32", device="cpu")
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.mul_(3.0)
        model.model.layers[5].self_attn.q_proj.weight.mul_(2.0)  # through the rotary permutation
    changed = tmp_path / "changed"
    model.save_pretrained(changed)
    smol["tokenizer"].save_pretrained(changed)
    path = gguf_of(str(changed), "f32")
    assert path == export_path(changed, "f32") and path.is_file()
    ids = smol["tokenizer"]("The capital of France is")["input_ids"]
    got, expected = llama_logits(path, ids), hf_logits(model, ids)
    before = hf_logits(smol["model"], ids)
    assert np.abs(expected - before).max() > 0.5  # the change moves the logits ...
    assert np.abs(got - expected).max() < 1e-3  # ... and the export follows it


# ------------------------------------------------------------ the tiny random Llama

@pytest.fixture
def tiny(tiny_model_dir, tmp_path):
    target = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_the_export_is_cached_beside_the_checkpoint_and_redone_when_the_weights_are_newer(tiny, capsys, monkeypatch):
    first = gguf_of(str(tiny), "q8_0")
    assert first == export_path(tiny, "q8_0") == tiny / "selftrain-q8_0.gguf"
    assert "exported" in capsys.readouterr().err
    made = first.stat().st_mtime_ns
    assert gguf_of(str(tiny), "q8_0") == first and first.stat().st_mtime_ns == made  # reused, not redone
    assert "exported" not in capsys.readouterr().err
    later = time.time() + 5
    os.utime(tiny / "model.safetensors", (later, later))  # a retrained checkpoint
    assert gguf_of(str(tiny), "q8_0") == first and first.stat().st_mtime_ns != made
    assert "newer than its export" in capsys.readouterr().err
    assert gguf_of(str(tiny), "f32") == tiny / "selftrain-f32.gguf"  # one export per type, the q8_0 one ignored
    assert gguf_of(str(tiny), "q8_0") == first  # our exports never count as a user's .gguf
    os.utime(tiny / "model.safetensors", (time.time() - 60, time.time() - 60))
    assert gguf_of(str(tiny), "q8_0") == first  # current again
    capsys.readouterr()
    monkeypatch.setattr(gguf_export, "EXPORT_VERSION", gguf_export.EXPORT_VERSION + 1)  # a fixed exporter
    made = first.stat().st_mtime_ns
    assert gguf_of(str(tiny), "q8_0") == first and first.stat().st_mtime_ns != made
    assert "made by another version of the exporter" in capsys.readouterr().err


def test_a_killed_exports_temporary_file_is_removed_by_the_next_export(tiny):
    orphan = tiny / ".selftrain-q8_0.gguf.tmp999999999"  # no such process
    orphan.write_bytes(b"GGUF half")
    assert gguf_of(str(tiny), "q8_0").is_file() and not orphan.exists()


def test_an_export_that_fails_midway_leaves_no_gguf(tiny, monkeypatch):
    import gguf

    real, written = gguf.GGUFWriter.write_tensor_data, []

    def dies_on_the_fifth(self, tensor, *args, **kwargs):
        if len(written) == 4:
            raise KeyboardInterrupt  # what Ctrl-C or a kill would interrupt
        written.append(tensor.nbytes)
        return real(self, tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", dies_on_the_fifth)
    out = tiny / "out.gguf"
    with pytest.raises(KeyboardInterrupt):
        export_gguf(tiny, out, "q8_0")
    assert len(written) == 4 and not out.exists()
    with pytest.raises(KeyboardInterrupt):
        gguf_of(str(tiny), "q8_0")
    assert not list(tiny.glob("*.gguf")) and not [p for p in tiny.iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", real)
    assert gguf_of(str(tiny), "q8_0").is_file()  # the next use exports it whole


def test_other_architectures_are_refused_with_the_way_to_convert_them(tiny):
    config = json.loads((tiny / "config.json").read_text())
    config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    (tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"checkpoint .*tiny: architecture Qwen2ForCausalLM; .*LlamaForCausalLM "
                                         r"only: convert it with llama.cpp's convert_hf_to_gguf.py"):
        gguf_of(str(tiny), "q8_0")
    assert not list(tiny.glob("*.gguf"))
    config.update(architectures=["LlamaForCausalLM"], model_type="llama", rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0})
    (tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="RoPE scaling 'llama3', which the automatic GGUF export does not handle"):
        export_gguf(tiny, tiny / "x.gguf")


def test_gguf_of_names_what_llama_cpp_runs(tmp_path, monkeypatch):
    directory, filename = _gguf_location("smollm2-135m")
    assert gguf_of("smollm2-135m", "f32") == directory / filename  # the shipped Q4_1 file, as is
    with pytest.raises(InputError, match="a hub id, and llama.cpp runs a local GGUF file"):
        gguf_of("HuggingFaceTB/SmolLM2-135M-Instruct")
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no such file or directory"):  # a missing checkpoint, not a hub id
        gguf_of("results/model_star_iter1")
    with pytest.raises(InputError, match="GGUF type 'q4_k': expected one of q8_0, f16, bf16, f32"):
        gguf_of("smollm2-135m", "q4_k")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a .gguf nor a Hugging Face checkpoint"):
        gguf_of(str(tmp_path / "empty"))


def test_sampling_is_reproducible_per_request_seed_whatever_shares_the_batch(tiny, tokenizer):
    params = SamplingParams(0.8, 0.95, 50, 24)
    requests = [Request(f"r{i}", f"Question {i}: what is {i} + {i}?", None, params, request_seed(7, f"r{i}"))
                for i in range(6)]
    spec = PromptSpec(system_prompt="", use_chat_template=False)
    with LlamaCppBackend(str(tiny), spec, gguf_type="f32", batch_size=4, progress=False, tokenizer=tokenizer) as b:
        together = {c.key: c.token_ids for c in b.generate(requests)}
        again = {c.key: c.token_ids for c in b.generate(requests[::-1])}
        alone = {c.key: c.token_ids for c in b.generate([requests[4]])}
        reseeded = {c.key: c.token_ids for c in b.generate([Request("r4", requests[4].prompt_text, None, params, 1)])}
    assert together == again and alone["r4"] == together["r4"]
    assert reseeded["r4"] != together["r4"]
    assert len(set(together.values())) > 1


def test_the_stage_opens_it_from_the_config(tiny, tokenizer):
    config = load_config(str(REPO / "configs" / "tiny.yaml"), {"generation.backend": "llama_cpp",
                                                               "generation.gguf_type": "f16"})
    with get_backend(config, str(tiny), SPEC, batch_size=2, role="sample", progress=False) as backend:
        described = backend.describe()
        replies = list(backend.generate(prompts(tokenizer, 3, SamplingParams(0.0, 1.0, 0, 8))))
    assert described["backend"] == "llama_cpp" and described["linear"] == "f16"
    assert described["gguf"] == str(tiny / "selftrain-f16.gguf")
    assert backend.chosen_by == "set by generation.backend: llama_cpp"
    assert len(replies) == 3 and all(c.num_tokens <= 8 for c in replies)
