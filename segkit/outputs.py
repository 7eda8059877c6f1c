"""Writing outputs safely: never onto a file the stage reads, never onto a device, never half-written.

``check_output`` refuses (one line, before any work) an output that is an input, lies inside or holds an input
folder, or is not a regular file; ``atomic_write`` builds a file beside its target and renames it into place, so a
failed or interrupted write leaves the previous file as it was. An appending stage writes only into its own output
(``check_resume``: ``OUT.options.json`` says which stage and options made it), one process at a time
(``locked_append``); ``to_line`` writes strict JSON (no NaN, no Infinity, no lone surrogate); a write that fails
(disk full, no permission) names its file (``named_write_errors``).

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
import errno
import fcntl
import glob
import json
import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Callable


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
        with named_write_errors(path):
            with tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(obj, path) -> Path:
    """Write one JSON document atomically: a summary whose presence marks a finished step is never half written.
    Strict JSON: a statistic over nothing (NaN, e.g. an AUC with one class) is written as null, never NaN."""
    with atomic_write(path) as f:
        f.write(json.dumps(missing_as_null(obj), indent=2, allow_nan=False) + "\n")
    return Path(path)


def missing_as_null(obj):
    """``obj`` with every NaN or infinite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: missing_as_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [missing_as_null(v) for v in obj]
    return obj


@contextlib.contextmanager
def building_folder(out, marker: str, key: str = "", main: bool = True):
    """A temporary folder beside ``out`` to build a folder output in (a model); when the block ends it replaces
    ``out`` (the old one is removed only after the rename), on any failure it is removed and ``out`` stays as it
    was. An existing non-empty ``out`` is replaced only if it holds ``marker`` (the file the builder writes last):
    the builder's own output, not a user's folder. ``key`` names the folder for every process of one launch;
    only ``main`` renames or removes it."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise OutputError(f"{out}: a folder this stage did not write (no {marker}); choose a new or empty folder")
    tmp, old = (out.with_name(f".{out.name}.{key or os.getpid()}.{x}") for x in ("partial", "old"))
    try:
        with named_write_errors(out):
            yield tmp
            if main:
                if out.exists():
                    os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not out.exists():
                os.replace(old, out)
        raise


def to_line(rec: dict) -> str:
    """One record as a JSON Lines line: the one place records are dumped. Strict JSON: a NaN or infinity
    (ValueError) or a lone surrogate (UnicodeEncodeError) is refused here, not written for the next reader to
    choke on."""
    line = json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n"
    line.encode("utf-8")  # a lone surrogate ("\\ud800" read from JSON) has no UTF-8 form
    return line


# errors that only a write makes; a permission error is the output's only when it names no other file
_FULL = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EFBIG: "the file is too large",
         errno.EROFS: "write elsewhere", errno.EIO: "the device failed"}


@contextlib.contextmanager
def named_write_errors(path):
    """A failed write (disk full, no permission, read-only file system) as one OutputError naming ``path``; what
    was written before stays (appends are flushed record by record, rewrites go through ``atomic_write``)."""
    try:
        yield
    except Exception as e:
        # a Rust writer (safetensors) reports an OSError as its own error: "... (os error 28)"
        code = e.errno if isinstance(e, OSError) else int(m[1]) if (m := re.search(r"os error (\d+)", str(e))) else 0
        filename = getattr(e, "filename", None)
        if not (code in _FULL or (code in (errno.EACCES, errno.EPERM) and filename in (None, str(path)))):
            raise
        hint = _FULL.get(code, "check its permissions")
        raise OutputError(f"{path}: cannot write: {os.strerror(code)}; {hint}; what was written before is "
                          f"kept") from e


def options_path(out: Path) -> Path:
    return out.with_name(out.name + ".options.json")


def written(out: Path) -> list[Path]:
    """OUT and its shards (``OUT.rankR-of-N``, see ``segkit.records.shard_path``), those that hold anything."""
    shards = glob.glob(glob.escape(str(out.with_name(out.stem))) + ".rank*-of-*" + glob.escape(out.suffix))
    return [p for p in [out, *map(Path, shards)] if p.is_file() and p.stat().st_size]


def check_resume(out, options: dict | None) -> None:
    """OutputError (one line) unless ``out`` is new, empty, or this stage's own output made with these
    ``options``: ``OUT.options.json``, written when the run that made OUT started, says which. An appending stage
    never adopts a file it did not write (a user's notes, another stage's output) nor mixes two settings."""
    out = Path(out)
    wanted = json.loads(json.dumps(options or {}, default=str))
    for p in written(out):  # a shard has its own options (an overwrite that died before its merge left OUT's old)
        path = options_path(p) if p != out and options_path(p).exists() else options_path(out)
        try:
            had = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            had = None
        if not isinstance(had, dict):
            raise OutputError(f"{p}: exists and was not written by this stage (no {path.name} beside it); an "
                              f"appending stage writes only into its own output: choose another path, or pass "
                              f"--overwrite to replace it")
        changed = sorted(k for k in set(had) | set(wanted) if had.get(k) != wanted.get(k))
        if "stage" in changed and had.get("stage"):
            raise OutputError(f"{p}: is the output of another stage ({had.get('stage')}); choose another output "
                              f"path")
        if changed:
            raise OutputError(f"{p}: holds records made with other options ({', '.join(changed)}); resuming "
                              "would mix them: pass --overwrite or another output path")


@contextlib.contextmanager
def locked_append(path: Path, before: Callable[[], object] = lambda: None):
    """``path`` opened for appending and locked for this process alone (``flock``, not waiting): a second process
    on the same file is refused at once instead of interleaving its records with ours. ``before`` runs once the
    lock is held (cutting a torn last line is safe only then); the lock goes when the process ends, however."""
    # the whole block: closing flushes what a failed write left in the buffer, and fails the same way
    with named_write_errors(path), path.open("a", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{path}: another process is writing it now; wait for it to finish, or choose "
                              f"another output path") from None
        if not path.exists() or not os.path.samestat(os.fstat(f.fileno()), path.stat()):
            raise OutputError(f"{path}: another process replaced it while this one opened it; run again")
        before()
        yield f
