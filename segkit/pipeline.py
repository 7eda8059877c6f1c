"""The experiment as cached steps over its sources: the notebooks and ``segkit report`` call these.

A run names four sources (``PipelineConfig``): the training traces (``train_data``, LIMO-format JSON Lines), the
model every mode fine-tunes (``base_model``), the model IG asks (``attributor``, default: the base model, as the
authors do) and the benchmark files (``benchmarks``). Any source left at None comes from the embedded testbed: the
synthetic training split (long traces), the held-out split, and base models trained here from scratch, one per
``base_seeds``, on ``n_base`` traces of their own style (``base_synth``: concise, the useful path only), so that
fine-tuning on the long traces has something to teach and something to unlearn, as a reasoning model's traces have
for the paper's base models. Each step calls a stage's ``run_*`` function with that stage's options dataclass
(``attribute``, ``train``, ``generate`` are dicts of those dataclasses' fields, spelled as on the command line).
Independent training, attribution and evaluation runs go to ``workers`` processes on a CPU.

Every step writes into ``workdir`` under a name that carries a hash of what determines it: its options, its input
and the source code of the segkit modules its stage imports (``code_hash``). A rerun reuses what is finished
(resuming a half-written attribution), and a change of options, input or stage code recomputes exactly the steps it
affects.

    >>> cfg = config_from({"workdir": "runs/x", "n_train": 400, "n_attribute": 32})
    >>> selected = select_traces(cfg)          # segment, attribute, select: one JSON Lines file
    >>> table = compare_modes(cfg, selected)   # train every mode, evaluate on every benchmark
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .cache import code_hash, file_key, key, model_key
from .config import PipelineConfig, config_from
from .score import MODES

log = logging.getLogger("segkit")

def _keyed(opts: dict) -> dict:
    """Stage options as part of a cache key: the thread count changes speed, not results."""
    return {k: v for k, v in opts.items() if k != "threads"}


def _stem(model: str) -> str:
    return Path(model).name if Path(model).exists() else model.replace("/", "_")


# ---------------------------------------------------------------------------------------------------------------
# the sources

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
            # synth, segment and select write OUT atomically: an interrupted run leaves no file the cache takes as done
            run_synth(SynthConfig(out=str(paths[split]), n=n, seed=cfg.seed, split=split, **cfg.synth))
    return paths


def base_traces(cfg: PipelineConfig) -> Path:
    """The base models' training traces: ``n_base`` training-split problems written with ``base_synth`` over
    ``synth``, none of them a problem of the training or test file (so fine-tuning teaches new problems); cached."""
    from .records import dump, load
    from .synth import SynthConfig, make_records

    paths = build_testbed(cfg)
    opts = {**cfg.synth, **cfg.base_synth}
    k = key(n=cfg.n_base, seed=cfg.seed, opts=opts, train=file_key(paths["train"], cfg.workdir),
            test=file_key(paths["test"], cfg.workdir), code=code_hash("segkit.synth"))
    out = paths["train"].parent / f"base-{k}.jsonl"
    if not out.exists():
        taken = {r["question"] for p in paths.values() for r in load(p)}
        extra = len(taken) + 100
        records = [r for r in make_records(SynthConfig(out="", n=cfg.n_base + extra, seed=cfg.seed + 1_000_003,
                                                       **opts)) if r["question"] not in taken]
        if len(records) < cfg.n_base:
            raise ValueError(f"only {len(records)} base problems differ from the training and test ones; make the "
                             "problems larger (synth options) or n_base smaller")
        log.info("synth base traces: %d problems (%s)", cfg.n_base, opts)
        dump(records[:cfg.n_base], out)
    return out


def train_data(cfg: PipelineConfig) -> Path:
    return Path(cfg.train_data) if cfg.train_data else build_testbed(cfg)["train"]


def benchmarks(cfg: PipelineConfig) -> list[Path]:
    return [Path(b) for b in cfg.benchmarks] if cfg.benchmarks else [build_testbed(cfg)["test"]]


def base_models(cfg: PipelineConfig) -> dict[int, str]:
    """``{base seed: model}``: ``cfg.base_model`` (one), or the testbed's base models, one per ``base_seeds``,
    trained from scratch on ``base_traces`` (in ``workers`` processes); cached."""
    from .train import TrainConfig

    if cfg.base_model:
        return {cfg.base_seeds[0]: cfg.base_model}
    if cfg.train_data:
        raise ValueError("train_data is given but base_model is not: name the model to fine-tune (a folder, hub "
                         "id, .gguf or alias; 'scratch' for a fresh testbed-size model)")
    if cfg.n_attribute > cfg.n_train:
        raise ValueError(f"n_attribute ({cfg.n_attribute}) must be at most n_train ({cfg.n_train})")
    data, opts = base_traces(cfg), {"threads": _threads_per_run(cfg), **cfg.base_train}
    size = opts.pop("size", "tiny")
    out, jobs = {}, []
    for seed in cfg.base_seeds:
        k = key(train=_keyed(opts), size=size, data=file_key(data, cfg.workdir), seed=seed,
                code=code_hash("segkit.train"))
        path = data.parent / f"base-seed{seed}-{k}"
        out[seed] = str(path)
        if not (path / "train_summary.json").exists():
            init = testbed_init(cfg, data, size, seed, path.with_name(f"init-seed{seed}-{k}"))
            jobs.append(("train", TrainConfig(data=str(data), out=str(path), mode="full", seed=seed,
                                                init=str(init), **opts)))
    if jobs:
        log.info("training %d testbed base model(s) on %s", len(jobs), data)
        run_parallel(cfg, jobs)
    return out


def testbed_init(cfg: PipelineConfig, data: Path, size: str, seed: int, out: Path) -> Path:
    """A fresh testbed model of ``size`` (``seed``) with a tokenizer built over the base traces and the training
    split, so the words of the long traces a mode fine-tunes on are single tokens too."""
    from .records import load
    from .testbed_model import build_model, build_tokenizer
    from . import prompt

    if not (out / "config.json").exists():
        recs = load(data) + load(build_testbed(cfg)["train"])
        texts = [prompt.PROMPT_SUFFIX, prompt.ANSWER_TEMPLATE] + [t for r in recs for t in (r["question"], r["solution"])]
        part = out.with_name(out.name + ".part")
        build_model(build_tokenizer(texts), size, path=part, seed=seed)
        part.rename(out)
    return out


def base_model(cfg: PipelineConfig, seed: int | None = None) -> str:
    """What every mode fine-tunes: ``cfg.base_model``, or the testbed base model of ``seed`` (default: the first
    of ``base_seeds``); see ``base_models``."""
    models = base_models(cfg)
    return models[cfg.base_seeds[0] if seed is None else seed]


def attributor(cfg: PipelineConfig) -> str:
    return cfg.attributor or base_model(cfg)


def variant(cfg: PipelineConfig, name: str) -> PipelineConfig:
    """The run on the testbed variant ``name`` (``cfg.variants[name]``: synth options over ``cfg.synth``, e.g.
    ``{"restate_answer": 0}``), attributed by ``cfg``'s attributor: its traces, attributions and removal effects
    come from the usual steps, e.g. ``attribute_traces(variant(cfg, "answer not restated"))``."""
    if name not in cfg.variants:
        raise ValueError(f"no testbed variant {name!r}; the variants are {sorted(cfg.variants)}")
    if cfg.train_data:
        raise ValueError("testbed variants need the testbed: train_data is given")
    return dataclasses.replace(cfg, synth={**cfg.synth, **cfg.variants[name]}, attributor=attributor(cfg),
                               variants={})


# ---------------------------------------------------------------------------------------------------------------
# independent runs in parallel

def n_workers(cfg: PipelineConfig) -> int:
    """Processes for independent runs: ``cfg.workers`` (0: one per core) on a CPU, one on an accelerator."""
    from .models import resolve_device

    if resolve_device(cfg.device).type != "cpu":
        return 1
    from .hardware import cpu_cores
    return cfg.workers or cpu_cores()


def _threads_per_run(cfg: PipelineConfig) -> int:
    """Torch threads of one run: ``cfg.threads``; 1 when several runs share the CPU and it is left at 0."""
    return cfg.threads or (1 if n_workers(cfg) > 1 else 0)


def run_parallel(cfg: PipelineConfig, jobs: list) -> None:
    """Run ``jobs``, ``(stage, options)`` pairs such as ``("train", TrainConfig(...))`` (or ``(stage, options,
    environment)``): in this process one after the other, or with ``n_workers(cfg) > 1`` as that many ``segkit
    <stage> ...`` commands at a time (``commands.to_argv``), each with ``_threads_per_run`` torch threads. Every run is
    seeded and writes its own output, so the results do not depend on how runs are spread over processes; a failed
    run raises with its last output."""
    import importlib
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from .commands import COMMANDS, to_argv

    n = min(n_workers(cfg), len(jobs))
    if n <= 1:
        for stage, opts, *_ in jobs:
            module, _, run, _ = COMMANDS[stage]
            getattr(importlib.import_module(module), run)(opts)
        return
    threads = str(_threads_per_run(cfg) or 1)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def launch(job):
        stage, opts, extra = (*job, {})[:3]
        cmd = [sys.executable, "-m", "segkit", stage, *to_argv(opts)]
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True)
        if done.returncode:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"`segkit {stage}` failed (exit {done.returncode}) for {getattr(opts, 'out', '')}:"
                               f"\n{tail}")
        log.info("%s", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"segkit {stage} done")

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(launch, jobs))


# ---------------------------------------------------------------------------------------------------------------
# segment, attribute, select, remove

def segmented_traces(cfg: PipelineConfig) -> Path:
    """The first ``n_attribute`` traces of the training data, split into segments (``run_segment``); cached."""
    from .records import dump, load
    from .segment import SegmentConfig, run_segment

    data = train_data(cfg)
    k = key(data=file_key(data, cfg.workdir), n=cfg.n_attribute, code=code_hash("segkit.segment"))
    root = Path(cfg.workdir) / f"traces-{k}"
    out = root / "segmented.jsonl"
    if not out.exists():
        root.mkdir(parents=True, exist_ok=True)
        dump(load(data)[:cfg.n_attribute or None], root / "input.jsonl")
        run_segment(SegmentConfig(input=str(root / "input.jsonl"), out=str(out)))
    return out


def attribute_traces(cfg: PipelineConfig, model: str | None = None) -> Path:
    """The segmented traces attributed by ``model`` (default: the attributor) with ``cfg.attribute``'s options
    (``run_attribute``); an interrupted run resumes where it stopped."""
    from .attribute import AttributeConfig, run_attribute
    from .records import finished_ids, load

    src, model = segmented_traces(cfg), model or attributor(cfg)
    opts = {"threads": _threads_per_run(cfg), **cfg.attribute}
    k = key(input=file_key(src, cfg.workdir), model=model_key(model, cfg.workdir), opts=_keyed(opts),
            code=code_hash("segkit.attribute"))
    out = src.parent / f"attributed-{_stem(model)}-{k}.jsonl"
    if len(finished_ids(out)) < len(load(src)):
        job = AttributeConfig(input=str(src), out=str(out), model=model, device=cfg.device, **opts)
        n = n_workers(cfg)
        if n > 1:  # shares of the traces in n processes, merged in input order (as under torchrun)
            launch = {"WORLD_SIZE": str(n), "SEGKIT_RUN_ID": f"pipeline-{os.getpid()}-{out.stem}"}
            run_parallel(cfg, [("attribute", job, {**launch, "RANK": str(r)}) for r in range(n)])
            if len(finished_ids(out)) == len(load(src)):  # merged: the shares are no longer needed to resume
                for shard in out.parent.glob(f"{out.stem}.rank*-of-{n}*"):
                    shard.unlink()
        else:
            run_attribute(job)
    return out


def select_traces(cfg: PipelineConfig, attributed: Path | None = None) -> Path:
    """``selected_spans_ids`` at (``tau``, ``beta``) added to the attributed traces (``run_select``); cached."""
    from .score import SelectConfig, run_select

    attributed = Path(attributed or attribute_traces(cfg))
    out = attributed.with_name(f"{attributed.stem}-selected-tau{cfg.tau}-beta{cfg.beta}-"
                               f"{key(code=code_hash('segkit.score'))}.jsonl")
    if not out.exists():
        run_select(SelectConfig(input=str(attributed), out=str(out), tau=cfg.tau, beta=cfg.beta))
    return out


def removal_effects(cfg: PipelineConfig, attributed: Path | None = None, model: str | None = None) -> Path:
    """The removal experiment (paper Fig. 2): ``removal_effect`` per segment added to the first ``n_removal``
    attributed traces (``segkit.analysis.add_removal_effects`` under the attributor); resumable, cached."""
    from . import analysis
    from .models import load_model
    from .records import dump, finished_ids, load, run_stage

    attributed, model = Path(attributed or attribute_traces(cfg)), model or attributor(cfg)
    k = key(input=file_key(attributed, cfg.workdir), model=model_key(model, cfg.workdir), n=cfg.n_removal,
               code=code_hash(analysis.add_removal_effects.__module__))
    out = attributed.with_name(f"{attributed.stem}-removal-{k}.jsonl")
    src = out.with_name(f"{out.stem}.input.jsonl")
    if not src.exists():
        dump(load(attributed)[:cfg.n_removal or None], src)
    if len(finished_ids(out)) < len(load(src)):
        _threads(cfg)
        m, tok = load_model(model, device=cfg.device, dtype="float32")
        run_stage(lambda r: analysis.add_removal_effects(m, tok, [r], progress=False)[0], src, out,
                  required=("question", "answer", "segments"), desc="remove segments")
    return out


def _threads(cfg: PipelineConfig) -> None:
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)


# ---------------------------------------------------------------------------------------------------------------
# fine-tune every mode, evaluate on every benchmark

def runnable_modes(cfg: PipelineConfig, data: Path) -> tuple[list[str], dict[str, str]]:
    """``(the modes of cfg.modes that can run on data, {mode: why not} for the others)``: oracle needs the
    testbed's planted roles."""
    skipped = {}
    if "oracle" in cfg.modes and not has_planted_roles(data):
        skipped["oracle"] = "needs planted segment roles (the testbed's); real data has none"
    return [m for m in cfg.modes if m not in skipped], skipped


def _finetune_job(cfg: PipelineConfig, data: Path, mode: str, seed: int, init: str):
    """``(output folder, ("train", its options) or None when cached)`` for one fine-tuning."""
    from .train import TrainConfig

    opts = {"threads": _threads_per_run(cfg), **cfg.train}
    if init != "scratch":  # a model size only means something for a model made from scratch
        opts.pop("size", None)
    k = key(data=file_key(data, cfg.workdir), init=model_key(init, cfg.workdir), opts=_keyed(opts), tau=cfg.tau,
            code=code_hash("segkit.train"))
    out = Path(data).parent / f"model-{mode}-seed{seed}-{k}"  # the key tells base models apart
    if (out / "train_summary.json").exists():
        return out, None
    return out, ("train", TrainConfig(data=str(data), out=str(out), mode=mode, seed=seed, tau=cfg.tau, init=init,
                                        **opts))


def finetune(cfg: PipelineConfig, data: Path, mode: str, seed: int = 0, base_seed: int | None = None) -> Path:
    """The base model (of ``base_seed``) fine-tuned with ``mode`` on the selected traces in ``data``
    (``run_train``); cached."""
    out, job = _finetune_job(cfg, data, mode, seed, base_model(cfg, base_seed))
    if job:
        run_parallel(cfg, [job])
    return out


def _evaluate_jobs(cfg: PipelineConfig, model: str) -> tuple[dict[str, Path], list]:
    """``({benchmark: output file}, jobs still to run)`` for ``model`` on every benchmark."""
    from .evaluate import EvalConfig

    model, files, jobs = str(model), {}, []
    for bench in benchmarks(cfg):
        opts = {**cfg.generate, **({"n": cfg.samples[bench.stem]} if bench.stem in cfg.samples else {})}
        k = key(model=model_key(model, cfg.workdir), data=file_key(bench, cfg.workdir), n=cfg.n_eval, opts=opts,
                code=code_hash("segkit.evaluate"))
        path = Path(cfg.workdir) / "eval" / f"{bench.stem}-{_stem(model)}-{k}.jsonl"
        files[bench.stem] = path
        if not path.with_suffix(".summary.json").exists():
            jobs.append(("evaluate", EvalConfig(model=model, data=[str(bench)], out=str(path), limit=cfg.n_eval,
                                                  device=cfg.device, **opts)))
    return files, jobs


def _summaries(files: dict[str, Path]) -> dict[str, dict]:
    out = {}
    for bench, path in files.items():
        (summary,) = json.loads(path.with_suffix(".summary.json").read_text())["datasets"].values()
        out[bench] = {**summary, "file": str(path)}
    return out


def evaluate_model(cfg: PipelineConfig, model: str) -> dict[str, dict]:
    """``{benchmark: summary}`` (accuracy = avg@n, pass@k, mean_length, ..., and ``file``: the per-problem
    output) of ``model`` on the first ``n_eval`` problems of every benchmark, ``samples[stem]`` (else
    ``generate``'s n) samples each (``run_evaluate``); cached in ``workdir/eval``."""
    files, jobs = _evaluate_jobs(cfg, model)
    if jobs:
        _threads(cfg)
        run_parallel(dataclasses.replace(cfg, workers=1), jobs)
    return _summaries(files)


def attributor_quality(cfg: PipelineConfig, model: str | None = None) -> dict:
    """Does the attributor write the gold answer after reading a gold trace (what the IG target asks of it)? The
    share over ``n_eval`` held-out traces: the testbed's test split, or the traces of ``train_data`` after the
    first ``n_attribute`` (empty when it has no more). Cached in ``workdir``."""
    from .evaluate import answer_after_trace
    from .models import load_model
    from .records import load, write_json

    model = str(model or attributor(cfg))
    if cfg.train_data:  # the traces after those attributed (none when every trace is)
        source, skip = train_data(cfg), cfg.n_attribute
        held_out = load(source)[skip:] if skip else []
    else:
        source, skip = build_testbed(cfg)["test"], 0
        held_out = load(source)
    held_out = held_out[:cfg.n_eval or None]
    if not held_out:
        return {"n_problems": 0}
    k = key(model=model_key(model, cfg.workdir), data=file_key(source, cfg.workdir), skip=skip, n=len(held_out),
            code=code_hash("segkit.evaluate"))
    cache = Path(cfg.workdir) / f"quality-{_stem(model)}-{k}.json"
    if not cache.exists():
        _threads(cfg)
        m, tok = load_model(model, device=cfg.device, dtype="float32")
        share = sum(answer_after_trace(m, tok, held_out)) / len(held_out)
        write_json({"n_problems": len(held_out), "answer_after_gold_trace": share}, cache)
    return json.loads(cache.read_text())


def compare_modes(cfg: PipelineConfig, data: Path | None = None, modes=None, seeds=None):
    """Fine-tune every base model with every mode and seed on the selected traces ``data`` (default:
    ``select_traces(cfg)``, attributed by the attributor: the first base model unless one is given, so every base
    model trains on the same selection), evaluate each model, and the base models, on every benchmark: a DataFrame
    with one row per (base seed, mode, seed, benchmark), ``file`` naming the per-problem output
    (``segkit.analysis.per_problem_results`` reads them); modes that cannot run on the data are listed in
    ``.attrs["skipped"]``. Missing runs go to ``workers`` processes."""
    import pandas as pd

    data, bases = Path(data or select_traces(cfg)), base_models(cfg)
    runnable, skipped = runnable_modes(dataclasses.replace(cfg, modes=list(modes or cfg.modes)), data)
    runs = [(b, mode, seed) + _finetune_job(cfg, data, mode, seed, bases[b])
            for b in bases for mode in runnable for seed in (seeds or cfg.seeds)]
    todo = [job for *_, job in runs if job]
    if todo:
        log.info("fine-tuning %d models (%d workers)", len(todo), min(n_workers(cfg), len(todo)))
        run_parallel(cfg, todo)
    models = [(b, "base", None, init) for b, init in bases.items() if init != "scratch"] + \
             [(b, mode, seed, str(out)) for b, mode, seed, out, _ in runs]
    evals = [_evaluate_jobs(cfg, model) for *_, model in models]
    todo = [job for _, jobs in evals for job in jobs]
    if todo:  # in this process: a model generates in seconds here, a fresh process would take longer to start
        log.info("evaluating %d models", len(todo))
        _threads(cfg)
        run_parallel(dataclasses.replace(cfg, workers=1), todo)
    rows = []
    for (b, mode, seed, model), (files, _) in zip(models, evals):
        train = (json.loads((Path(model) / "train_summary.json").read_text()) if mode != "base" else
                 {"trained_token_fraction": 0.0, "train_loss": None, "n_examples": 0, "seconds": 0.0})
        for bench, ev in _summaries(files).items():
            rows.append({"base_seed": b, "mode": mode, "seed": seed, "benchmark": bench, "accuracy": ev["accuracy"],
                         "mean_length": ev["mean_length"], "trained_token_fraction": train["trained_token_fraction"],
                         "train_loss": train["train_loss"], "n_examples": train["n_examples"],
                         "train_seconds": train["seconds"], "model": model, "file": ev["file"]})
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    return table


__all__ = ["PipelineConfig", "config_from", "code_hash", "model_key", "file_key", "has_planted_roles",
           "build_testbed", "base_traces", "train_data", "benchmarks", "base_models", "base_model", "testbed_init",
           "attributor", "variant", "n_workers", "run_parallel", "segmented_traces",
           "attribute_traces", "select_traces", "removal_effects", "runnable_modes", "finetune", "evaluate_model",
           "attributor_quality", "compare_modes", "MODES"]
