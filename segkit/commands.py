"""The registry of ``segkit`` commands: one per stage, with its options dataclass and run function. The command line
(``segkit.cli``) builds its parser from it; the pipeline's process launcher and the vLLM relaunch turn options back
into a command line with ``to_argv``. Nothing here imports a stage until asked for its options.

    >>> to_argv(config_class("select")(input="a.jsonl", out="b.jsonl"))[:3]
    ['a.jsonl', '--out', 'b.jsonl']
"""
from __future__ import annotations

import dataclasses
import importlib
import typing

# name -> (module, options dataclass, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "segment": ("segkit.segment", "SegmentConfig", "run_segment", "split traces at reflection keywords"),
    "attribute": ("segkit.attribute", "AttributeConfig", "run_attribute",
                  "Integrated Gradients per token, segment strength and consistency"),
    "select": ("segkit.score", "SelectConfig", "run_select", "choose important segments (tau, beta)"),
    "synth": ("segkit.synth", "SynthConfig", "run_synth", "generate the planted-role testbed"),
    "train": ("segkit.finetune", "TrainConfig", "fit", "(selective) supervised fine-tuning"),
    "evaluate": ("segkit.evaluate", "EvalConfig", "run_evaluate", "generate, grade and score a model"),
    "report": ("segkit.report", "ReportConfig", "run_report", "run the notebooks with papermill into reports/"),
}

def config_class(command: str):
    """The options dataclass of a command (imports that stage's module: an ImportError is not hidden)."""
    module, cls_name, _, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), cls_name)


def to_argv(cfg) -> list[str]:
    """The command-line options that rebuild ``cfg`` through ``add_dataclass_args`` (its inverse), e.g. to run a
    stage in another environment's ``segkit``."""
    argv, hints = [], typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("positional"):
            argv.insert(0, str(value))
            continue
        name = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            argv.append(name if value else "--no-" + name[2:])
        elif isinstance(value, (list, tuple)):
            argv += [name, *map(str, value)]
        elif value is not None:
            argv += [name, str(value)]
    return argv
