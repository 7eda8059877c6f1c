"""JSON Lines records: one record per trace, fields added stage by stage.

Reading names the file and line of bad input (not UTF-8, not JSON, a duplicate id, a missing or mistyped field);
writing appends and flushes record by record, so an interrupted stage loses nothing it finished and a rerun
resumes where it stopped (records already in OUT are skipped). Stages that rewrite OUT build it beside and rename
it into place, so a failed run leaves the previous OUT as it was; no stage writes onto a file it reads.

    run_stage(lambda r: {**r, "n_chars": len(r["solution"])}, "in.jsonl", "out.jsonl", required=("solution",))
"""
from __future__ import annotations

import codecs
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from .fields import describe, field_error
from .outputs import (OutputError, atomic_write, building_folder, check_output, check_resume,  # noqa: F401
                      locked_append, named_write_errors, options_path, to_line, written, write_json)

log = logging.getLogger("segkit")
ON_ERROR = ("stop", "skip")  # what a stage does at a bad record: stop naming file:line, or report it and go on
DEDUPE = ("stop", "suffix")  # what reading does with a repeated id: stop naming both lines, or make it id#2, id#3


def stage_options(reads: str, writes: str = "output JSON Lines"):
    """The options every record stage's config shares, as dataclass fields: ``(input, out, on_error, unique_ids)``."""
    return (field(metadata={"positional": True, "input": True, "help": reads}),
            field(default="", metadata={"required": True, "output": "file", "help": writes}),
            field(default="stop", metadata={"choices": ON_ERROR,
                                            "help": "on a bad record: stop naming file:line, or report it and go on"}),
            field(default="stop", metadata={"choices": DEDUPE, "help": "on a repeated id: stop naming both lines, "
                                                                       "or rename it id#2, id#3"}))


class RecordError(ValueError):
    """Bad input, located: ``path:line: what is wrong``."""

    def __init__(self, path, line: int, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class Progress:
    """Records written by the running stage (the command line reports it when interrupted)."""
    done: int = 0
    rewriting: bool = False  # True while OUT is being rebuilt beside itself (an interrupt leaves OUT as it was)


PROGRESS = Progress()


def dump(records: Iterable[dict], path) -> Path:
    """Write records to ``path`` atomically (a temporary file, then a rename)."""
    with atomic_write(path) as f:
        for r in records:
            f.write(to_line(r))
    return Path(path)


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # an escaped UTF-16 surrogate: a lone one has no UTF-8 form


def _finite(text: str) -> float:
    """json's ``parse_float``/``parse_constant``: a number too large for a float (``1e400``) or JSON's missing
    ``NaN``/``Infinity`` would be written back as ``Infinity``, which no strict JSON reader takes."""
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"the number {text} is not finite (JSON has no NaN or Infinity)")
    return x


def _lone_surrogate(rec: dict) -> str | None:
    """Where ``rec`` holds a lone UTF-16 surrogate (``"\\ud800"``), or None."""
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone UTF-16 surrogate (\\u{ord(e.object[e.start]):04x}) that is not text"
    return None


def _repeat_message(key: str, first: int, same: bool) -> str:
    if same:  # one record twice (two runs appended to one file, a copy pasted twice): renaming would keep both
        return f"repeats line {first} exactly (id {key!r}): one record twice; delete the copy"
    return (f"duplicate id {key!r} (first at line {first}); give every record its own id (--unique-ids suffix "
            f"renames repeats, for distinct records that share an id; not for copies of one record)")


def iter_jsonl(path, dedupe_ids: str = "stop") -> Iterator[tuple[int, dict | RecordError]]:
    """Yield ``(line_number, record)``, or ``(line_number, RecordError)`` for a line that is not UTF-8, not a JSON
    object, or repeats an id. A record without ``id`` gets its line number; ids are compared as strings, so ``7``
    and ``"7"`` are the same id. ``dedupe_ids="suffix"`` renames a repeat to ``id#2``, ``id#3``, ... instead.
    A UTF-8 byte-order mark at the start of the file is read past."""
    if dedupe_ids not in DEDUPE:
        raise ValueError(f"dedupe_ids must be one of {DEDUPE}, not {dedupe_ids!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    seen: dict[str, tuple[int, bytes]] = {}  # id -> (line, digest of the line): a repeat may be a copy
    with path.open("rb") as f:  # binary, so that one undecodable line is that line's error only
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, RecordError(path, n, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line, parse_float=_finite, parse_constant=_finite)
            except json.JSONDecodeError as e:
                yield n, RecordError(path, n, f"not JSON ({e.msg} at column {e.colno})")
                continue
            except ValueError as e:  # a non-finite number, an integer of more digits than Python converts
                yield n, RecordError(path, n, f"not strict JSON: {e}")
                continue
            surrogate = isinstance(rec, dict) and _SURROGATE.search(raw) and _lone_surrogate(rec)
            if surrogate:
                yield n, RecordError(path, n, f"holds {surrogate}")
                continue
            if not isinstance(rec, dict):
                yield n, RecordError(path, n, f"expected a JSON object, got {describe(rec)}")
                continue
            rid = rec.setdefault("id", str(n))  # a stable key for resuming and merging: the input line
            if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
                yield n, RecordError(path, n, f"field 'id': expected a non-empty string or integer, "
                                              f"got {describe(rid)}")
                continue
            key, digest = str(rid), hashlib.sha1(raw.strip()).digest()
            if key in seen:
                first, same = seen[key][0], seen[key][1] == digest
                if dedupe_ids == "stop" or same:
                    yield n, RecordError(path, n, _repeat_message(key, first, same))
                    continue
                k = 2
                while f"{key}#{k}" in seen:
                    k += 1
                key = rec["id"] = f"{key}#{k}"
            seen[key] = (n, digest)
            yield n, rec


def read_jsonl(path, dedupe_ids: str = "stop") -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)``; blank lines are skipped, any bad line raises its RecordError."""
    for n, rec in iter_jsonl(path, dedupe_ids):
        if isinstance(rec, RecordError):
            raise rec
        yield n, rec


def load(path, dedupe_ids: str = "stop") -> list[dict]:
    return [r for _, r in read_jsonl(path, dedupe_ids)]


def require(rec: dict, fields: Iterable[str], path, line: int) -> None:
    """RecordError (``path:line: field 'answer': expected ..., got null``) unless every one of ``fields`` is in
    ``rec`` with the type ``segkit.fields.FIELDS`` gives it."""
    message = field_error(rec, fields)
    if message:
        raise RecordError(path, line, message)


def finished_ids(path, cut: bool = False) -> list[str]:
    """Ids of the complete records already in ``path``; a torn last line (interrupted write) is not counted, and
    with ``cut`` cut off (only by the process that holds ``path``'s lock: for another it is a line in progress)."""
    path = Path(path)
    if not path.exists():
        return []
    ids, good_bytes = [], 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):  # the write of the last record was cut, even if what is left parses:
                break                     # an append after it would glue two records on one line
            try:
                ids.append(str(json.loads(raw)["id"]))
            except (ValueError, KeyError, TypeError):  # a bad line in the middle is not ours to delete
                raise RecordError(path, n, "output file holds a line that is not a record; "
                                  "move it away or pass --overwrite") from None
            good_bytes += len(raw)
    if cut and good_bytes < path.stat().st_size:
        log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return ids


# ---------------------------------------------------------------------------------------------------------------
# running a stage over a file, in one process or several


@dataclass
class StageResult:
    done: int = 0
    resumed: int = 0
    skipped: list[str] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun and ``accelerate launch`` set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def launch_id() -> str:
    """What the processes of one launch share and another launch does not: ``SEGKIT_RUN_ID`` if set, else
    torchrun's run id (``--rdzv-id``; a fresh uuid under ``--standalone``), else this host and launcher process."""
    run = os.environ.get("SEGKIT_RUN_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "none")
    return run if run != "none" else f"{os.uname().nodename}:{os.getppid()}"


def owner(record_id: str, world: int) -> int:
    """The rank that processes a record: a hash of its id, so sharding does not depend on order or launch."""
    return int(hashlib.sha1(str(record_id).encode()).hexdigest(), 16) % world


def shard_path(out, rank: int, world: int) -> Path:
    return Path(out).with_name(f"{Path(out).stem}.rank{rank}-of-{world}{Path(out).suffix}")


def _marker_path(shard: Path) -> Path:
    """Written by a rank when it has finished: the launch and the ids it skipped (they will never come)."""
    return shard.with_name(shard.name + ".skipped")


def run_stage(fn: Callable[[dict], dict], src, out, *, required=("question", "solution", "answer"),
              on_error: str = "stop", overwrite: bool = False, progress: bool = True, desc: str = "",
              world: tuple[int, int] | None = None, dedupe_ids: str = "stop",
              options: dict | None = None) -> StageResult:
    """Apply ``fn`` to every record of ``src`` and append the results to ``out``.

    Refuses (OutputError) an ``out`` that is ``src`` or not a regular file. Records whose id is already in ``out``
    are not recomputed (resume); ``overwrite`` instead builds a new ``out`` beside the old one and renames it into
    place at the end, so a failed or interrupted run leaves the old ``out`` whole. A bad record (unreadable line,
    duplicate id, missing or mistyped field in ``required``, or ``fn`` raising any Exception) stops the run with
    ``file:line`` named (``on_error="stop"``) or is reported and skipped (``"skip"``); either way what was written
    before stays. ``dedupe_ids="suffix"`` renames repeated ids (``id#2``) instead of stopping at them.

    Under torchrun/accelerate (``world=(rank, n)``, default from the environment) each rank takes the records
    whose id hashes to it, appends them to its own shard file (``OUT.rankR-of-N.jsonl``, resumable), and the
    rank that finds every shard complete merges them into ``out`` in input order (one atomic rename). A rank that
    died is simply relaunched: it skips what its shard already holds. With ``overwrite`` each rank empties only
    its own shard, and only shards finished in this launch are merged.

    ``options`` (what determines the records, e.g. the model and IG settings; ``stage`` defaults to ``desc``) are
    saved beside OUT; a resume is only ever onto OUT written with the same ones (``check_resume``): a file this
    stage did not write, or wrote with other options, is refused untouched. The file appended to is locked
    (``outputs.locked_append``), so a second process on it stops at once.
    """
    rank, n_ranks = world or rank_world()
    src, out = Path(src), check_output(out, src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file")
    if next(iter_jsonl(src, dedupe_ids), None) is None:  # an empty OUT and exit 0 would look like work done
        raise ValueError(f"{src}: holds no records (empty, or blank lines only)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # an appending run always records what made OUT; a rewriting stage (segment, select) only when it is asked to
    keep, options = not overwrite or options is not None, {"stage": desc or fn.__name__, **(options or {})}
    options = json.loads(json.dumps(options, default=str))
    if not overwrite:
        check_resume(out, options)  # before anything is created: a file that is not ours stays as it was

    def claim(path: Path) -> None:  # under path's lock: a new OUT (a shard) is ours from here, with these options
        if keep and path != out:  # a shard's own options: OUT's are written only once the merge has replaced OUT
            write_json(options, options_path(path))
        if keep and not overwrite and not written(out):
            write_json(options, options_path(out))
        finished_ids(path, cut=True)

    args = dict(fn=fn, src=src, required=required, on_error=on_error, progress=progress, dedupe_ids=dedupe_ids)
    if n_ranks == 1:
        if overwrite:  # under OUT's lock: an appender still writing the old OUT would lose its records
            PROGRESS.rewriting = True  # until the rename: an interrupt before it leaves OUT as it was
            existed = out.exists()
            with locked_append(out):
                try:
                    with atomic_write(out) as f:
                        result = _run(f, set(), lambda rec: True, desc=desc or fn.__name__, **args)
                except BaseException:  # the empty file the lock made goes again: a failed run leaves no OUT
                    if not existed and out.exists() and not out.stat().st_size:
                        out.unlink()
                    raise
                if keep:
                    write_json(options, options_path(out))
            PROGRESS.rewriting = False
            return result
        with locked_append(out, lambda: claim(out)) as f:
            return _run(f, set(finished_ids(out)), lambda rec: True, desc=desc or fn.__name__, **args)
    shard = shard_path(out, rank, n_ranks)
    if overwrite:  # this rank's files only: the others may be reading theirs, and OUT is replaced by the merge
        shard.unlink(missing_ok=True)
        _marker_path(shard).unlink(missing_ok=True)
    with locked_append(shard, lambda: claim(shard)) as f:  # every rank writes the same options
        done = set(finished_ids(shard)) | (set() if overwrite else set(finished_ids(out)))
        result = _run(f, done, lambda rec: owner(rec["id"], n_ranks) == rank, desc=desc or f"rank {rank}", **args)
    with atomic_write(_marker_path(shard)) as f:
        json.dump({"launch": launch_id(), "skipped": result.skipped_ids}, f)
    if merge_shards(src, out, n_ranks, dedupe_ids=dedupe_ids, fresh=overwrite) and keep:
        write_json(options, options_path(out))  # only now does OUT hold what these options made
    return result


def merge_shards(src, out, n_ranks: int, dedupe_ids: str = "stop", fresh: bool = False) -> bool:
    """Merge the shard files into ``out`` in input order once they hold every record; False if not yet.

    ``fresh`` (an overwriting launch): records already in ``out`` are not taken, and a shard counts only if it was
    finished by this launch (``launch_id``), so a shard left by an earlier run is never merged in."""
    src, out = Path(src), Path(out)
    skipped: set[str] = set()
    for r in range(n_ranks):
        p = _marker_path(shard_path(out, r, n_ranks))
        try:
            marker = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # that rank has not finished (or died: relaunch it)
            return False
        if fresh and marker.get("launch") != launch_id():
            log.info("%s: rank %d has not finished in this launch; not merged yet", out, r)
            return False
        skipped |= set(marker.get("skipped", ()))
    have: dict[str, str] = {}
    for p in ([] if fresh else [out]) + [shard_path(out, r, n_ranks) for r in range(n_ranks)]:
        if p.exists():
            with p.open(encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n") and line.strip():  # a line still being written is not taken
                        have.setdefault(str(json.loads(line)["id"]), line)
    order = [str(r["id"]) for _, r in iter_jsonl(src, dedupe_ids) if isinstance(r, dict)]
    if any(i not in have and i not in skipped for i in order):
        return False
    with atomic_write(out) as f:  # a concurrent merge by another rank writes the same content
        f.writelines(have[i] for i in order if i in have)
    return True


def _run(f: TextIO, done: set, mine: Callable[[dict], bool], *, fn, src: Path, required, on_error, progress,
         desc, dedupe_ids) -> StageResult:
    from tqdm.auto import tqdm

    # records stream through one at a time, so a bad line stops the run only after everything before it is saved
    total = sum(1 for _, r in iter_jsonl(src, dedupe_ids) if not isinstance(r, dict) or mine(r))
    todo = ((n, r) for n, r in iter_jsonl(src, dedupe_ids) if not isinstance(r, dict) or mine(r))
    result = StageResult()
    with tqdm(total=total, desc=desc, disable=not progress, unit="rec") as bar:
        for n, rec in todo:
            bar.update()
            if isinstance(rec, dict) and str(rec["id"]) in done:
                result.resumed += 1
                continue
            try:
                if isinstance(rec, RecordError):
                    raise rec
                require(rec, required, src, n)
                line = to_line(fn(rec))  # a NaN the stage computed is this record's error, not a broken OUT
            except RecordError as e:
                err = e
            except Exception as e:  # any failure on one record is that record's: named, and skippable
                err = RecordError(src, n, str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")
                err.__cause__ = e
            else:
                with named_write_errors(f.name):
                    f.write(line)
                    f.flush()
                result.done += 1
                PROGRESS.done += 1
                continue
            if on_error == "stop":
                raise err
            log.warning("skipped %s", err)
            result.skipped.append(str(err))
            result.skipped_ids.append(str(rec["id"]) if isinstance(rec, dict) else f"line {n}")
    return result
