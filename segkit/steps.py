"""The experiment's cached steps: segment, attribute (and the random-weight sanity check), select, the removal
experiment, the attributor's quality, fine-tuning every mode and evaluating every model. Each step takes its inputs
as arguments (files, model names: ``segkit.testbed.Sources`` resolves them, ``segkit.pipeline`` chains the steps)
and runs a stage's ``run_*`` function with that stage's options dataclass (``cfg.attribute``, ``cfg.train``,
``cfg.generate`` are dicts of those dataclasses' fields, spelled as on the command line).

Every step writes into ``workdir`` under a name that carries a hash of what determines it: its options, its input
and the source code of the segkit modules its stage imports (``code_hash``). A rerun reuses what is finished
(resuming a half-written attribution), and a change of options, input or stage code recomputes exactly the steps it
affects.

    >>> selected = select_traces(cfg, attribute_traces(cfg, segmented_traces(cfg, Path("train.jsonl")), "m"))
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from .cache import code_hash, file_key, key, model_key
from .config import PipelineConfig
from .jobs import keyed, n_workers, run_parallel, set_threads, threads_per_run

log = logging.getLogger("segkit")


def _stem(model: str) -> str:
    return Path(model).name if Path(model).exists() else model.replace("/", "_")


# ---------------------------------------------------------------------------------------------------------------
# segment, attribute, select, remove

def segmented_traces(cfg: PipelineConfig, data: Path) -> Path:
    """The first ``n_attribute`` traces of ``data``, split into segments (``run_segment``); cached."""
    from .records import dump, load
    from .segment import SegmentConfig, run_segment

    k = key(data=file_key(data, cfg.workdir), n=cfg.n_attribute, code=code_hash("segkit.segment"))
    root = Path(cfg.workdir) / f"traces-{k}"
    out = root / "segmented.jsonl"
    if not out.exists():
        root.mkdir(parents=True, exist_ok=True)
        dump(load(data)[:cfg.n_attribute or None], root / "input.jsonl")
        run_segment(SegmentConfig(input=str(root / "input.jsonl"), out=str(out)))
    return out


def attribute_traces(cfg: PipelineConfig, segmented: Path, model: str) -> Path:
    """The ``segmented`` traces attributed by ``model`` with ``cfg.attribute``'s options (``run_attribute``), in
    shares over ``workers`` processes on a CPU; an interrupted run resumes where it stopped."""
    from .attribute import AttributeConfig, run_attribute
    from .records import finished_ids, load

    opts = {"threads": threads_per_run(cfg), **cfg.attribute}
    k = key(input=file_key(segmented, cfg.workdir), model=model_key(model, cfg.workdir), opts=keyed(opts),
            code=code_hash("segkit.attribute"))
    out = segmented.parent / f"attributed-{_stem(model)}-{k}.jsonl"
    if len(finished_ids(out)) < len(load(segmented)):
        job = AttributeConfig(input=str(segmented), out=str(out), model=model, device=cfg.device, **opts)
        n = n_workers(cfg)
        if n > 1:  # shares of the traces in n processes, merged in input order (as under torchrun)
            launch = {"WORLD_SIZE": str(n), "SEGKIT_RUN_ID": f"pipeline-{os.getpid()}-{out.stem}"}
            run_parallel(cfg, [("attribute", job, {**launch, "RANK": str(r)}) for r in range(n)])
            if len(finished_ids(out)) == len(load(segmented)):  # merged: the shares are no longer needed to resume
                for shard in out.parent.glob(f"{out.stem}.rank*-of-{n}*"):
                    shard.unlink()
        else:
            run_attribute(job)
    return out


def sanity_attributions(cfg: PipelineConfig, segmented: Path, model: str) -> Path | None:
    """The model-randomisation check (Adebayo et al., 2018): the first ``n_sanity`` ``segmented`` traces attributed
    with ``cfg.attribute``'s options by ``model``'s architecture with random weights
    (``segkit.testbed.random_weights``); None when ``n_sanity`` is 0. Cached."""
    from .records import dump, load
    from .testbed import random_weights

    if not cfg.n_sanity:
        return None
    first = segmented.with_name(f"{segmented.stem}-first{cfg.n_sanity}.jsonl")
    if not first.exists():
        dump(load(segmented)[:cfg.n_sanity], first)
    return attribute_traces(cfg, first, random_weights(cfg, model))


def select_traces(cfg: PipelineConfig, attributed: Path) -> Path:
    """``selected_spans_ids`` at (``tau``, ``beta``) added to the ``attributed`` traces (``run_select``); cached."""
    from .score import SelectConfig, run_select

    out = attributed.with_name(f"{attributed.stem}-selected-tau{cfg.tau}-beta{cfg.beta}-"
                               f"{key(code=code_hash('segkit.score'))}.jsonl")
    if not out.exists():
        run_select(SelectConfig(input=str(attributed), out=str(out), tau=cfg.tau, beta=cfg.beta))
    return out


def removal_effects(cfg: PipelineConfig, attributed: Path, model: str) -> Path:
    """The removal experiment (paper Fig. 2): ``removal_effect`` per segment added to the first ``n_removal``
    ``attributed`` traces (``segkit.analysis.add_removal_effects`` under ``model``); resumable, cached."""
    from . import analysis
    from .models import load_model
    from .records import dump, finished_ids, load, run_stage

    k = key(input=file_key(attributed, cfg.workdir), model=model_key(model, cfg.workdir), n=cfg.n_removal,
            code=code_hash(analysis.add_removal_effects.__module__))
    out = attributed.with_name(f"{attributed.stem}-removal-{k}.jsonl")
    src = out.with_name(f"{out.stem}.input.jsonl")
    if not src.exists():
        dump(load(attributed)[:cfg.n_removal or None], src)
    if len(finished_ids(out)) < len(load(src)):
        set_threads(cfg)
        m, tok = load_model(model, device=cfg.device, dtype="float32")
        run_stage(lambda r: analysis.add_removal_effects(m, tok, [r], progress=False)[0], src, out,
                  required=("question", "answer", "segments"), desc="remove segments")
    return out


def attributor_quality(cfg: PipelineConfig, model: str, source: Path, skip: int) -> dict:
    """Does ``model`` write the gold answer after reading a gold trace (what the IG target asks of it)? The share
    over the first ``n_eval`` traces of ``source`` after the first ``skip`` (``Sources.held_out``), ``{"n_problems":
    0}`` when there are none. Cached in ``workdir``."""
    from .evaluate import answer_after_trace
    from .models import load_model
    from .records import load, write_json

    held_out = load(source)[skip:][:cfg.n_eval or None]
    if not held_out:
        return {"n_problems": 0}
    k = key(model=model_key(model, cfg.workdir), data=file_key(source, cfg.workdir), skip=skip, n=len(held_out),
            code=code_hash("segkit.evaluate"))
    cache = Path(cfg.workdir) / f"quality-{_stem(model)}-{k}.json"
    if not cache.exists():
        set_threads(cfg)
        m, tok = load_model(model, device=cfg.device, dtype="float32")
        share = sum(answer_after_trace(m, tok, held_out)) / len(held_out)
        write_json({"n_problems": len(held_out), "answer_after_gold_trace": share}, cache)
    return json.loads(cache.read_text())


# ---------------------------------------------------------------------------------------------------------------
# fine-tune every mode, evaluate every model

def runnable_modes(modes: list[str], data: Path) -> tuple[list[str], dict[str, str]]:
    """``(the modes that can run on the records of data, {mode: why not} for the others)`` (``segkit.modes``)."""
    from .modes import unavailable
    from .records import load

    skipped = unavailable(list(modes), load(data))
    return [m for m in modes if m not in skipped], skipped


def finetune_job(cfg: PipelineConfig, data: Path, mode: str, seed: int, init: str):
    """``(output folder, ("train", its options) or None when cached)`` for ``init`` fine-tuned with ``mode`` on the
    selected traces ``data``."""
    from .train import TrainConfig

    opts = {"threads": threads_per_run(cfg), **cfg.train}
    if init != "scratch":  # a model size only means something for a model made from scratch
        opts.pop("size", None)
    k = key(data=file_key(data, cfg.workdir), init=model_key(init, cfg.workdir), opts=keyed(opts), tau=cfg.tau,
            code=code_hash("segkit.finetune"))
    out = Path(data).parent / f"model-{mode}-seed{seed}-{k}"  # the key tells base models apart
    if (out / "train_summary.json").exists():
        return out, None
    return out, ("train", TrainConfig(data=str(data), out=str(out), mode=mode, seed=seed, tau=cfg.tau, init=init,
                                      **opts))


def evaluation_job(cfg: PipelineConfig, model: str, bench: Path) -> tuple[Path, tuple | None]:
    """``(per-problem output, ("evaluate", its options) or None when cached)`` for ``model`` on the first
    ``n_eval`` problems of ``bench``, ``samples[stem]`` (else ``generate``'s n) samples each. Cached in
    ``workdir/eval``."""
    from .evaluate import EvalConfig

    opts = {**cfg.generate, **({"n": cfg.samples[bench.stem]} if bench.stem in cfg.samples else {})}
    k = key(model=model_key(model, cfg.workdir), data=file_key(bench, cfg.workdir), n=cfg.n_eval, opts=opts,
            code=code_hash("segkit.evaluate"))
    path = Path(cfg.workdir) / "eval" / f"{bench.stem}-{_stem(model)}-{k}.jsonl"
    if path.with_suffix(".summary.json").exists():
        return path, None
    return path, ("evaluate", EvalConfig(model=model, data=[str(bench)], out=str(path), limit=cfg.n_eval,
                                         device=cfg.device, **opts))


def evaluate_models(cfg: PipelineConfig, models: list[str], benchmarks: list[Path]) -> list[dict[str, dict]]:
    """Per model, ``{benchmark stem: summary}`` (accuracy = avg@n, pass@k, mean_length, ..., and ``file``: the
    per-problem output) on every benchmark (``evaluation_job``); missing evaluations run in ``workers``
    processes (``run_evaluate``; with vLLM one at a time). In processes each takes ``threads_per_run`` torch
    threads: with ``threads`` set (as every shipped parameter file sets it) that is the count one process uses, so
    the bytes are the same; with ``threads: 0`` a process run takes 1 and an in-process run torch's default, and
    sampled tokens may then differ at near-ties."""
    planned = [{bench.stem: evaluation_job(cfg, str(model), bench) for bench in benchmarks} for model in models]
    todo = [job for files in planned for _, job in files.values() if job]
    if todo:
        if cfg.generate.get("engine") == "vllm":  # one vLLM engine at a time: each takes a share of the memory
            cfg = dataclasses.replace(cfg, workers=1)
        log.info("evaluating %d model x benchmark pairs (%d workers)", len(todo), min(n_workers(cfg), len(todo)))
        set_threads(cfg)
        run_parallel(cfg, todo)
    out = []
    for files in planned:
        summaries = {}
        for bench, (path, _) in files.items():
            (summary,) = json.loads(path.with_suffix(".summary.json").read_text())["datasets"].values()
            summaries[bench] = {**summary, "file": str(path)}
        out.append(summaries)
    return out


def evaluate_model(cfg: PipelineConfig, model: str, benchmarks: list[Path]) -> dict[str, dict]:
    """``evaluate_models`` of one model."""
    return evaluate_models(cfg, [model], benchmarks)[0]


def compare_modes(cfg: PipelineConfig, data: dict[int, Path], bases: dict[int, str], benchmarks: list[Path],
                  modes: list[str], seeds: list[int]):
    """Fine-tune every base model of ``bases`` with every mode and seed on its selected traces (``data``: {base
    seed: file}; missing runs in ``workers`` processes), evaluate each model, and the base models, on every
    benchmark: a DataFrame with one row per (base seed, mode, seed, benchmark), ``file`` naming the per-problem
    output (``segkit.analysis.per_problem_results`` reads them); modes that cannot run on the data are listed in
    ``.attrs["skipped"]``."""
    import pandas as pd

    runnable, skipped = runnable_modes(modes, data[next(iter(bases))])
    runs = [(b, mode, seed) + finetune_job(cfg, data[b], mode, seed, bases[b])
            for b in bases for mode in runnable for seed in seeds]
    todo = [job for *_, job in runs if job]
    if todo:
        log.info("fine-tuning %d models (%d workers)", len(todo), min(n_workers(cfg), len(todo)))
        run_parallel(cfg, todo)
    models = [(b, "base", None, init) for b, init in bases.items() if init != "scratch"] + \
             [(b, mode, seed, str(out)) for b, mode, seed, out, _ in runs]
    evals = evaluate_models(cfg, [model for *_, model in models], benchmarks)
    rows = []
    for (b, mode, seed, model), summaries in zip(models, evals):
        train = (json.loads((Path(model) / "train_summary.json").read_text()) if mode != "base" else
                 {"trained_token_fraction": 0.0, "train_loss": None, "n_examples": 0, "seconds": 0.0})
        for bench, ev in summaries.items():
            rows.append({"base_seed": b, "mode": mode, "seed": seed, "benchmark": bench, "accuracy": ev["accuracy"],
                         "mean_length": ev["mean_length"], "trained_token_fraction": train["trained_token_fraction"],
                         "train_loss": train["train_loss"], "n_examples": train["n_examples"],
                         "train_seconds": train["seconds"], "model": model, "file": ev["file"]})
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    return table
