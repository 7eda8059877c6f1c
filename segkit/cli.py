"""The ``segkit`` command: one subcommand per stage, each built from that stage's options dataclass.

    segkit segment data/train.jsonl --out runs/segments.jsonl
    segkit attribute runs/segments.jsonl --model smollm2-135m-instruct --out runs/attributed.jsonl
    segkit select runs/attributed.jsonl --out runs/selected.jsonl --tau 0.7 --beta 0.8

Every subcommand takes ``--help``; options are the fields of the stage's dataclass, with their help strings.
Only the chosen stage's module is imported (``segkit --help`` answers at once), and everything that can be checked
before the work starts is: option ranges (the dataclass's ``__post_init__``), input files (fields whose metadata
says ``"input": True``) and the output path (``"output": "file"`` or ``"folder"``: never an input, never a device).
Errors are one line ``segkit CMD: error: ...`` and exit 2; Ctrl-C is one line and exit 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import pickle
import sys
import time
import typing

from .commands import COMMANDS, config_class

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130  # argparse's code for usage errors; 128 + SIGINT, as shells report Ctrl-C


class _Once(argparse.Action):
    """Store an option's value; the same option given twice is an error naming it, where argparse would silently
    keep the last value and drop the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given", set())
        if self.dest in given:
            parser.error(f"{'/'.join(self.option_strings)} given twice (it takes one value); give it once")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class _OnceBool(argparse.BooleanOptionalAction, _Once):
    def __call__(self, parser, namespace, values, option_string=None):
        _Once.__call__(self, parser, namespace, not option_string.startswith("--no-"), option_string)


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One option per dataclass field: ``--name`` (``positional`` in metadata makes it positional). A list option
    given again adds to the list (``--data a --data b``); any other option given twice is an error."""
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
            parser.add_argument(name, action=_OnceBool, default=default, **kw)
        elif typing.get_origin(typ) in (list, tuple) or typing.get_origin(_strip_optional(typ)) in (list, tuple):
            inner = typing.get_args(_strip_optional(typ))[0]
            kw["help"] += f" (default: {' '.join(map(str, default or [])) or 'none'}; repeat to add more)"
            # default None, not the list: "extend" would add the user's values to the default's
            parser.add_argument(name, nargs="*", action="extend", type=inner, default=None, **kw)
        else:
            kw["help"] += f" (default: {default})"
            parser.add_argument(name, type=_scalar(typ), default=default, required=meta.get("required", False),
                                action=_Once, **kw)


def _strip_optional(typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return args[0] if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
        and len(args) == 1 else typ


def _scalar(typ):
    typ = _strip_optional(typ)
    return typ if typ in (int, float, str) else str


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s subparser gets its options (importing that stage alone)."""
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"segkit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            add_dataclass_args(p, config_class(name))
    return parser


def _version() -> str:
    """The installed distribution's version (what pip reports), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segkit")
    except PackageNotFoundError:
        from . import __version__

        return f"{__version__} (not installed)"


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is not an option (only -v and -h come before it)."""
    return next((a for a in argv if not a.startswith("-")), None)


def check_paths(cfg) -> None:
    """Before any work: input files exist and are readable; the output is not one of them and can be a file (or
    folder). Fields opt in through their metadata: ``"input": True``, ``"output": "file"`` or ``"folder"``."""
    from .records import check_output

    inputs, outputs = [], []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("input"):
            inputs += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if str(v)]
        if f.metadata.get("output") and str(value):
            outputs.append((str(value), f.metadata["output"] == "folder"))
    for path in inputs:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        if os.path.isdir(path) or not os.access(path, os.R_OK):
            raise FileNotFoundError(f"{path}: {'a folder, not a file' if os.path.isdir(path) else 'not readable'}")
    for out, folder in outputs:
        check_output(out, *inputs, folder=folder)


def _one_line(e: BaseException) -> str:
    """An error as one line: a library's message of several lines (torch's refusal of a pickle, say) is cut to
    its first, with where to read the rest."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    first = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(' .:')} (the rest with -v)"
    if isinstance(e, pickle.UnpicklingError):
        return f"refused to unpickle a file (a pickle can run code; torch loads only weights): {first}"
    return first


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = _command(argv)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from . import records

    cls = config_class(args.command)
    mod = importlib.import_module(COMMANDS[args.command][0])  # the run function lives there (may differ from cls)
    errors = (records.RecordError, records.OutputError, FileNotFoundError, ValueError, OSError,
              pickle.UnpicklingError, *getattr(mod, "ERRORS", ()))
    records.PROGRESS.done, records.PROGRESS.rewriting = 0, False
    t0 = time.perf_counter()
    try:
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}
        cfg = cls(**given)  # validates its options; a list option not given keeps the dataclass's default
        check_paths(cfg)
        summary = getattr(mod, COMMANDS[args.command][2])(cfg)
    except errors as e:
        logging.getLogger("segkit").debug("traceback", exc_info=True)
        # a command's own errors (ERRORS: report's list of missing files, a failed cell) are written to be read whole
        text = str(e) if isinstance(e, getattr(mod, "ERRORS", ())) else _one_line(e)
        print(f"segkit {args.command}: error: {text}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        n = records.PROGRESS.done
        then = ("the output was left as it was; rerun the same command to start again" if records.PROGRESS.rewriting
                else "rerun the same command to resume")
        print(f"segkit {args.command}: interrupted after {n} record{'s' * (n != 1)}; {then}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"segkit {args.command}: {summary} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
