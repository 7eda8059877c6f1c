"""The ``segkit`` command: one subcommand per stage, each built from that stage's options dataclass.

    segkit segment data/train.jsonl --out runs/segments.jsonl
    segkit attribute runs/segments.jsonl --model smollm2-135m-instruct --out runs/attributed.jsonl
    segkit select runs/attributed.jsonl --out runs/selected.jsonl --tau 0.7 --beta 0.8

Every subcommand takes ``--help``; options are the fields of the stage's dataclass, with their help strings.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import time
import typing

# name -> (module, options dataclass, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "segment": ("segkit.segment", "SegmentConfig", "run_segment", "split traces at reflection keywords"),
    "attribute": ("segkit.attribute", "AttributeConfig", "run_attribute",
                  "Integrated Gradients per token, segment strength and consistency"),
    "select": ("segkit.score", "SelectConfig", "run_select", "choose important segments (tau, beta)"),
    "synth": ("segkit.synth", "SynthConfig", "run_synth", "generate the planted-role testbed"),
    "train": ("segkit.train", "TrainConfig", "run_train", "(selective) supervised fine-tuning"),
    "evaluate": ("segkit.evaluate", "EvalConfig", "run_evaluate", "generate, grade and score a model"),
    "report": ("segkit.report", "ReportConfig", "run_report", "run the notebooks with papermill into reports/"),
}


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One option per dataclass field: ``--name`` (``positional`` in metadata makes it positional)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta, typ = dict(f.metadata), hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kw = {"help": meta.get("help", "")}
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if meta.get("positional"):
            parser.add_argument(f.name, type=_scalar(typ), **kw)
            continue
        name = "--" + f.name.replace("_", "-")
        if typ is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default, **kw)
        elif typing.get_origin(typ) in (list, tuple) or typing.get_origin(_strip_optional(typ)) in (list, tuple):
            inner = typing.get_args(_strip_optional(typ))[0]
            parser.add_argument(name, nargs="*", type=inner, default=default, **kw)
        else:
            kw["help"] += f" (default: {default})"
            parser.add_argument(name, type=_scalar(typ), default=default, required=meta.get("required", False),
                                **kw)


def _strip_optional(typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return args[0] if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
        and len(args) == 1 else typ


def _scalar(typ):
    typ = _strip_optional(typ)
    return typ if typ in (int, float, str) else str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, cls_name, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):  # a stage not installed in this build
            continue
        add_dataclass_args(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    module, cls_name, fn_name, _ = COMMANDS[args.command]
    mod = importlib.import_module(module)
    cls = getattr(mod, cls_name)
    cfg = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    t0 = time.perf_counter()
    from .records import RecordError
    errors = (RecordError, FileNotFoundError, ValueError, OSError) + tuple(getattr(mod, "ERRORS", ()))
    try:
        summary = getattr(mod, fn_name)(cfg)
    except errors as e:
        print(f"segkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(f"segkit {args.command}: {summary} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
