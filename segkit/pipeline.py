"""The experiment as cached steps over its sources: the notebooks and ``segkit report`` call these.

A run names four sources (``PipelineConfig``): the training traces (``train_data``, LIMO-format JSON Lines), the
model every mode fine-tunes (``base_model``), the model IG asks (``attributor``, default: the base model, as the
authors do) and the benchmark files (``benchmarks``). Any source left at None comes from the embedded testbed: the
synthetic training split, a tiny base model trained here on full traces of the problems after the first
``n_attribute``, the held-out split. Each step calls a stage's ``run_*`` function with that stage's options dataclass
(``attribute``, ``train``, ``generate`` are dicts of those dataclasses' fields, spelled as on the command line).

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
from dataclasses import dataclass, field
from pathlib import Path

from .cache import code_hash, file_key, key, model_key
from .score import BETA, MODES, TAU

log = logging.getLogger("segkit")

# options of a stage the pipeline sets itself (they name its inputs and outputs): the option dicts may not
MANAGED = {"attribute": {"input", "out", "model", "device", "overwrite"},
           "train": {"data", "out", "mode", "seed", "init", "skip", "tau"},
           "generate": {"model", "data", "out", "limit", "device", "overwrite"}}
STAGE_CONFIGS = {"attribute": ("segkit.attribute", "AttributeConfig"), "train": ("segkit.train", "TrainConfig"),
                 "generate": ("segkit.evaluate", "EvalConfig")}


@dataclass
class PipelineConfig:
    workdir: str = "runs/default"
    seed: int = 0
    # sources (None: the testbed's)
    train_data: str | None = None       # LIMO-format JSON Lines: question, solution, answer (optional id)
    base_model: str | None = None       # what every mode fine-tunes: folder, hub id, .gguf, alias or "scratch"
    attributor: str | None = None       # the model IG asks; None: the base model
    benchmarks: list | None = None      # benchmark files as `segkit evaluate --data` reads them
    # the testbed (segkit.synth.SynthConfig options in `synth`) and its base model (TrainConfig options)
    n_train: int = 4000
    n_test: int = 100
    synth: dict = field(default_factory=dict)
    base_train: dict = field(default_factory=lambda: {"size": "tiny"})
    # attribution (AttributeConfig options; unset ones keep that stage's defaults) and selection
    n_attribute: int = 1000             # traces attributed and fine-tuned on (0: every trace of train_data)
    attribute: dict = field(default_factory=dict)
    tau: float = TAU
    beta: float = BETA
    # fine-tuning every mode from the base model (TrainConfig options: epochs, lr, max_length, bf16, lora_r, ...)
    modes: list = field(default_factory=lambda: list(MODES))
    seeds: list = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)
    # evaluation (EvalConfig options: engine, temperature, top_p, max_new_tokens, n, tensor_parallel_size, ...)
    n_eval: int = 100                   # problems per benchmark (0: all)
    generate: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)  # samples per problem by benchmark file stem; others: generate's n
    n_removal: int = 0                  # traces in the removal experiment (0: every attributed trace)
    device: str = "auto"
    threads: int = 0                    # torch CPU threads for every stage (0: each stage's own choice)

    def __post_init__(self):
        for name, (module, cls) in STAGE_CONFIGS.items():
            known = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
            bad = set(getattr(self, name)) - (known - MANAGED[name])
            if bad:
                raise ValueError(f"{name}: {sorted(bad)} are not {cls} options the pipeline passes on; "
                                 f"known: {sorted(known - MANAGED[name])}")
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]


def config_from(params, notebook: bool = False) -> PipelineConfig:
    """A PipelineConfig from a parameter mapping. Unknown keys are an error (a typo should not pass silently),
    except with ``notebook=True``, which takes the config's names from a notebook's namespace (``globals()``) and
    leaves the notebook's own parameters (plots, grids) alone."""
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    if notebook:
        params = {k: v for k, v in params.items() if k in names}
    unknown = set(params) - names
    if unknown:
        raise ValueError(f"unknown pipeline parameters {sorted(unknown)}; known: {sorted(names)}")
    return PipelineConfig(**params)


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


def train_data(cfg: PipelineConfig) -> Path:
    return Path(cfg.train_data) if cfg.train_data else build_testbed(cfg)["train"]


def benchmarks(cfg: PipelineConfig) -> list[Path]:
    return [Path(b) for b in cfg.benchmarks] if cfg.benchmarks else [build_testbed(cfg)["test"]]


def base_model(cfg: PipelineConfig) -> str:
    """What every mode fine-tunes: ``cfg.base_model``, or the testbed base model trained here on the full traces
    of the training problems after the first ``n_attribute`` (which it therefore has not seen); cached."""
    from .train import TrainConfig, run_train

    if cfg.base_model:
        return cfg.base_model
    if cfg.train_data:
        raise ValueError("train_data is given but base_model is not: name the model to fine-tune (a folder, hub "
                         "id, .gguf or alias; 'scratch' for a fresh testbed-size model)")
    if cfg.n_train <= cfg.n_attribute:
        raise ValueError(f"n_train ({cfg.n_train}) must exceed n_attribute ({cfg.n_attribute}): the base model "
                         "trains on the problems after the first n_attribute")
    data = build_testbed(cfg)["train"]
    opts = {"threads": cfg.threads, **cfg.base_train}
    out = data.parent / f"base-{key(train=_keyed(opts), skip=cfg.n_attribute, code=code_hash('segkit.train'))}"
    if not (out / "train_summary.json").exists():
        log.info("training the testbed base model on %d full traces", cfg.n_train - cfg.n_attribute)
        run_train(TrainConfig(data=str(data), out=str(out), mode="full", seed=cfg.seed, skip=cfg.n_attribute, **opts))
    return str(out)


def attributor(cfg: PipelineConfig) -> str:
    return cfg.attributor or base_model(cfg)


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
    opts = {"threads": cfg.threads, **cfg.attribute}
    k = key(input=file_key(src, cfg.workdir), model=model_key(model, cfg.workdir), opts=_keyed(opts),
            code=code_hash("segkit.attribute"))
    out = src.parent / f"attributed-{_stem(model)}-{k}.jsonl"
    if len(finished_ids(out)) < len(load(src)):
        run_attribute(AttributeConfig(input=str(src), out=str(out), model=model, device=cfg.device, **opts))
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


def finetune(cfg: PipelineConfig, data: Path, mode: str, seed: int = 0) -> Path:
    """The base model fine-tuned with ``mode`` on the selected traces in ``data`` (``run_train``); cached."""
    from .train import TrainConfig, run_train

    init = base_model(cfg)
    opts = {"threads": cfg.threads, **cfg.train}
    if init != "scratch":  # a model size only means something for a model made from scratch
        opts.pop("size", None)
    k = key(data=file_key(data, cfg.workdir), init=model_key(init, cfg.workdir), opts=_keyed(opts), tau=cfg.tau,
               code=code_hash("segkit.train"))
    out = Path(data).parent / f"model-{mode}-seed{seed}-{k}"
    if not (out / "train_summary.json").exists():
        run_train(TrainConfig(data=str(data), out=str(out), mode=mode, seed=seed, tau=cfg.tau, init=init, **opts))
    return out


def evaluate_model(cfg: PipelineConfig, model: str) -> dict[str, dict]:
    """``{benchmark: summary}`` (accuracy = avg@n, pass@k, mean_length, ...) of ``model`` on the first ``n_eval``
    problems of every benchmark, ``samples[stem]`` (else ``generate``'s n) samples each (``run_evaluate``);
    cached in ``workdir/eval``."""
    from .evaluate import EvalConfig, run_evaluate

    model, out = str(model), {}
    for bench in benchmarks(cfg):
        opts = {**cfg.generate, **({"n": cfg.samples[bench.stem]} if bench.stem in cfg.samples else {})}
        k = key(model=model_key(model, cfg.workdir), data=file_key(bench, cfg.workdir), n=cfg.n_eval, opts=opts,
                   code=code_hash("segkit.evaluate"))
        path = Path(cfg.workdir) / "eval" / f"{bench.stem}-{_stem(model)}-{k}.jsonl"
        summary = path.with_suffix(".summary.json")
        if not summary.exists():
            _threads(cfg)
            run_evaluate(EvalConfig(model=model, data=[str(bench)], out=str(path), limit=cfg.n_eval,
                                    device=cfg.device, **opts))
        (out[bench.stem],) = json.loads(summary.read_text())["datasets"].values()
    return out


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
    """Fine-tune the base model with every mode and seed on the selected traces ``data`` (default:
    ``select_traces(cfg)``) and evaluate each model, and the base model, on every benchmark: a DataFrame with one
    row per (mode, seed, benchmark); modes that cannot run on the data are listed in ``.attrs["skipped"]``."""
    import pandas as pd
    from tqdm.auto import tqdm

    data = Path(data or select_traces(cfg))
    runnable, skipped = runnable_modes(dataclasses.replace(cfg, modes=list(modes or cfg.modes)), data)
    rows, init = [], base_model(cfg)
    if init != "scratch":  # the starting point, for reference: what fine-tuning changed
        for bench, ev in evaluate_model(cfg, init).items():
            rows.append({"mode": "base", "seed": None, "benchmark": bench, "accuracy": ev["accuracy"],
                         "mean_length": ev["mean_length"], "trained_token_fraction": 0.0, "train_loss": None,
                         "n_examples": 0, "train_seconds": 0.0, "model": init})
    for mode, seed in tqdm([(m, s) for m in runnable for s in (seeds or cfg.seeds)], desc="modes"):
        model_dir = finetune(cfg, data, mode, seed)
        train = json.loads((model_dir / "train_summary.json").read_text())
        for bench, ev in evaluate_model(cfg, model_dir).items():
            rows.append({"mode": mode, "seed": seed, "benchmark": bench, "accuracy": ev["accuracy"],
                         "mean_length": ev["mean_length"], "trained_token_fraction": train["trained_token_fraction"],
                         "train_loss": train["train_loss"], "n_examples": train["n_examples"],
                         "train_seconds": train["seconds"], "model": str(model_dir)})
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    return table


__all__ = ["PipelineConfig", "config_from", "code_hash", "model_key", "file_key", "has_planted_roles",
           "build_testbed", "train_data", "benchmarks", "base_model", "attributor", "segmented_traces",
           "attribute_traces", "select_traces", "removal_effects", "runnable_modes", "finetune", "evaluate_model",
           "attributor_quality", "compare_modes", "MODES"]
