"""What one experiment runs: ``PipelineConfig``, its sources and every stage's options; ``config_from``, which
builds it from a parameter mapping (a parameter file's values), and ``notebook_config``, which every notebook calls.

A PipelineConfig holds plain data only: every value is checked against its field's type (JSON kinds: no bytes, sets,
dates or non-finite numbers, so nothing but data ever reaches a notebook) and range when the config is built, and
the stage option dicts against the stages' own options dataclasses: names, types and choices, and each stage's
ranges over its defaults by the stage's own check (``check_attribute_options``, ``check_train_options``,
``check_eval_options``; SynthConfig is built), so a value the step would refuse is refused before anything runs.
``segkit report --check`` and the run both check through here.

    >>> cfg = config_from({"workdir": "runs/x", "n_train": 400, "n_attribute": 32})
    >>> cfg.tau, cfg.beta
    (0.7, 0.8)
    >>> config_from({"n_atribute": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown pipeline parameter 'n_atribute' (did you mean 'n_attribute'?)
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePath

from .fields import describe
from .modes import MODES
from .score import BETA, TAU, check_tau_beta

# the option dicts: which stage's options dataclass each holds, less the options the pipeline sets itself (they
# name a stage's inputs and outputs, its seed and size, and how it handles bad records: the attribution step
# reruns until every trace is in OUT, so a skipped one would make it run forever), and the stage's function that
# checks its options' ranges from their values alone (no file or device; None: SynthConfig, which checks nothing
# else when built, is built instead)
_SYNTH, _TRAIN = ("segkit.synth", "SynthConfig", {"out", "n", "seed", "split"}, None), \
    ("segkit.train", "TrainConfig", {"data", "out", "mode", "seed", "init", "skip", "tau"}, "check_train_options")
OPTIONS = {"attribute": ("segkit.attribute", "AttributeConfig",
                         {"input", "out", "model", "device", "overwrite", "on_error", "unique_ids"},
                         "check_attribute_options"),
           "train": _TRAIN, "base_train": _TRAIN,
           "generate": ("segkit.evaluate", "EvalConfig", {"model", "data", "out", "limit", "device", "overwrite"},
                        "check_eval_options"),
           "synth": _SYNTH, "base_synth": _SYNTH}
AT_LEAST_ONE = {"n_train", "n_test", "n_base"}  # the testbed's sizes (0 means "all" only for n_attribute, n_eval...)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # segkit.attribute.check_device asks whether this machine has it


@dataclass
class PipelineConfig:
    workdir: str = "runs/default"
    seed: int = 0
    # sources (None: the testbed's)
    train_data: str | None = None       # LIMO-format JSON Lines: question, solution, answer (optional id)
    base_model: str | None = None       # what every mode fine-tunes: folder, hub id, .gguf, alias or "scratch"
    attributor: str | None = None       # the model IG asks; None: the base model
    benchmarks: list[str] | None = None  # benchmark files as `segkit evaluate --data` reads them (one: a string)
    # the testbed: problems and their long traces (segkit.synth.SynthConfig options in `synth`) ...
    n_train: int = 1000                 # synthetic training problems (the first n_attribute are used)
    n_test: int = 100
    synth: dict = field(default_factory=dict)
    # ... and its base models: one per seed, from scratch, on n_base problems (not among the training or test
    # ones) written with base_synth's options over synth's (TrainConfig options in base_train)
    n_base: int = 2000
    base_synth: dict = field(default_factory=lambda: {"style": "concise"})
    base_seeds: list[int] = field(default_factory=lambda: [0])
    base_train: dict = field(default_factory=lambda: {"size": "tiny"})
    # attribution (AttributeConfig options; unset ones keep that stage's defaults) and selection
    n_attribute: int = 1000             # traces attributed and fine-tuned on (0: every trace of train_data)
    attribute: dict = field(default_factory=dict)
    variants: dict[str, dict] = field(default_factory=dict)  # testbed variants 01 also attributes: name -> synth
    tau: float = TAU
    beta: float = BETA
    # fine-tuning every mode from the base model (TrainConfig options: epochs, lr, max_length, bf16, lora_r, ...)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)
    # evaluation (EvalConfig options: engine, temperature, top_p, max_new_tokens, n, tensor_parallel_size, ...)
    n_eval: int = 100                   # problems per benchmark (0: all)
    generate: dict = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)  # samples per problem by benchmark file stem; else n
    n_removal: int = 0                  # traces in the removal experiment (0: every attributed trace)
    n_sanity: int = 64                  # traces also attributed with random weights (sanity check; 0: skip it)
    device: str = "auto"
    threads: int = 0                    # torch CPU threads for every stage (0: each stage's own choice)
    workers: int = 1                    # processes for independent runs on a CPU (0: one per core)

    def __post_init__(self):
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]
        hints = typing.get_type_hints(PipelineConfig)
        for f in dataclasses.fields(self):
            check_value(getattr(self, f.name), hints[f.name], f.name)
        for name, (module, _, managed, ranges) in OPTIONS.items():
            check_options(options_class(name), getattr(self, name), name, managed)
            if ranges:  # the stage's ranges, over its defaults: what the step would refuse hours into the run
                try:
                    getattr(importlib.import_module(module), ranges)(defaults(options_class(name)) |
                                                                     getattr(self, name))
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
        for name, opts in self.variants.items():
            check_options(options_class("synth"), opts, f"variants[{name!r}]", OPTIONS["synth"][2])
        # the testbed's own ranges (SynthConfig checks no file or machine when built, the other stages do)
        for where, opts in [("synth", self.synth), ("base_synth", {**self.synth, **self.base_synth})] + \
                [(f"variants[{name!r}]", {**self.synth, **v}) for name, v in self.variants.items()]:
            try:
                options_class("synth")(out="", **opts)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        check_tau_beta(self.tau, self.beta)
        self._check_ranges()

    def _check_ranges(self):
        """What the run would refuse at its start: sizes, lists of distinct items, names of modes, combinations."""
        for name in AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name, known in (("modes", MODES), ("seeds", None), ("base_seeds", None)):
            items = getattr(self, name)
            if not items or len(set(items)) != len(items):
                raise ValueError(f"{name} must be distinct, at least one; got {items}")
            for item in items if known else ():
                if item not in known:
                    raise ValueError(f"modes: unknown mode {item!r}{suggest(item, known)}; the modes are "
                                     f"{', '.join(known)}")
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device: unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps")
        stems = [PurePath(b).stem for b in self.benchmarks or []]  # as the pipeline looks samples up
        for stem, n in self.samples.items():
            if self.benchmarks and stem not in stems:
                raise ValueError(f"samples: {stem!r} is no benchmark's file stem{suggest(stem, stems)}; the "
                                 f"benchmarks are {stems}")
            if n < 1:
                raise ValueError(f"samples[{stem!r}] must be at least 1, got {n}")
        if self.train_data and not self.base_model:
            raise ValueError("train_data is given but base_model is not: name the model to fine-tune (a folder, "
                             "hub id, .gguf or alias; 'scratch' for a fresh testbed-size model)")
        if self.train_data and self.variants:
            raise ValueError("variants need the testbed, but train_data is given: leave variants out ({})")
        if not self.train_data and self.n_attribute > self.n_train:
            raise ValueError(f"n_attribute ({self.n_attribute}) must be at most n_train ({self.n_train})")


def check_value(value, typ, where: str) -> None:
    """ValueError unless ``value`` is plain JSON data (str, int, float (finite), bool, None, lists and str-keyed
    mappings of them) of the type ``typ`` (an annotation: ``int``, ``list[str] | None``, ``dict``; ``object``: any
    plain value), with no negative number: no parameter of the pipeline or its stages is negative."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if not any(_fits(value, a) for a in args):
            raise ValueError(f"{where}: expected {' or '.join(map(_kind, args))}, got {_got(value)}")
        typ = next(a for a in args if _fits(value, a))
        origin, args = typing.get_origin(typ), typing.get_args(typ)
    if not _fits(value, typ):
        raise ValueError(f"{where}: expected {_kind(typ)}, got {_got(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"{where}: must not be negative, got {value}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, args[0] if args else object, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {_got(key)}")
            check_value(item, args[1] if args else object, f"{where}.{key}" if key.isidentifier() else
                        f"{where}[{key!r}]")


def _fits(value, typ) -> bool:
    """Whether ``value``'s own JSON kind is ``typ``'s (items are checked by ``check_value``)."""
    typ = typing.get_origin(typ) or typ
    if typ is object:
        return any(_fits(value, t) for t in (str, float, bool, type(None), list, dict))
    if typ is float:  # an integer is a number too (YAML's 1 for 1.0); NaN and infinities are not data
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return type(value) is typ or (typ is type(None) and value is None)


KINDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
         bool: ("true or false", "booleans"), type(None): ("null", "nulls"), list: ("a list", "lists"),
         dict: ("a mapping", "mappings"), object: ("plain data", "plain data")}


def _kind(typ, plural: bool = False) -> str:
    """How an error names a type: ``a list of integers``, ``a mapping of mappings``."""
    origin, args = typing.get_origin(typ) or typ, typing.get_args(typ)
    name = KINDS.get(origin, (str(typ), str(typ)))[plural]
    return f"{name} of {_kind(args[-1], plural=True)}" if args and origin in (list, dict) else name


def _got(value) -> str:
    """The value an error names: its kind, and the value itself when short (``a string '1e3'``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} (not a finite number)"
    shown = repr(value) if isinstance(value, (str, int, float)) and len(repr(value)) <= 40 else ""
    kind = describe(value) if type(value) in KINDS else f"{type(value).__name__} (not plain data)"
    return f"{kind} {shown}" if shown and not isinstance(value, bool) else kind


def suggest(name: str, known) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def defaults(cls) -> dict:
    """A dataclass's field defaults, without constructing it (stage configs check their files when built)."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def options_class(name: str):
    """The options dataclass behind the option dict ``name`` (``"train"`` -> TrainConfig)."""
    module, cls = OPTIONS[name][:2]
    return getattr(importlib.import_module(module), cls)


def check_options(cls, opts: dict, where: str, managed=()) -> None:
    """ValueError unless ``opts`` are options of the dataclass ``cls`` other than ``managed`` (those the pipeline
    sets itself), each of its type and among its choices."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in managed}
    hints = typing.get_type_hints(cls)
    for key, value in opts.items():
        if key not in fields:
            raise ValueError(f"{where}: {[key]} are not {cls.__name__} options the pipeline passes on"
                             f"{'' if key in managed else suggest(key, fields)}; known: {sorted(fields)}")
        check_value(value, hints[key], f"{where}.{key}")
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{where}.{key}: {value!r} is not one of {', '.join(map(str, choices))}")


def config_from(params) -> PipelineConfig:
    """A PipelineConfig from a parameter mapping, every value checked; an unknown name is an error that names the
    closest field (a typo should not pass silently)."""
    names = [f.name for f in dataclasses.fields(PipelineConfig)]
    for key in params:
        if key not in names:
            raise ValueError(f"unknown pipeline parameter {key!r}{suggest(key, names)}")
    return PipelineConfig(**params)


# the tiny testbed a notebook runs when it runs on its own (the tests through nbval, a first look): ~minutes on a
# laptop CPU; `segkit report` gives every notebook a parameter file's values instead
TESTBED = {"n_train": 16, "n_test": 16, "n_base": 160, "base_train": {"size": "tiny", "epochs": 2.0},
           "n_attribute": 16, "n_sanity": 4, "variants": {"answer not restated": {"restate_answer": 0}},
           "train": {"epochs": 2.0, "lr": 1e-3}, "n_eval": 8, "generate": {"max_new_tokens": 160, "batch_size": 32},
           "threads": 1}


def notebook_config(pipeline_params: dict | None, workdir: str) -> PipelineConfig:
    """The config of a notebook's run: the ``pipeline_params`` mapping ``segkit report`` injects (every field), or
    ``TESTBED`` when it is None (a notebook run on its own); ``workdir`` is the notebook's cache folder."""
    return config_from({**(TESTBED if pipeline_params is None else pipeline_params), "workdir": workdir})
