"""The whole method on the embedded testbed, as cached steps that notebooks and ``segkit report`` call.

Every step writes into ``workdir`` under a name that carries a hash of the options that determine it, so a rerun
reuses what is finished (and resumes a half-written attribution file), while changed options get fresh outputs.

    >>> cfg = PipelineConfig(workdir="runs/default")
    >>> paths = build_testbed(cfg)                      # synth train/test + the attributor trained on full traces
    >>> attributed = attribute_traces(cfg)              # segment + attribute + select, one JSON Lines file
    >>> table = compare_modes(cfg, attributed)          # train every mode, evaluate, one row per (mode, seed)

The first ``n_attribute`` training problems are the fine-tuning set (attributed, then trained on by every mode); the
attributor learns from the others, so it attributes traces it has not seen, and it is the base model every mode
fine-tunes from, as the paper fine-tunes one base model on LIMO's traces.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("segkit")

MODES = ("full", "selective", "pruned", "random", "strength-only", "perplexity", "entropy", "oracle")


@dataclass
class PipelineConfig:
    workdir: str = "runs/default"
    seed: int = 0
    # the testbed (segkit.synth.SynthConfig options; difficulty knobs go in `synth`)
    n_train: int = 4000
    n_test: int = 100
    synth: dict = field(default_factory=dict)
    # the attributor: None trains one on full traces of the training split; else a model path, hub id or alias
    attributor: str | None = None
    attributor_epochs: float = 6.0
    # attribution and selection
    n_attribute: int = 1000
    ig_steps: int = 16
    ig_method: str = "gausslegendre"
    ig_baseline: str = "pad-trace"
    target_error: float | None = None
    tau: float = 0.7
    beta: float = 0.8
    # selective fine-tuning and evaluation: every mode starts from `finetune_init` ("attributor": the base model
    # trained on the other problems; "scratch": a fresh testbed model; or a model path)
    finetune_init: str = "attributor"
    finetune_lr: float = 1e-3
    modes: list = field(default_factory=lambda: list(MODES))
    seeds: list = field(default_factory=lambda: [0])
    train_epochs: float = 6.0
    train: dict = field(default_factory=dict)     # more segkit.train.TrainConfig options
    n_eval: int = 100
    max_new_tokens: int = 512
    device: str = "auto"


def _key(**parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _where(model: str, cfg: PipelineConfig) -> str:
    """A model as a cache key: a local folder by its path relative to workdir (so relative and absolute spellings
    share the cache), anything else (a hub id, an alias) as given."""
    return os.path.relpath(Path(model).resolve(), Path(cfg.workdir).resolve()) if Path(model).exists() else model


def _synth_key(cfg):
    return dict(n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed, synth=cfg.synth)


def build_testbed(cfg: PipelineConfig) -> dict[str, Path]:
    """Train/test traces and the attributor model (trained here on full traces unless ``cfg.attributor``)."""
    from .synth import SynthConfig, run_synth
    from .train import TrainConfig, run_train

    root = Path(cfg.workdir) / f"testbed-{_key(**_synth_key(cfg))}"
    paths = {"train": root / "train.jsonl", "test": root / "test.jsonl"}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        if not paths[split].exists():
            log.info("synth %s: %d problems", split, n)
            run_synth(SynthConfig(out=str(paths[split]), n=n, seed=cfg.seed, split=split, **cfg.synth))
    if cfg.attributor:
        paths["attributor"] = cfg.attributor
        return paths
    model = root / f"attributor-{_key(epochs=cfg.attributor_epochs, train=cfg.train, skip=cfg.n_attribute)}"
    if not (model / "train_summary.json").exists():
        if cfg.n_train <= cfg.n_attribute:
            raise ValueError(f"n_train ({cfg.n_train}) must exceed n_attribute ({cfg.n_attribute}): the attributor "
                             "trains on the problems after the first n_attribute")
        log.info("training the attributor on %d full traces", cfg.n_train - cfg.n_attribute)
        opts = {**cfg.train, "epochs": cfg.attributor_epochs}
        run_train(TrainConfig(data=str(paths["train"]), out=str(model), mode="full", seed=cfg.seed,
                              skip=cfg.n_attribute, **opts))
    paths["attributor"] = model
    return paths


def attribute_traces(cfg: PipelineConfig, model: str | None = None, n: int | None = None) -> Path:
    """Segment, attribute and select ``n`` (default ``cfg.n_attribute``) training traces; resumable."""
    from . import records
    from .attribute import attribute_record
    from .models import load_model, pad_token_id
    from .score import select_record
    from .segment import segment_record

    paths = build_testbed(cfg)
    model = str(model or paths["attributor"])
    n = n or cfg.n_attribute
    name = Path(model).name if Path(model).exists() else model.replace("/", "_")
    key = _key(synth=_synth_key(cfg), model=_where(model, cfg), n=n, steps=cfg.ig_steps, method=cfg.ig_method,
               baseline=cfg.ig_baseline, target_error=cfg.target_error)
    root = Path(cfg.workdir) / f"attributed-{name}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    subset = root / "input.jsonl"
    if not subset.exists():
        records.dump([segment_record(r) for r in records.load(paths["train"])[:n]], subset)
    out = root / "attributed.jsonl"
    if len(records.finished_ids(out)) < n:
        m, tok = load_model(model, device=cfg.device, dtype="float32")
        opts = dict(steps=cfg.ig_steps, method=cfg.ig_method, baseline=cfg.ig_baseline, pad_id=pad_token_id(tok),
                    target_error=cfg.target_error)
        records.run_stage(lambda r: attribute_record(m, tok, r, **opts), subset, out, desc=f"attribute ({name})",
                          required=("question", "answer", "segments"))
    selected = root / f"selected-tau{cfg.tau}-beta{cfg.beta}.jsonl"
    if not selected.exists():
        records.dump([select_record(r, cfg.tau, cfg.beta) for r in records.load(out)], selected)
    return selected


def finetune_init(cfg: PipelineConfig) -> str:
    """What every mode starts from: the attributor (the base model), ``scratch``, or a model path."""
    return str(build_testbed(cfg)["attributor"]) if cfg.finetune_init == "attributor" else cfg.finetune_init


def finetune(cfg: PipelineConfig, data: Path, mode: str, seed: int = 0) -> Path:
    """Fine-tune ``finetune_init`` with ``mode`` on the selected traces in ``data``; cached."""
    from .train import TrainConfig, run_train

    init = finetune_init(cfg)
    # the selection file is part of the key: modes other than full and oracle train on what it selects
    key = _key(epochs=cfg.train_epochs, train=cfg.train, init=_where(init, cfg), lr=cfg.finetune_lr,
               data=Path(data).name)
    out = Path(data).parent / f"model-{mode}-seed{seed}-{key}"
    if not (out / "train_summary.json").exists():
        opts = {**cfg.train, "lr": cfg.finetune_lr}
        if init != "scratch":
            opts.pop("size", None)
        run_train(TrainConfig(data=str(data), out=str(out), mode=mode, seed=seed, epochs=cfg.train_epochs,
                              tau=cfg.tau, init=init, **opts))
    return out


def evaluate_model(cfg: PipelineConfig, model_dir: Path) -> dict:
    """Greedy accuracy and mean output length of ``model_dir`` on ``cfg.n_eval`` held-out problems; cached."""
    from .evaluate import EvalConfig, run_evaluate

    test = build_testbed(cfg)["test"]
    out = Path(model_dir) / f"eval-{_key(test=str(test), n=cfg.n_eval, max_new=cfg.max_new_tokens)}.jsonl"
    summary_path = out.with_name(out.name.replace(".jsonl", ".summary.json"))
    if not summary_path.exists():
        run_evaluate(EvalConfig(model=str(model_dir), data=[str(test)], out=str(out), limit=cfg.n_eval,
                                batch_size=32, max_new_tokens=cfg.max_new_tokens, device=cfg.device,
                                dtype="float32"))
    summary = json.loads(summary_path.read_text())
    (dataset,) = summary["datasets"].values()
    return dataset


def attributor_quality(cfg: PipelineConfig, model: str | None = None) -> dict:
    """How well the attributor does on held-out problems: the share where it writes the gold answer after reading
    the gold trace (what the IG target asks of it) and, for the testbed attributor, the share it solves by
    generating its own trace (greedy). Cached next to the model when it is a folder."""
    from .evaluate import answer_after_trace
    from .models import load_model
    from .records import load

    paths = build_testbed(cfg)
    model = str(model or paths["attributor"])
    test = load(paths["test"])[:cfg.n_eval]
    cache = Path(model) / f"quality-{_key(test=str(paths['test']), n=len(test))}.json" if Path(model).is_dir() \
        else None
    if cache is not None and cache.exists():
        return json.loads(cache.read_text())
    m, tok = load_model(model, device=cfg.device, dtype="float32")
    quality = {"n_problems": len(test), "answer_after_gold_trace": sum(answer_after_trace(m, tok, test)) / len(test)}
    if not cfg.attributor:
        quality["own_trace_accuracy"] = evaluate_model(cfg, Path(model))["accuracy"]
    if cache is not None:
        cache.write_text(json.dumps(quality, indent=2) + "\n")
    return quality


def compare_modes(cfg: PipelineConfig, data: Path, modes=None, seeds=None):
    """Train and evaluate every mode and seed: a DataFrame of accuracy, output length and trained-token share."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    init = finetune_init(cfg)
    if init != "scratch":  # the starting point, for reference: what fine-tuning changed
        ev = evaluate_model(cfg, Path(init))
        rows.append({"mode": "base", "seed": None, "accuracy": ev["accuracy"],
                     "mean_length": ev["mean_length"], "trained_token_fraction": 0.0, "train_loss": None,
                     "n_examples": 0, "train_seconds": 0.0, "model": init})
    runs = [(m, s) for m in (modes or cfg.modes) for s in (seeds or cfg.seeds)]
    for mode, seed in tqdm(runs, desc="modes"):
        model_dir = finetune(cfg, data, mode, seed)
        train = json.loads((model_dir / "train_summary.json").read_text())
        ev = evaluate_model(cfg, model_dir)
        rows.append({"mode": mode, "seed": seed, "accuracy": ev["accuracy"], "mean_length": ev["mean_length"],
                     "trained_token_fraction": train["trained_token_fraction"], "train_loss": train["train_loss"],
                     "n_examples": train["n_examples"], "train_seconds": train["seconds"], "model": str(model_dir)})
    return pd.DataFrame(rows)


def config_from(params: dict) -> PipelineConfig:
    """A PipelineConfig from a parameter dict (unknown keys are an error, so typos do not pass silently)."""
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = set(params) - names
    if unknown:
        raise ValueError(f"unknown pipeline parameters {sorted(unknown)}; known: {sorted(names)}")
    return PipelineConfig(**params)


__all__ = ["PipelineConfig", "build_testbed", "attribute_traces", "finetune_init", "finetune", "evaluate_model",
           "attributor_quality", "compare_modes",
           "config_from", "MODES", "asdict"]
