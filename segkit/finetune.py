"""The Trainer run behind ``segkit train``: model to fine-tune, optional LoRA, Trainer arguments, saving.

The examples, their loss masks and the options come from ``segkit.train`` (imported one way: train knows nothing
of the Trainer run).

Whatever the start (the testbed from scratch, a folder, a hub id, a GGUF file), the result is an ordinary
``save_pretrained`` folder (float32 weights, tokenizer, ``train_summary.json``) that ``load_model``,
``segkit attribute``/``evaluate`` and ``from_pretrained`` read; a LoRA adapter is merged into it before saving.

    >>> fit(TrainConfig(data="runs/sel.jsonl", out="runs/ft", init="smollm2-135m-instruct", mode="selective"))
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .records import load
from .testbed_model import build_model, build_tokenizer, tokenizer_corpus
from .train import MaskCollator, TrainConfig, prepare

log = logging.getLogger("segkit")


def init_folder(init: str) -> Path | None:
    """The local folder ``init`` is read from (the GGUF's folder for a file or alias), None for scratch/hub ids."""
    from .models import locate

    if init == "scratch":
        return None
    where, _ = locate(init)
    return Path(where) if Path(where).is_dir() else None


def load_init(cfg: TrainConfig, records: Sequence[dict]):
    """``(model, tokenizer)`` to train: a fresh testbed pair for ``scratch``, else the shared loader (float32:
    mixed precision casts on the fly and AdamW keeps full-precision state), then LoRA if asked."""
    if cfg.init == "scratch":
        tokenizer = build_tokenizer(tokenizer_corpus(records))
        model = build_model(tokenizer, cfg.size, seed=cfg.seed)
    else:
        from .models import load_model

        attn = None if cfg.attn_implementation == "auto" else cfg.attn_implementation
        model, tokenizer = load_model(cfg.init, dtype="float32", trainable=True, attn_implementation=attn)
    if cfg.init == "scratch" and cfg.attn_implementation != "auto":
        model.set_attn_implementation(cfg.attn_implementation)
    if cfg.lora_r:
        model = add_lora(model, cfg)
    return model, tokenizer


def add_lora(model, cfg: TrainConfig):
    """Wrap ``model`` in a peft LoRA on every linear layer but the output head; a model without any raises."""
    import torch
    from peft import LoraConfig, get_peft_model

    head = model.get_output_embeddings()
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]
    if not linear:
        raise ValueError(f"--lora-r {cfg.lora_r}: {cfg.init} has no linear layers to adapt; train it without LoRA")
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if cfg.gradient_checkpointing:  # the frozen embeddings give no grad to checkpointed blocks otherwise
        model.enable_input_require_grads()
    return model


def training_arguments(cfg: TrainConfig, n_examples: int, output_dir=None):
    import torch
    from transformers import TrainingArguments

    world = int(os.environ.get("WORLD_SIZE", 1))
    steps_per_epoch = max(1, math.ceil(n_examples / (cfg.batch_size * world * cfg.grad_accum)))
    return TrainingArguments(
        # under torchrun/accelerate on CPU-only machines DDP needs the gloo backend (nccl is for GPUs)
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
        output_dir=str(output_dir or cfg.out), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        bf16=cfg.bf16, fp16=cfg.fp16, activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        weight_decay=0.01, max_grad_norm=1.0,
        adam_beta2=0.98,  # short runs: the second moment has to follow the early, fast-falling gradients
        seed=cfg.seed, data_seed=cfg.seed, train_sampling_strategy="group_by_length",
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="no", report_to=[], disable_tqdm=True, dataloader_pin_memory=False,
        remove_unused_columns=False)  # the collator reads loss_mask, which no model's forward takes


def fit(cfg: TrainConfig) -> str:
    """Train, save the model folder and ``train_summary.json``, and return one line."""
    from .records import building_folder, check_output, launch_id

    source = init_folder(cfg.init)
    out = check_output(cfg.out, *([source] if source else []), folder=True)
    # built beside OUT and renamed into place at the end: a failed run leaves the old model and summary whole
    with building_folder(out, "train_summary.json", key=hashlib.sha1(launch_id().encode()).hexdigest()[:12],
                         main=int(os.environ.get("RANK", 0)) == 0) as tmp:
        return _fit(cfg, out, tmp)


def _fit(cfg: TrainConfig, out: Path, tmp: Path) -> str:
    """``fit`` into the temporary folder ``tmp`` that becomes ``out``."""
    import torch
    from transformers import Trainer, set_seed

    from .records import write_json

    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        raise ValueError("the accelerate config sets fsdp_activation_checkpointing; segkit train sets it with "
                         "--gradient-checkpointing: remove it from the config and pass the option")
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
    args = training_arguments(cfg, len(examples), tmp)
    trainer = Trainer(model=model, args=args, train_dataset=examples, processing_class=tokenizer,
                      data_collator=MaskCollator(tokenizer.pad_token_id, tokenizer.padding_side))
    result = trainer.train()
    if not math.isfinite(result.training_loss):  # not a trained model: nothing is saved, the old OUT stays
        raise ValueError(f"training diverged (loss {result.training_loss}); nothing saved: lower --lr")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.lora_r:
        model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.is_world_process_zero():
            model.save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))  # writes on the main process only, under torchrun/accelerate too
    summary = {
        "mode": cfg.mode, "init": cfg.init, "n_records": stats["n_records"], "n_examples": len(examples),
        "n_skipped": stats["n_skipped"], "n_truncated": stats["n_truncated"], "max_length": stats["max_length"],
        "trained_token_fraction": stats["trained_tokens"] / max(stats["trace_tokens"], 1),
        "train_loss": float(result.training_loss), "seconds": round(time.perf_counter() - t0, 1),
        "n_params": sum(p.numel() for p in model.parameters()), "n_trainable": n_trainable,
        "config": asdict(cfg)}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(tmp))
        summary["world_size"] = args.world_size
        write_json(summary, tmp / "train_summary.json")  # last: it marks a finished model
    return (f"{cfg.mode}: {len(examples)} examples ({stats['n_skipped']} skipped, {stats['n_truncated']} cut to "
            f"{stats['max_length']} tokens), {summary['trained_token_fraction']:.0%} of trace tokens trained, "
            f"loss {summary['train_loss']:.3f} -> {out}")
