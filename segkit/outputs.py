"""Writing outputs safely: never onto a file the stage reads, never onto a device, never half-written.

``check_output`` refuses (one line, before any work) an output that is an input, lies inside or holds an input
folder, or is not a regular file; ``atomic_write`` builds a file beside its target and renames it into place, so a
failed or interrupted write leaves the previous file as it was.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> _ = write_json({"done": True}, p)
    >>> check_output(p, p)
    Traceback (most recent call last):
    ...
    segkit.outputs.OutputError: ...: is the input ...; choose another output path
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path


class OutputError(ValueError):
    """An output path the stage must not write: one of its inputs, a device, a folder where a file goes, ..."""


def check_output(out, *reads, folder: bool = False) -> Path:
    """``out`` as a Path, or OutputError (one line) if writing it could destroy input or cannot make a file.

    OUT must be a regular file or a new path (``folder=True``: a folder or a new path), must not be any of
    ``reads`` (the same file through any path or link), nor lie inside a folder among ``reads``, nor (a folder)
    hold any of them."""
    out = Path(out)
    if not str(out):
        raise OutputError("no output path given")
    if out.exists():
        mode = out.stat().st_mode
        if folder and not stat.S_ISDIR(mode):
            raise OutputError(f"{out}: exists and is not a folder; choose a new path or a folder")
        if not folder and not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
            raise OutputError(f"{out}: is {kind}; the output must be a regular file or a new path")
    target = out.resolve()
    for r in reads:
        if r is None or not str(r):
            continue
        r = Path(r)
        same = os.path.samefile(out, r) if out.exists() and r.exists() else target == r.resolve()
        if same:
            raise OutputError(f"{out}: is the input {r}; choose another output path")
        if folder and r.is_dir() and r.resolve() in target.parents:
            raise OutputError(f"{out}: lies inside the input folder {r}; choose an output folder apart from it")
        if folder and target in r.resolve().parents:  # an input file or folder inside the output folder
            raise OutputError(f"{out}: holds the input {r}; choose an output folder apart from it")
    return out


@contextlib.contextmanager
def atomic_write(path, mode: str = "w"):
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` in one rename, on any
    failure (Ctrl-C included) it is removed and ``path`` stays as it was. Never replaces a device or a folder."""
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(obj, path) -> Path:
    """Write one JSON document atomically: a summary whose presence marks a finished step is never half written."""
    with atomic_write(path) as f:
        f.write(json.dumps(obj, indent=2) + "\n")
    return Path(path)
