"""A run's sources, resolved once: what the parameters name, or the embedded testbed's.

A run names four sources (``PipelineConfig``): the training traces (``train_data``, LIMO-format JSON Lines), the
model every mode fine-tunes (``base_model``), the model IG asks (``attributor``, default: the base model, as the
authors do) and the benchmark files (``benchmarks``). Any source left at None comes from the embedded testbed: the
synthetic training split (long traces), the held-out split, and base models trained here from scratch, one per
``base_seeds``, on ``n_base`` traces of their own style (``base_synth``: concise, the useful path only), so that
fine-tuning on the long traces has something to teach and something to unlearn, as a reasoning model's traces have
for the paper's base models. ``Sources`` resolves each source on first use and only then (attributing with a given
attributor trains no base model), and every step gets what it needs from it. Everything built here is cached in
``workdir`` under a key of its options, inputs and code (``segkit.cache``).

    >>> src = Sources(config_from({"workdir": "runs/x", "n_train": 400, "n_attribute": 32}))
    >>> src.train_data, src.attributor       # the testbed's training split; its base model (trained on first use)
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .cache import code_hash, file_key, key, model_key
from .config import PipelineConfig
from .jobs import keyed, run_parallel, threads_per_run

log = logging.getLogger("segkit")


@dataclass(frozen=True)
class Sources:
    """The sources of the run ``cfg``; each attribute is resolved (and the testbed built) on first use."""
    cfg: PipelineConfig

    @cached_property
    def testbed(self) -> dict[str, Path]:
        return build_testbed(self.cfg)

    @cached_property
    def train_data(self) -> Path:
        return Path(self.cfg.train_data) if self.cfg.train_data else self.testbed["train"]

    @cached_property
    def benchmarks(self) -> list[Path]:
        return [Path(b) for b in self.cfg.benchmarks] if self.cfg.benchmarks else [self.testbed["test"]]

    @cached_property
    def base_models(self) -> dict[int, str]:
        """``{base seed: model}``: ``cfg.base_model`` (one), or the testbed's, trained here on first use."""
        return base_models(self.cfg, self)

    @property
    def base_model(self) -> str:
        """What every mode fine-tunes (the first base seed's model)."""
        return self.base_models[self.cfg.base_seeds[0]]

    @cached_property
    def attributor(self) -> str:
        return self.cfg.attributor or self.base_model

    @property
    def held_out(self) -> tuple[Path, int]:
        """``(file, skip)``: the traces that score the attributor are those of ``file`` after the first ``skip``:
        the testbed's test split, or the traces of ``train_data`` after those attributed (none when all are)."""
        if self.cfg.train_data:
            from .records import load
            return self.train_data, self.cfg.n_attribute or len(load(self.train_data))
        return self.testbed["test"], 0


def has_planted_roles(path) -> bool:
    """Whether every record of ``path`` carries the testbed's planted ``segment_roles`` (real data does not)."""
    from .records import load
    return all("segment_roles" in r for r in load(path))


def build_testbed(cfg: PipelineConfig) -> dict[str, Path]:
    """The synthetic train and test splits (``segkit synth``); cached."""
    from .synth import SynthConfig, run_synth

    k = key(n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed, synth=cfg.synth, code=code_hash("segkit.synth"))
    root = Path(cfg.workdir) / f"testbed-{k}"
    paths = {"train": root / "train.jsonl", "test": root / "test.jsonl"}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        if not paths[split].exists():
            log.info("synth %s: %d problems", split, n)
            # synth writes OUT atomically: an interrupted run leaves no file the cache takes as done
            run_synth(SynthConfig(out=str(paths[split]), n=n, seed=cfg.seed, split=split, **cfg.synth))
    return paths


def base_traces(cfg: PipelineConfig, testbed: dict[str, Path]) -> Path:
    """The base models' training traces: ``n_base`` problems written with ``base_synth`` over ``synth``, none of
    them a problem of the ``testbed``'s splits (so fine-tuning teaches new problems); cached."""
    from .records import dump, load
    from .synth import SynthConfig, make_records

    opts = {**cfg.synth, **cfg.base_synth}
    k = key(n=cfg.n_base, seed=cfg.seed, opts=opts, train=file_key(testbed["train"], cfg.workdir),
            test=file_key(testbed["test"], cfg.workdir), code=code_hash("segkit.synth"))
    out = testbed["train"].parent / f"base-{k}.jsonl"
    if not out.exists():
        taken = {r["question"] for p in testbed.values() for r in load(p)}
        extra = len(taken) + 100
        records = [r for r in make_records(SynthConfig(out="", n=cfg.n_base + extra, seed=cfg.seed + 1_000_003,
                                                       **opts)) if r["question"] not in taken]
        if len(records) < cfg.n_base:
            raise ValueError(f"only {len(records)} base problems differ from the training and test ones; make the "
                             "problems larger (synth options) or n_base smaller")
        log.info("synth base traces: %d problems (%s)", cfg.n_base, opts)
        dump(records[:cfg.n_base], out)
    return out


def base_models(cfg: PipelineConfig, src: Sources) -> dict[int, str]:
    """``{base seed: model}``: ``cfg.base_model`` (one), or the testbed's base models, one per ``base_seeds``,
    trained from scratch on ``base_traces`` (in ``workers`` processes); cached."""
    from .train import TrainConfig

    if cfg.base_model:  # (PipelineConfig refuses train_data without a base_model: then it is the testbed's)
        return {cfg.base_seeds[0]: cfg.base_model}
    data, opts = base_traces(cfg, src.testbed), {"threads": threads_per_run(cfg), **cfg.base_train}
    size = opts.pop("size", "tiny")
    out, jobs = {}, []
    for seed in cfg.base_seeds:
        k = key(train=keyed(opts), size=size, data=file_key(data, cfg.workdir), seed=seed,
                code=code_hash("segkit.finetune"))
        path = data.parent / f"base-seed{seed}-{k}"
        out[seed] = str(path)
        if not (path / "train_summary.json").exists():
            init = testbed_init([data, src.testbed["train"]], size, seed, path.with_name(f"init-seed{seed}-{k}"))
            jobs.append(("train", TrainConfig(data=str(data), out=str(path), mode="full", seed=seed,
                                              init=str(init), **opts)))
    if jobs:
        log.info("training %d testbed base model(s) on %s", len(jobs), data)
        run_parallel(cfg, jobs)
    return out


def testbed_init(corpus: list[Path], size: str, seed: int, out: Path) -> Path:
    """A fresh testbed model of ``size`` (``seed``) with a tokenizer built over the traces of the ``corpus`` files
    (the base traces and the training split, so the words of the long traces a mode fine-tunes on are single
    tokens too); cached."""
    from .records import load
    from .testbed_model import build_model, build_tokenizer, tokenizer_corpus

    if not (out / "config.json").exists():
        part = out.with_name(out.name + ".part")
        build_model(build_tokenizer(tokenizer_corpus([r for f in corpus for r in load(f)])), size, path=part,
                    seed=seed)
        part.rename(out)
    return out


def random_weights(cfg: PipelineConfig, model: str, seed: int = 0) -> str:
    """``model``'s architecture with random weights, for the model-randomisation sanity check (Adebayo et al.,
    2018): a testbed base model's own initialisation (the ``init-seed*`` folder ``base_models`` keeps beside it),
    else ``model``'s config initialised afresh (``from_config`` after seeding torch with ``seed``), saved with its
    tokenizer in ``workdir``; cached."""
    path = Path(model)
    init = path.with_name(path.name.replace("base-seed", "init-seed", 1))
    if path.name.startswith("base-seed") and (init / "config.json").exists():
        return str(init)
    out = Path(cfg.workdir) / f"random-weights-{path.name}-{key(model=model_key(model, cfg.workdir), seed=seed)}"
    if not (out / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM

        from .models import load_model
        trained, tokenizer = load_model(model, device="cpu", dtype="float32")
        torch.manual_seed(seed)
        part = out.with_name(out.name + ".part")
        AutoModelForCausalLM.from_config(trained.config).save_pretrained(str(part))
        tokenizer.save_pretrained(str(part))
        part.rename(out)
    return str(out)


def variant(cfg: PipelineConfig, name: str) -> PipelineConfig:
    """The run on the testbed variant ``name`` (``cfg.variants[name]``: synth options over ``cfg.synth``, e.g.
    ``{"restate_answer": 0}``); its traces, attributions and removal effects come from the usual steps. Its
    attributor is ``cfg.attributor`` as given: ``segkit.pipeline.variant`` pins it to ``cfg``'s resolved one."""
    if name not in cfg.variants:  # (PipelineConfig refuses variants beside train_data)
        raise ValueError(f"no testbed variant {name!r}; the variants are {sorted(cfg.variants)}")
    return dataclasses.replace(cfg, synth={**cfg.synth, **cfg.variants[name]}, variants={})
