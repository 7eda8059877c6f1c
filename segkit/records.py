"""JSON Lines records: one record per trace, fields added stage by stage.

Reading names the file and line of bad input; writing appends and flushes record by record, so an interrupted
stage loses nothing it finished and a rerun resumes where it stopped (records already in OUT are skipped).

    >>> for rec in run_stage(fn, "in.jsonl", "out.jsonl"): ...
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

log = logging.getLogger("segkit")


class RecordError(ValueError):
    """Bad input, located: ``path:line: what is wrong``."""

    def __init__(self, path, line: int, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{path}:{line}: {message}")


def iter_jsonl(path) -> Iterator[tuple[int, dict | RecordError]]:
    """Yield ``(line_number, record)``, or ``(line_number, RecordError)`` for a line that is not a JSON object."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, RecordError(path, n, f"not JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(rec, dict):
                yield n, RecordError(path, n, f"expected a JSON object, got {type(rec).__name__}")
                continue
            rec.setdefault("id", str(n))  # a stable key for resuming and merging: the input line
            yield n, rec


def read_jsonl(path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)``; blank lines are skipped, anything else that is not a JSON object raises."""
    for n, rec in iter_jsonl(path):
        if isinstance(rec, RecordError):
            raise rec
        yield n, rec


def load(path) -> list[dict]:
    return [r for _, r in read_jsonl(path)]


def dump(records: Iterable[dict], path) -> Path:
    """Write records to ``path`` atomically (write a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def require(rec: dict, fields: Iterable[str], path, line: int) -> None:
    missing = [k for k in fields if k not in rec]
    if missing:
        hint = {"segments": " (run `segkit segment` first)",
                "attributions": " (run `segkit attribute` first)",
                "selected_spans_ids": " (run `segkit select` first)"}
        raise RecordError(path, line, "missing field " + ", ".join(f"'{k}'{hint.get(k, '')}" for k in missing))


def finished_ids(path) -> list[str]:
    """Ids of the complete records already in ``path``; a torn last line (interrupted write) is cut off."""
    path = Path(path)
    if not path.exists():
        return []
    ids, good_bytes = [], 0
    with path.open("rb") as f:
        for raw in f:
            try:
                ids.append(str(json.loads(raw)["id"]))
            except (ValueError, KeyError, TypeError):
                if raw.endswith(b"\n"):  # a bad line in the middle is not ours to delete
                    raise RecordError(path, len(ids) + 1, "output file holds a line that is not a record; "
                                      "move it away or pass --overwrite")
                break
            good_bytes += len(raw)
    if good_bytes < path.stat().st_size:
        log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return ids


@dataclass
class StageResult:
    done: int = 0
    resumed: int = 0
    skipped: list[str] = field(default_factory=list)


def run_stage(fn: Callable[[dict], dict], src, out, *, required=("question", "solution", "answer"),
              on_error: str = "stop", overwrite: bool = False, progress: bool = True, desc: str = "",
              shard: tuple[int, int] = (0, 1)) -> StageResult:
    """Apply ``fn`` to every record of ``src`` and append the results to ``out``.

    Records whose id is already in ``out`` are not recomputed (resume). A bad record (missing field, or ``fn``
    raising ``ValueError``) stops the run with ``file:line`` named (``on_error="stop"``) or is reported and
    skipped (``"skip"``); either way what was written before stays. ``shard=(rank, world)`` processes the
    records whose position modulo ``world`` is ``rank``.
    """
    from tqdm.auto import tqdm

    src, out = Path(src), Path(out)
    if overwrite and out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set(finished_ids(out))
    # records stream through one at a time, so a bad line stops the run only after everything before it is saved
    mine = ((n, r) for i, (n, r) in enumerate(iter_jsonl(src)) if i % shard[1] == shard[0])
    total = sum(1 for i, line in enumerate(l for l in src.open(encoding="utf-8") if l.strip())
                if i % shard[1] == shard[0])
    result = StageResult()
    with out.open("a", encoding="utf-8") as f, tqdm(total=total, desc=desc or fn.__name__,
                                                      disable=not progress, unit="rec") as bar:
        for n, rec in mine:
            bar.update()
            if isinstance(rec, dict) and str(rec["id"]) in done:
                result.resumed += 1
                continue
            try:
                if isinstance(rec, RecordError):
                    raise rec
                require(rec, required, src, n)
                new = fn(rec)
            except RecordError as e:
                err = e
            except ValueError as e:
                err = RecordError(src, n, str(e))
            else:
                f.write(json.dumps(new, ensure_ascii=False) + "\n")
                f.flush()
                result.done += 1
                continue
            if on_error == "stop":
                raise err
            log.warning("skipped %s", err)
            result.skipped.append(str(err))
    return result
