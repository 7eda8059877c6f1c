"""JSON Lines records: one record per trace, fields added stage by stage.

Reading names the file and line of bad input; writing appends and flushes record by record, so an interrupted
stage loses nothing it finished and a rerun resumes where it stopped (records already in OUT are skipped).

    >>> for rec in run_stage(fn, "in.jsonl", "out.jsonl"): ...
"""
from __future__ import annotations

import hashlib
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
    skipped_ids: list[str] = field(default_factory=list)


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun and ``accelerate launch`` set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def owner(record_id: str, world: int) -> int:
    """The rank that processes a record: a hash of its id, so sharding does not depend on order or launch."""
    return int(hashlib.sha1(str(record_id).encode()).hexdigest(), 16) % world


def shard_path(out, rank: int, world: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.rank{rank}-of-{world}{out.suffix}")


def run_stage(fn: Callable[[dict], dict], src, out, *, required=("question", "solution", "answer"),
              on_error: str = "stop", overwrite: bool = False, progress: bool = True, desc: str = "",
              world: tuple[int, int] | None = None) -> StageResult:
    """Apply ``fn`` to every record of ``src`` and append the results to ``out``.

    Records whose id is already in ``out`` are not recomputed (resume). A bad record (missing field, or ``fn``
    raising ``ValueError``) stops the run with ``file:line`` named (``on_error="stop"``) or is reported and
    skipped (``"skip"``); either way what was written before stays.

    Under torchrun/accelerate (``world=(rank, n)``, default from the environment) each rank takes the records
    whose id hashes to it, appends them to its own shard file (``OUT.rankR-of-N.jsonl``, resumable), and the
    rank that finds every shard complete merges them into ``out`` in input order. A rank that died is simply
    relaunched: it skips what its shard already holds.
    """
    rank, n_ranks = world or rank_world()
    src, out = Path(src), Path(out)
    if overwrite and rank == 0:
        for p in [out] + [shard_path(out, r, n_ranks) for r in range(n_ranks)]:
            p.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if n_ranks == 1:
        return _run(fn, src, out, set(finished_ids(out)), lambda rec: True, required, on_error, progress, desc)
    shard = shard_path(out, rank, n_ranks)
    done = set(finished_ids(out)) | set(finished_ids(shard))
    result = _run(fn, src, shard, done, lambda rec: owner(rec["id"], n_ranks) == rank, required, on_error,
                  progress, desc or f"rank {rank}")
    # skipped records are listed beside the shard, so the merging rank knows they will never come
    _skipped_path(shard).write_text("".join(json.dumps(i) + "\n" for i in result.skipped_ids))
    merge_shards(src, out, n_ranks)
    return result


def _skipped_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".skipped")


def merge_shards(src, out, n_ranks: int) -> bool:
    """Merge the shard files into ``out`` in input order once they hold every record; False if not yet."""
    src, out = Path(src), Path(out)
    have: dict[str, str] = {}
    for p in [out] + [shard_path(out, r, n_ranks) for r in range(n_ranks)]:
        if p.exists():
            with p.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        have.setdefault(str(json.loads(line)["id"]), line if line.endswith("\n") else line + "\n")
    order = [str(r["id"]) for _, r in iter_jsonl(src) if isinstance(r, dict)]
    skipped = set()
    for r in range(n_ranks):
        p = _skipped_path(shard_path(out, r, n_ranks))
        if not p.exists():  # that rank has not finished (or died: relaunch it)
            return False
        skipped |= {str(json.loads(line)) for line in p.read_text().splitlines()}
    if any(i not in have and i not in skipped for i in order):
        return False
    tmp = out.with_name(f"{out.name}.merge-{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(have[i] for i in order if i in have)
    os.replace(tmp, out)  # atomic: a concurrent merge by another rank writes the same content
    return True


def _run(fn, src: Path, out: Path, done: set, mine: Callable[[dict], bool], required, on_error, progress,
         desc) -> StageResult:
    from tqdm.auto import tqdm

    # records stream through one at a time, so a bad line stops the run only after everything before it is saved
    todo = ((n, r) for n, r in iter_jsonl(src) if not isinstance(r, dict) or mine(r))
    result = StageResult()
    total = sum(1 for _, r in iter_jsonl(src) if not isinstance(r, dict) or mine(r))
    with out.open("a", encoding="utf-8") as f, tqdm(total=total, desc=desc or fn.__name__,
                                                      disable=not progress, unit="rec") as bar:
        for n, rec in todo:
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
            result.skipped_ids.append(str(rec["id"]) if isinstance(rec, dict) else f"line {n}")
    return result
