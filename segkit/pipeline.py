"""The experiment, as the notebooks and ``segkit report`` call it: one function per result, each taking the run's
``PipelineConfig``, resolving its sources once and chaining the cached steps that make the result.

The rooms behind it: ``segkit.testbed`` resolves the sources (``Sources``: the files and models a run names, or
the embedded testbed's, base models included), ``segkit.steps`` holds the cached steps (segment, attribute, select,
removal, attributor quality, fine-tune every mode, evaluate every model), ``segkit.jobs`` runs independent
training runs, evaluations and attribution shares in ``workers`` ``segkit`` processes (removal and quality run in
this process). Each step's output is keyed on its options, inputs and code, so a rerun reuses what is finished.

    >>> cfg = config_from({"workdir": "runs/x", "n_train": 400, "n_attribute": 32})
    >>> selected = select_traces(cfg)          # segment, attribute, select: one JSON Lines file
    >>> table = compare_modes(cfg)             # each base model's own selection; every mode, every benchmark
    >>> Sources(cfg).attributor                # the model IG asked (here the testbed's base model)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from . import steps, testbed
from .config import PipelineConfig, config_from, notebook_config
from .testbed import Sources, build_testbed, has_planted_roles


def _attributed(src: Sources, model: str | None = None) -> Path:
    cfg = src.cfg
    return steps.attribute_traces(cfg, steps.segmented_traces(cfg, src.train_data), model or src.attributor)


def attribute_traces(cfg: PipelineConfig, model: str | None = None) -> Path:
    """The first ``n_attribute`` traces of the training data, segmented and attributed by ``model`` (default: the
    attributor) with ``cfg.attribute``'s options."""
    return _attributed(Sources(cfg), model)


def sanity_attributions(cfg: PipelineConfig, model: str | None = None) -> Path | None:
    """The first ``n_sanity`` training traces attributed, with ``cfg.attribute``'s options, by ``model``'s (default:
    the attributor's) architecture with random weights (the model-randomisation check); None when ``n_sanity`` is
    0."""
    src = Sources(cfg)
    return steps.sanity_attributions(cfg, steps.segmented_traces(cfg, src.train_data), model or src.attributor)


def select_traces(cfg: PipelineConfig, attributed: Path | None = None) -> Path:
    """``selected_spans_ids`` at (``tau``, ``beta``) added to the ``attributed`` traces (default:
    ``attribute_traces(cfg)``)."""
    return steps.select_traces(cfg, Path(attributed) if attributed else attribute_traces(cfg))


def removal_effects(cfg: PipelineConfig, attributed: Path | None = None, model: str | None = None) -> Path:
    """The removal experiment (paper Fig. 2) on the first ``n_removal`` ``attributed`` traces (default:
    ``attribute_traces(cfg)``) under ``model`` (default: the attributor)."""
    src = Sources(cfg)
    return steps.removal_effects(cfg, Path(attributed) if attributed else _attributed(src), model or src.attributor)


def attributor_quality(cfg: PipelineConfig, model: str | None = None) -> dict:
    """The share of held-out traces after which ``model`` (default: the attributor) writes the gold answer."""
    src = Sources(cfg)
    return steps.attributor_quality(cfg, str(model or src.attributor), *src.held_out)


def selections(cfg: PipelineConfig) -> dict[int, Path]:
    """``{base seed: selected traces}``: each base model attributes the traces itself and fine-tunes on its own
    selection, as the authors attribute with the model they fine-tune (so every base model is a replicate of the
    whole method); with a given ``attributor``, every base model trains on that model's selection."""
    src = Sources(cfg)
    if cfg.attributor:
        one = select_traces(cfg, _attributed(src))
        return {b: one for b in src.base_models}
    return {b: select_traces(cfg, _attributed(src, m)) for b, m in src.base_models.items()}


def compare_modes(cfg: PipelineConfig, data: Path | dict | None = None, modes=None, seeds=None):
    """Every base model fine-tuned with every mode (default ``cfg.modes``) and seed (``cfg.seeds``) on its
    selection (default: ``selections(cfg)``, each base model's own; a file in ``data``: that selection for every
    base model), and evaluated with the base models on every benchmark: one row per (base seed, mode, seed,
    benchmark), skipped modes in ``.attrs["skipped"]`` (``segkit.steps.compare_modes``)."""
    src = Sources(cfg)
    data = selections(cfg) if data is None else data if isinstance(data, dict) else \
        {b: Path(data) for b in src.base_models}
    return steps.compare_modes(cfg, {b: Path(p) for b, p in data.items()}, src.base_models, src.benchmarks,
                               list(modes or cfg.modes), list(seeds or cfg.seeds))


def variant(cfg: PipelineConfig, name: str) -> PipelineConfig:
    """The run on the testbed variant ``name`` (``segkit.testbed.variant``), attributed by ``cfg``'s attributor,
    e.g. ``attribute_traces(variant(cfg, "answer not restated"))``."""
    return dataclasses.replace(testbed.variant(cfg, name), attributor=Sources(cfg).attributor)


__all__ = ["PipelineConfig", "config_from", "notebook_config", "Sources", "has_planted_roles", "build_testbed", "variant",
           "attribute_traces", "sanity_attributions", "select_traces", "selections", "removal_effects", "attributor_quality",
           "compare_modes"]
