"""Stage 5 -- train: (selective) supervised fine-tuning with the loss masked to chosen segments.

Each record becomes ordinary ``input_ids``/``labels`` (prompt + solution + eos; ``-100`` on the prompt and on the
segments the mode does not train), so any Hugging Face Trainer can consume it. ``segments_for_mode`` is the one
place that says which segments a mode trains. For the testbed, ``build_tokenizer``/``build_model`` make a word-level
tokenizer and a ~1M-parameter Qwen2 from the synthetic corpus, saved like any hub checkpoint.

    >>> run_train(TrainConfig(data="runs/selected.jsonl", out="runs/selective", mode="selective", init="scratch"))
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from . import prompt as P
from .records import load
from .score import ALWAYS_KEEP, TAU, always_kept, random_selection, top_by_cumulative, top_fraction
from .segment import char_spans, segment, token_spans

log = logging.getLogger("segkit")

MODES = ("full", "selective", "pruned", "random", "strength-only", "perplexity", "entropy", "oracle")
USEFUL_ROLES = ("core", "verify", "correction")  # segkit.synth.USEFUL, spelled out so train needs no synth import

# the testbed tokenizer: ChatML turns; the generation prompt opens the think block as R1-distilled models do
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
# pre-tokens: a paragraph break, a word or a run of punctuation with its leading space, a single digit. A space
# before a digit goes to the token before it, so a digit is the same token in " = 7" and in "\boxed{7}": the
# answer is copied, not translated
PRETOKEN_PATTERN = r"\n\n|\n| ?[A-Za-z]+(?: (?=[0-9]))?| ?[^\sA-Za-z0-9]+(?: (?=[0-9]))?|[0-9]|\s+"
MODEL_SIZES = {  # hidden, layers, heads, kv heads, mlp
    "tiny": (128, 4, 4, 4, 384),
    "small": (256, 6, 8, 4, 768),
}


def build_tokenizer(texts: Iterable[str], path: str | Path | None = None, vocab_size: int = 2000):
    """A byte-level BPE whose merges run until every frequent word and number is one token (word-level in practice,
    bytes as fallback), wrapped as ``PreTrainedTokenizerFast`` with a ChatML template; saved to ``path`` if given.

    Byte-level pieces keep offsets exact and make ``decode`` return the text as written (spaces included).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   unk_token=None, bos_token=None, model_max_length=4096)
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[2:])})
    fast.chat_template = CHAT_TEMPLATE
    if path is not None:
        fast.save_pretrained(str(path))
    return fast


def build_model(tokenizer, size: str = "tiny", path: str | Path | None = None, seed: int = 0):
    """A freshly initialised Qwen2 causal LM sized for the testbed (``tiny`` is about 1M parameters)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    hidden, layers, heads, kv_heads, mlp = MODEL_SIZES[size]
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=mlp,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if path is not None:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    return model


def record_segments(record: dict, keywords="paper") -> list[str]:
    """The record's segments: its ``segments`` field if the segment stage ran, else the solution split here."""
    if "segments" in record:
        return list(record["segments"])
    if "solution" not in record:
        raise ValueError("record has neither 'segments' nor 'solution'")
    return segment(record["solution"], keywords)


def _field(record: dict, name: str, mode: str, hint: str):
    if name not in record:
        raise ValueError(f"mode {mode!r} needs the record field {name!r} ({hint}); record {record.get('id')!r} "
                         f"lacks it")
    return record[name]


def segments_for_mode(record: dict, mode: str, seed: int = 0, tau: float = TAU, keywords="paper") -> list[int]:
    """Sorted indices of the segments ``mode`` trains, before the always-kept ones are added."""
    n = len(record_segments(record, keywords))
    selected = lambda: _field(record, "selected_spans_ids", mode, "run `segkit select` first")  # noqa: E731
    if mode == "full":
        chosen = range(n)
    elif mode in ("selective", "pruned"):
        chosen = selected()
    elif mode == "random":  # as many segments as the selection took in this trace, drawn per trace
        chosen = random_selection(n, len(selected()), f"{seed}:{record.get('id')}")
    elif mode == "strength-only":
        chosen = top_by_cumulative(_field(record, "strength", mode, "run `segkit attribute` first"), tau)
    elif mode in ("perplexity", "entropy"):
        name = "segment_log_perplexity" if mode == "perplexity" else "segment_entropy"
        chosen = top_fraction(_field(record, name, mode, "run `segkit attribute` first"), len(selected()))
    elif mode == "oracle":
        roles = _field(record, "segment_roles", mode, "only synthetic records from `segkit synth` have it")
        chosen = [i for i, r in enumerate(roles) if r in USEFUL_ROLES]
    else:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    chosen = sorted(set(int(i) for i in chosen))
    if chosen and not 0 <= chosen[0] <= chosen[-1] < n:
        raise ValueError(f"record {record.get('id')!r}: segment index out of range 0..{n - 1} for mode {mode!r}")
    return chosen


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
    segments = record_segments(record, keywords)
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
        closing = P.encode(tokenizer, P.answer_text(str(record["answer"]), answer_template)[0])[0]
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
    init: str = field(default="scratch", metadata={"help": "checkpoint folder, hub id or alias to fine-tune; "
                                                           "'scratch' builds a testbed tokenizer and model"})
    size: str = field(default="tiny", metadata={"choices": list(MODEL_SIZES), "help": "model size for scratch"})
    epochs: float = field(default=3.0, metadata={"help": "training epochs"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (cosine decay, 5%% warmup)"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimisation step"})
    max_length: int = field(default=1024, metadata={"help": "examples are cut to this many tokens"})
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


def prepare(tokenizer, records: Sequence[dict], cfg: TrainConfig) -> tuple[list[dict], dict]:
    """The training examples and counts: records left without any trained token (cut away by ``max_length``,
    say) are skipped with a warning, since they would only add a 0/0 loss."""
    examples, stats = [], {"n_records": len(records), "n_truncated": 0, "n_skipped": 0, "trained_tokens": 0,
                           "trace_tokens": 0}
    for rec in records:
        ex = build_example(tokenizer, rec, cfg.mode, seed=cfg.seed, tau=cfg.tau, always_keep=cfg.always_keep,
                           answer_template=cfg.answer_template or None)
        cut = len(ex["input_ids"]) > cfg.max_length
        if cut:
            ex = {k: v[:cfg.max_length] for k, v in ex.items()}
            stats["n_truncated"] += 1
        n_trained = sum(label != -100 for label in ex["labels"])
        if n_trained == 0:
            log.warning("record %r: no token left to train on (mode %s%s); skipped", rec.get("id"), cfg.mode,
                        ", cut by max_length" if cut else "")
            stats["n_skipped"] += 1
            continue
        # the denominator is the whole trace (+ answer string + eos) as written, also for pruned, whose text is shorter
        full_len = len(P.encode(tokenizer, "".join(record_segments(rec)))[0]) + 1
        if cfg.answer_template and rec.get("answer") is not None:  # the answer string counts as trace too
            full_len += len(P.encode(tokenizer, P.answer_text(str(rec["answer"]), cfg.answer_template)[0])[0])
        stats["trained_tokens"] += n_trained
        stats["trace_tokens"] += full_len
        examples.append(ex)
    return examples, stats


def load_init(cfg: TrainConfig, records: Sequence[dict]):
    """``(model, tokenizer)`` to train: a fresh testbed pair for ``scratch``, else the shared loader."""
    if cfg.init == "scratch":
        texts = [P.PROMPT_SUFFIX, P.ANSWER_TEMPLATE] + [t for r in records for t in (r["question"], r["solution"])]
        tokenizer = build_tokenizer(texts)
        return build_model(tokenizer, cfg.size, seed=cfg.seed), tokenizer
    from .models import load_model

    # float32 weights: the Trainer's mixed precision (if any) casts on the fly, AdamW keeps full-precision state
    return load_model(cfg.init, dtype="float32", trainable=True)


def run_train(cfg: TrainConfig) -> str:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose one of {', '.join(MODES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    set_seed(cfg.seed)
    records = load(cfg.data)[cfg.skip:][:cfg.limit or None]
    if not records:
        raise ValueError(f"{cfg.data}: no records")
    model, tokenizer = load_init(cfg, records)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, stats = prepare(tokenizer, records, cfg)
    if not examples:
        raise ValueError(f"no example has a token to train on (mode {cfg.mode}, {stats['n_skipped']} skipped)")
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    # under torchrun/accelerate on CPU-only machines DDP needs the gloo backend (nccl is for GPUs)
    multi_cpu = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.cuda.is_available()
    args = TrainingArguments(
        ddp_backend="gloo" if multi_cpu else None, output_dir=cfg.out, num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr, per_device_train_batch_size=cfg.batch_size, lr_scheduler_type="cosine",
        warmup_steps=max(1, int(0.05 * steps_per_epoch * cfg.epochs)), weight_decay=0.01, max_grad_norm=1.0,
        adam_beta2=0.98,  # short runs: the second moment has to follow the early, fast-falling gradients
        seed=cfg.seed, data_seed=cfg.seed, train_sampling_strategy="group_by_length",
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="no", report_to=[], disable_tqdm=True, dataloader_pin_memory=False)
    trainer = Trainer(model=model, args=args, train_dataset=examples, processing_class=tokenizer,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    result = trainer.train()
    out = Path(cfg.out)
    trainer.save_model(str(out))  # writes on the main process only, under torchrun/accelerate too
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
    summary = {
        "mode": cfg.mode, "init": cfg.init, "n_records": stats["n_records"], "n_examples": len(examples),
        "n_skipped": stats["n_skipped"], "n_truncated": stats["n_truncated"],
        "trained_token_fraction": stats["trained_tokens"] / max(stats["trace_tokens"], 1),
        "train_loss": float(result.training_loss), "seconds": round(time.perf_counter() - t0, 1),
        "n_params": sum(p.numel() for p in model.parameters()), "config": asdict(cfg)}
    if trainer.is_world_process_zero():
        summary["world_size"] = args.world_size
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return (f"{cfg.mode}: {len(examples)} examples ({stats['n_skipped']} skipped, {stats['n_truncated']} truncated), "
            f"{summary['trained_token_fraction']:.0%} of trace tokens trained, loss {summary['train_loss']:.3f} "
            f"-> {out}")
