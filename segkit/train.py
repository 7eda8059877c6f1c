"""Stage 5 -- train, its data side: training examples whose loss mask is data, the collator, the options.

Each record becomes ``input_ids`` (prompt + solution + answer string + eos) and a 0/1 ``loss_mask`` per token (1 on
the segments the mode trains, 0 on the prompt and the rest), as TRL's ``completion_mask``; ``MaskCollator`` alone
turns masks into ignored labels. Which segments a mode trains is ``segkit.modes``; the testbed's tokenizer and model
are ``segkit.testbed_model``. The Trainer options of the paper's scale (bf16, gradient checkpointing and
accumulation, attention kernel, LoRA) are fields of ``TrainConfig``, checked when it is made; ``segkit.finetune``
runs the Trainer over these examples.

    >>> examples, stats = prepare(tokenizer, records, TrainConfig(data="runs/sel.jsonl", out="", mode="selective"))
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Sequence

from . import modes, prompt
from .modes import MODES, segments_for_mode
from .score import ALWAYS_KEEP, TAU, always_kept
from .segment import segments_of
from .testbed_model import MODEL_SIZES, build_model, build_tokenizer  # noqa: F401 (the testbed's factory)

log = logging.getLogger("segkit")

ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")
IGNORE_INDEX = -100  # the label torch's cross-entropy (and every HF model's loss) leaves out


def build_example(tokenizer, record: dict, mode: str, *, seed: int = 0, tau: float = TAU,
                  always_keep: Sequence[str] = ALWAYS_KEEP, max_length: int | None = None,
                  keywords="paper", answer_template: str | None = prompt.ANSWER_TEMPLATE) -> dict:
    """``{"input_ids", "loss_mask", "trace_tokens"}`` for one record: prompt + solution + answer string + eos, the
    mask 1 on the trained segments only (the mode's choice plus the always-kept ones; the answer string and eos are
    trained with the last segment), and the number of tokens of the trace as written (+ answer string + eos), the
    denominator of the trained share (also for ``pruned``, whose text is shorter).

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
    prompt_ids, _ = prompt.encode(tokenizer, prompt.format_prompt(tokenizer, record["question"]))
    trace_ids, _, spans = prompt.encode_segments(tokenizer, segments)
    closing = []
    if answer_template and record.get("answer") is not None:
        closing = prompt.encode_answer(tokenizer, record["answer"], answer_template)[0]
    closing.append(tokenizer.eos_token_id)
    trace_tokens = len(trace_ids) + len(closing)
    if modes.get(mode).prunes:
        segments, trained = [segments[i] for i in trained], list(range(len(trained)))
        trace_ids, _, spans = prompt.encode_segments(tokenizer, segments)
    mask = [0] * len(trace_ids)
    for k in trained:
        s, e = spans[k]
        mask[s:e] = [1] * (e - s)
    last_trained = bool(trained) and trained[-1] == len(segments) - 1
    example = {"input_ids": prompt_ids + trace_ids + closing,
               "loss_mask": [0] * len(prompt_ids) + mask + [int(last_trained)] * len(closing),
               "trace_tokens": trace_tokens}
    return cut(example, max_length) if max_length is not None else example


def cut(example: dict, max_length: int) -> dict:
    """``example`` with its tokens and mask cut to the first ``max_length``."""
    return {**example, "input_ids": example["input_ids"][:max_length], "loss_mask": example["loss_mask"][:max_length]}


@dataclass
class MaskCollator:
    """Pads examples into a batch and turns each ``loss_mask`` into ``labels``: the token where the mask is 1,
    ``IGNORE_INDEX`` elsewhere and on padding. Pads on ``padding_side`` as the tokenizer would."""
    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, examples: Sequence[dict]) -> dict:
        import torch

        width = max(len(ex["input_ids"]) for ex in examples)
        ids = torch.full((len(examples), width), self.pad_token_id)  # (B, T)
        attention, mask = torch.zeros_like(ids), torch.zeros_like(ids)  # (B, T)
        for row, ex in enumerate(examples):
            n = len(ex["input_ids"])
            at = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            ids[row, at] = torch.tensor(ex["input_ids"])
            attention[row, at] = 1
            mask[row, at] = torch.tensor(ex["loss_mask"])
        return {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}


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
    answer_template: str = field(default=prompt.ANSWER_TEMPLATE, metadata={
        "help": "appended after the solution with the record's answer and trained with the last segment, as "
                "attribution reads it after the trace ('' to train on the solution alone)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: torch's default)"})

    def __post_init__(self):
        check_train_options(vars(self))
        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("--attn-implementation flash_attention_2 needs the flash-attn package (CUDA only): "
                             "pip install flash-attn --no-build-isolation; or use sdpa")
        check_precision(self.bf16, self.fp16)


def check_train_options(o: Mapping) -> None:
    """Raise ``ValueError`` (one line) for training options that cannot run, from their values alone: no file,
    package or device is looked at (``TrainConfig`` then checks flash-attn and the precision on this machine). ``o``
    maps TrainConfig's fields to values (data, out and init are not read); ``PipelineConfig`` checks its ``train``
    and ``base_train`` options, over the defaults, here."""
    modes.get(o["mode"])  # an unknown mode: the registry's one-line error
    for name in ("batch_size", "grad_accum"):
        if o[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {o[name]}")
    if min(o["max_length"], o["lora_r"], o["lora_alpha"], o["skip"], o["limit"]) < 0:
        raise ValueError("--max-length, --lora-r, --lora-alpha, --skip and --limit cannot be negative")
    if not o["epochs"] > 0 or not o["lr"] > 0:  # a model that did not train is not a trained model
        raise ValueError(f"--epochs and --lr must be above 0, got {o['epochs']} and {o['lr']}")
    if not 0 <= o["warmup_ratio"] < 1 or not 0 <= o["lora_dropout"] < 1:
        raise ValueError("--warmup-ratio and --lora-dropout must lie in [0, 1)")
    if o["attn_implementation"] not in ATTENTION:
        raise ValueError(f"unknown attention {o['attn_implementation']!r}; choose one of {', '.join(ATTENTION)}")


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
    first trained segment, say) are skipped with a warning, since they would only add a 0/0 loss. The counts of
    trained and trace tokens are read from the examples' masks and ``trace_tokens``.
    """
    examples, stats = [], {"n_records": len(records), "n_truncated": 0, "n_skipped": 0, "trained_tokens": 0,
                           "trace_tokens": 0, "max_length": 0}
    full = [build_example(tokenizer, rec, cfg.mode, seed=cfg.seed, tau=cfg.tau, always_keep=cfg.always_keep,
                          answer_template=cfg.answer_template or None) for rec in records]
    limit = cfg.max_length or max(len(ex["input_ids"]) for ex in full)
    stats["max_length"], cut_ids = limit, []
    for rec, ex in zip(records, full):
        too_long = len(ex["input_ids"]) > limit
        if too_long:
            ex = cut(ex, limit)
            cut_ids.append(rec.get("id"))
        n_trained = sum(ex["loss_mask"])
        if n_trained == 0:
            log.warning("record %r: no token left to train on (mode %s%s); skipped", rec.get("id"), cfg.mode,
                        ", cut by max_length" if too_long else "")
            stats["n_skipped"] += 1
            continue
        stats["trained_tokens"] += n_trained
        stats["trace_tokens"] += ex["trace_tokens"]
        examples.append(ex)
    stats["n_truncated"] = len(cut_ids)
    if cut_ids:
        log.warning("%d of %d examples cut to --max-length %d tokens (records %s)", len(cut_ids), len(records),
                    limit, ", ".join(map(repr, cut_ids[:10])) + (", ..." if len(cut_ids) > 10 else ""))
    return examples, stats
