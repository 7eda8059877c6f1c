"""What one experiment runs: ``PipelineConfig``, its sources and every stage's options, and ``config_from``, which
builds it from a parameter mapping (a parameter file's values, a notebook's ``parameters`` cell).

    >>> cfg = config_from({"workdir": "runs/x", "n_train": 400, "n_attribute": 32})
    >>> cfg.tau, cfg.beta
    (0.7, 0.8)
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from .score import BETA, MODES, TAU

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
    # the testbed: problems and their long traces (segkit.synth.SynthConfig options in `synth`) ...
    n_train: int = 1000                 # synthetic training problems (the first n_attribute are used)
    n_test: int = 100
    synth: dict = field(default_factory=dict)
    # ... and its base models: one per seed, from scratch, on n_base problems (not among the training or test
    # ones) written with base_synth's options over synth's (TrainConfig options in base_train)
    n_base: int = 2000
    base_synth: dict = field(default_factory=lambda: {"style": "concise"})
    base_seeds: list = field(default_factory=lambda: [0])
    base_train: dict = field(default_factory=lambda: {"size": "tiny"})
    # attribution (AttributeConfig options; unset ones keep that stage's defaults) and selection
    n_attribute: int = 1000             # traces attributed and fine-tuned on (0: every trace of train_data)
    attribute: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)  # testbed variants 01 also attributes: name -> synth options
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
    workers: int = 1                    # processes for independent runs on a CPU (0: one per core)

    def __post_init__(self):
        for name, (module, cls) in STAGE_CONFIGS.items():
            known = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
            bad = set(getattr(self, name)) - (known - MANAGED[name])
            if bad:
                raise ValueError(f"{name}: {sorted(bad)} are not {cls} options the pipeline passes on; "
                                 f"known: {sorted(known - MANAGED[name])}")
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]
        if not self.base_seeds or len(set(self.base_seeds)) != len(self.base_seeds):
            raise ValueError(f"base_seeds must be distinct seeds, at least one; got {self.base_seeds}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per core), got {self.workers}")


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


