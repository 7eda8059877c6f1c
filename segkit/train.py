"""Stage 5 -- train: (selective) supervised fine-tuning with the loss masked to chosen segments.

Each record becomes ordinary ``input_ids``/``labels`` (prompt + solution + answer string + eos; ``-100`` on the
prompt and on the segments the mode does not train), so any Hugging Face Trainer can consume it. Which segments a
mode trains is ``segkit.score.segments_for_mode``; the testbed's tokenizer and model are ``segkit.testbed_model``.
The Trainer options of the paper's scale (bf16, gradient checkpointing and accumulation, attention kernel, LoRA)
are fields of ``TrainConfig``, checked when it is made; ``segkit.finetune`` turns them into a Trainer run.

    >>> run_train(TrainConfig(data="runs/selected.jsonl", out="runs/selective", mode="selective", init="scratch"))
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Sequence

from . import prompt as P
from .score import ALWAYS_KEEP, MODES, TAU, always_kept, segments_for_mode, segments_of  # noqa: F401
from .segment import char_spans, token_spans
from .testbed_model import MODEL_SIZES, build_model, build_tokenizer  # noqa: F401 (the testbed's factory)

log = logging.getLogger("segkit")

ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


def build_example(tokenizer, record: dict, mode: str, *, seed: int = 0, tau: float = TAU,
                  always_keep: Sequence[str] = ALWAYS_KEEP, max_length: int | None = None,
                  keywords="paper", answer_template: str | None = P.ANSWER_TEMPLATE) -> dict:
    """``{"input_ids", "labels"}`` for one record: prompt + solution + answer string + eos, labels ``-100`` except on
    the trained segments (the mode's choice plus the always-kept ones; the answer string and eos are trained with
    the last segment).

    The answer string (``answer_template`` with the record's ``answer``: ``</think> So, the final answer is
    \\boxed{42}``) closes the think block exactly as attribution does after the trace, so the IG target is text
    the model was trained to produce; ``answer_template=None`` (or a record without ``answer``) leaves it out.

    Prompt and solution are tokenized separately; segment character spans become token spans through the
    solution's offsets. ``pruned`` drops the untrained segments from the text instead of masking them. With
    ``max_length`` the example is cut on the right (the caller can tell from the length).
    """
    segments = segments_of(record, keywords)
    trained = sorted(set(segments_for_mode(record, mode, seed, tau, keywords))
                     | set(always_kept(len(segments), always_keep)))
    if mode == "pruned":
        segments, trained = [segments[i] for i in trained], list(range(len(trained)))
    prompt_ids, _ = P.encode(tokenizer, P.format_prompt(tokenizer, record["question"]))
    trace_ids, offsets = P.encode(tokenizer, "".join(segments))
    spans = token_spans(offsets, char_spans(segments))
    labels = [-100] * len(trace_ids)
    for k in trained:
        s, e = spans[k]
        labels[s:e] = trace_ids[s:e]
    closing = []
    if answer_template and record.get("answer") is not None:
        closing = P.encode_answer(tokenizer, record["answer"], answer_template)[0]
    closing.append(tokenizer.eos_token_id)
    last_trained = bool(trained) and trained[-1] == len(segments) - 1
    input_ids = prompt_ids + trace_ids + closing
    labels = [-100] * len(prompt_ids) + labels + (closing if last_trained else [-100] * len(closing))
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


@dataclass
class TrainConfig:
    data: str = field(metadata={"positional": True, "help": "JSON Lines with question, solution (or segments) and "
                                                            "the fields the mode needs"})
    out: str = field(metadata={"required": True, "help": "model folder to write (model, tokenizer, summary)"})
    mode: str = field(default="full", metadata={"choices": list(MODES), "help": "which segments carry the loss"})
    init: str = field(default="scratch", metadata={"help": "checkpoint folder, hub id, .gguf file or alias to "
                                                           "fine-tune; 'scratch' builds a testbed tokenizer and model"})
    size: str = field(default="tiny", metadata={"choices": list(MODEL_SIZES), "help": "model size for scratch"})
    epochs: float = field(default=3.0, metadata={"help": "training epochs"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (linear warmup, then cosine decay)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of the optimisation steps spent warming up"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per forward pass"})
    grad_accum: int = field(default=1, metadata={
        "help": "forward passes per optimisation step (effective batch: batch-size x grad-accum x processes)"})
    max_length: int = field(default=0, metadata={
        "help": "examples are cut to this many tokens, each cut counted and warned about (0: the longest example, "
                "nothing is cut)"})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (a GPU with bf16, or a CPU with "
                                                        "AVX512-BF16/AMX); weights and optimiser stay float32"})
    fp16: bool = field(default=False, metadata={"help": "float16 mixed precision with loss scaling (CUDA only)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass: far less memory for long traces, ~30%% more time"})
    attn_implementation: str = field(default="auto", metadata={
        "choices": list(ATTENTION), "help": "attention kernel (flash_attention_2 needs the flash-attn package; "
                                            "auto: the model's default)"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on every linear layer through peft (0: train all "
                                                     "weights); the adapter is merged into the saved model"})
    lora_alpha: int = field(default=0, metadata={"help": "LoRA scale numerator (0: twice the rank)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, shuffling and the random mode"})
    tau: float = field(default=TAU, metadata={"help": "cumulative strength share for strength-only"})
    always_keep: list[str] = field(default_factory=lambda: list(ALWAYS_KEEP),
                                   metadata={"help": "segments trained whatever the mode: first second_to_last last"})
    skip: int = field(default=0, metadata={"help": "leave out the first N records (held back for another use)"})
    limit: int = field(default=0, metadata={"help": "train on the first N records only, after skip (0: all)"})
    answer_template: str = field(default=P.ANSWER_TEMPLATE, metadata={
        "help": "appended after the solution with the record's answer and trained with the last segment, as "
                "attribution reads it after the trace ('' to train on the solution alone)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: torch's default)"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 0 or self.lora_r < 0 or self.lora_alpha < 0:
            raise ValueError("--max-length, --lora-r and --lora-alpha cannot be negative")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError("--warmup-ratio and --lora-dropout must lie in [0, 1)")
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"unknown attention {self.attn_implementation!r}; choose one of {', '.join(ATTENTION)}")
        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("--attn-implementation flash_attention_2 needs the flash-attn package (CUDA only): "
                             "pip install flash-attn --no-build-isolation; or use sdpa")
        check_precision(self.bf16, self.fp16)


def check_precision(bf16: bool, fp16: bool) -> None:
    """Raise ``ValueError`` (one line) for mixed precision this machine cannot run.

    fp16 autocast with a gradient scaler is a CUDA feature. bf16 needs a GPU that computes it or, on a CPU,
    AVX512-BF16/AMX: elsewhere torch emulates it (measured on a 2-core AVX2 EPYC, 2026-11-30: a 6-layer Qwen2
    step took 40.7 s under bf16 autocast against 1.4-3.6 s in float32), which defeats its purpose. An accelerate
    config that sets its own ``mixed_precision`` would be a second, silent setting: refused, so the command line
    says what runs.
    """
    import os

    import torch

    if bf16 and fp16:
        raise ValueError("--bf16 and --fp16 exclude each other")
    env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    asked = "bf16" if bf16 else "fp16" if fp16 else "no"
    if env not in ("no", asked):
        raise ValueError(f"the accelerate config sets mixed_precision: {env}, but segkit train sets precision with "
                         f"--bf16/--fp16 (here: {asked}); set mixed_precision: 'no' in the config and pass the option")
    cuda = torch.cuda.is_available()
    if fp16 and not cuda:
        raise ValueError("--fp16 needs a CUDA GPU (float16 with loss scaling); on this machine train in float32")
    if bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--bf16: {torch.cuda.get_device_name()} has no bfloat16; use --fp16")
    if bf16 and not cuda and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError(f"--bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bfloat16 arithmetic "
                         f"(needs AVX512-BF16 or AMX): emulated, it is 10-30x slower than float32; leave out --bf16")


def prepare(tokenizer, records: Sequence[dict], cfg: TrainConfig) -> tuple[list[dict], dict]:
    """The training examples and counts.

    With ``cfg.max_length`` 0 nothing is cut (the limit is the longest example); otherwise every cut example is
    counted (``n_truncated``) and named in one warning. Records left without any trained token (cut before their
    first trained segment, say) are skipped with a warning, since they would only add a 0/0 loss.
    ``trace_tokens`` is the whole trace as written (+ answer string + eos), also for pruned, whose text is shorter.
    """
    examples, stats = [], {"n_records": len(records), "n_truncated": 0, "n_skipped": 0, "trained_tokens": 0,
                           "trace_tokens": 0, "max_length": 0}
    full = [build_example(tokenizer, rec, cfg.mode, seed=cfg.seed, tau=cfg.tau, always_keep=cfg.always_keep,
                          answer_template=cfg.answer_template or None) for rec in records]
    limit = cfg.max_length or max(len(ex["input_ids"]) for ex in full)
    stats["max_length"], cut_ids = limit, []
    for rec, ex in zip(records, full):
        cut = len(ex["input_ids"]) > limit
        if cut:
            ex = {k: v[:limit] for k, v in ex.items()}
            cut_ids.append(rec.get("id"))
        n_trained = sum(label != -100 for label in ex["labels"])
        if n_trained == 0:
            log.warning("record %r: no token left to train on (mode %s%s); skipped", rec.get("id"), cfg.mode,
                        ", cut by max_length" if cut else "")
            stats["n_skipped"] += 1
            continue
        n_trace = len(P.encode(tokenizer, "".join(segments_of(rec)))[0]) + 1
        if cfg.answer_template and rec.get("answer") is not None:  # the answer string counts as trace too
            n_trace += len(P.encode_answer(tokenizer, rec["answer"], cfg.answer_template)[0])
        stats["trained_tokens"] += n_trained
        stats["trace_tokens"] += n_trace
        examples.append(ex)
    stats["n_truncated"] = len(cut_ids)
    if cut_ids:
        log.warning("%d of %d examples cut to --max-length %d tokens (records %s)", len(cut_ids), len(records),
                    limit, ", ".join(map(repr, cut_ids[:10])) + (", ..." if len(cut_ids) > 10 else ""))
    return examples, stats


def run_train(cfg: TrainConfig) -> str:
    """Train ``cfg.init`` on ``cfg.data`` with ``cfg.mode``'s masks; save an ordinary model folder; one line."""
    from .finetune import fit

    return fit(cfg)
