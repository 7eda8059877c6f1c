"""A refactor is not a change of results: one tiny parameter file (tests/data/refactor.yaml) through ``segkit
report`` with the code of a pinned earlier commit and with today's code writes byte-identical data and model files
(JSON Lines, model weights, tokenizers) and the same numbers in the headline JSON files (results added since, new
files and new headline keys, are not compared).

Both runs happen here, on the same machine, one after the other (floating-point sums differ between CPUs, so a
stored list of hashes would not travel). ``BEFORE`` is the last commit that changed results on purpose: first the
commit before the package was rebuilt into rooms (issue 17, 0df5290), now issue 18's last (each base model
attributes its own traces and fine-tunes on its own selection; the verdict's statistics); a change that is meant to
change results moves it to its own commit.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARAMS = Path(__file__).with_name("data") / "refactor.yaml"
BEFORE = "b1967fa30eaa814e891c4e339d567ded0e2de700"
KEY = re.compile(r"-[0-9a-f]{8,}")           # cache keys in folder and file names
# the data and model files (the runner's and stages' bookkeeping beside them, options files, locks, the pickled
# training arguments with their output paths, may change with the code that keeps the books)
MODEL_FILES = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "train_summary.json",
               "tau_beta.json"}


RUN_PATH = re.compile(r"\S*/runs/[^/]+/")   # a path into the work folder, from wherever the stage ran


PROSE = {"reason"}  # sentences written for a reader (a choice's reason): their wording may change, not their data


def _normalise(value, key: str = ""):
    """A JSON value with timings dropped, the run's own paths and cache keys blanked out, and the prose of ``PROSE``
    keys left out; every other string (questions, traces, segments, generated answers) is compared as it is."""
    if isinstance(value, dict):
        return {k: _normalise(v, k) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_normalise(v, key) for v in value]
    if isinstance(value, str):
        return "<text>" if key in PROSE else KEY.sub("-K", RUN_PATH.sub("<run>/", value))
    return value


def _digest(path: Path) -> str:
    if path.suffix in (".json", ".jsonl"):
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        text = "\n".join(json.dumps(_normalise(json.loads(x)), sort_keys=True) for x in lines if x.strip())
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(folder: Path) -> Counter:
    """``{(file kind, content digest): count}`` over every data and model file of a work folder."""
    files = [p for p in folder.rglob("*") if p.is_file() and (
        p.suffix in (".jsonl", ".safetensors", ".jinja") or p.name in MODEL_FILES or p.name.endswith(".summary.json")
        or p.name.startswith("quality-"))]
    return Counter((KEY.sub("-K", p.name) if p.suffix not in (".jsonl", ".json") else p.suffix,
                    _digest(p)) for p in files)


def _differences(before, after, where: str = "") -> list[str]:
    """Where a number of the ``before`` headline JSON is not in ``after``: keys and table rows added since are new
    results and not compared; a row of a table (a list of mappings) is found by its words and whole numbers (score,
    variant, role, mode, base_seed, ...); timings and the runner's stamp are skipped."""
    if isinstance(before, dict):
        if not isinstance(after, dict):
            return [f"{where}: {after!r} is no mapping"]
        return [d for k, v in before.items() if "seconds" not in k and k not in ("versions", "stamped")
                for d in (_differences(v, after[k], f"{where}.{k}") if k in after else [f"{where}.{k}: gone"])]
    if isinstance(before, list) and before and all(isinstance(r, dict) for r in before):
        def match(row):
            # a row's words and whole numbers name it (score, variant, role, mode, base_seed...)
            words = {k: v for k, v in row.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
            return next((r for r in after if isinstance(r, dict) and all(r.get(k) == v for k, v in words.items())),
                        None), f"{where}{sorted(map(str, words.values()))}"
        return [d for r in before for found, at in [match(r)]
                for d in (_differences(r, found, at) if found is not None else [f"{at}: row gone"])]
    if isinstance(before, list):
        after = list(after) + [None] * len(before) if isinstance(after, list) else [None] * len(before)
        return [d for i, v in enumerate(before) for d in _differences(v, after[i], f"{where}[{i}]")]
    if isinstance(before, float) and not math.isfinite(before) or before is None:
        return []
    if isinstance(before, bool):
        return [] if after is before else [f"{where}: {before} -> {after}"]
    if isinstance(before, (int, float)):
        ok = isinstance(after, (int, float)) and round(float(after), 12) == round(float(before), 12)
        return [] if ok else [f"{where}: {before} -> {after}"]
    return []


def _report(code: Path, notebooks: Path, where: Path) -> Path:
    where.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "segkit", "report", "--params", str(PARAMS), "--out", str(where / "reports"),
           "--workdir", str(where / "runs"), "--notebooks", str(notebooks)]
    done = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True)  # paths in records: runs/...
    assert done.returncode == 0, done.stderr[-3000:]
    return where


@pytest.mark.slow
def test_the_refactor_writes_the_same_bytes_and_numbers(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git history (a checkout, not an installed package)")
    old = tmp_path / "before-code"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "segkit", "notebooks"],
                             capture_output=True)
    assert archive.returncode == 0, f"commit {BEFORE} is not in this clone: {archive.stderr.decode()[-500:]}"
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    before = _report(old, old / "notebooks", tmp_path / "before")
    after = _report(ROOT, ROOT / "notebooks", tmp_path / "after")

    (b_run,), (a_run,) = (list((x / "runs").iterdir()) for x in (before, after))
    b_files, a_files = _outputs(b_run), _outputs(a_run)
    assert sum(b_files.values()) > 100  # the run wrote models, traces and evaluations
    # every file the old code wrote, the new code writes to the byte; steps added since (e.g. 01's random-weight
    # attributor) may write more
    assert not b_files - a_files, f"changed or missing: {b_files - a_files}; new: {a_files - b_files}"

    heads = sorted(p.name for p in (before / "reports").glob("*.json"))
    assert heads == sorted(p.name for p in (after / "reports").glob("*.json")) and heads
    for name in heads:
        b, a = (json.loads((x / "reports" / name).read_text()) for x in (before, after))
        assert _differences(b, a) == [], name
    shutil.rmtree(tmp_path / "before-code")
