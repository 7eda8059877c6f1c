"""Multi-process runs under torchrun on this machine's CPU (2 processes, gloo)."""
import json
import os
import subprocess
import sys

import pytest

from segkit.records import finished_ids, load, merge_shards, owner, run_stage, shard_path

from conftest import SHORT, tagged

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
VOLATILE = {"attribution_seconds"}


def records(n):
    return [{**SHORT, "id": f"r{i}", "answer": str(i % 10), "solution": f"Step {i}.\n\nWait, sure.",
             "segments": [f"Step {i}.", "\n\nWait, sure."]} for i in range(n)]


def strip(recs):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in recs]


def test_sharding_is_by_id_and_covers_every_record():
    ids = [f"r{i}" for i in range(200)]
    ranks = [owner(i, 2) for i in ids]
    assert set(ranks) == {0, 1} and 60 < ranks.count(0) < 140
    assert ranks == [owner(i, 2) for i in ids]  # deterministic


def test_relaunched_rank_neither_recomputes_nor_duplicates(tmp_path, write_jsonl):
    src = write_jsonl("in.jsonl", records(12))
    out = tmp_path / "out.jsonl"
    calls = []

    def fn(rec):
        calls.append(rec["id"])
        return {**rec, "done": True}

    run_stage(fn, src, out, required=("id",), world=(0, 2), progress=False)
    assert not out.exists()  # rank 1 has not run: nothing merged yet
    mine1 = [r["id"] for r in load(src) if owner(r["id"], 2) == 1]
    # rank 1 dies after two records; relaunched, it does only the rest, and the merge happens
    shard1 = shard_path(out, 1, 2)
    shard1.write_text("".join(json.dumps({"id": i, "done": True}) + "\n" for i in mine1[:2]))
    calls.clear()
    run_stage(fn, src, out, required=("id",), world=(1, 2), progress=False)
    assert calls == mine1[2:]
    assert finished_ids(out) == [f"r{i}" for i in range(12)]  # input order, each once
    assert merge_shards(src, out, 2)  # idempotent


def test_torchrun_attribution_equals_single_process(tmp_path, write_jsonl, tiny_model_dir):
    src = write_jsonl("in.jsonl", records(6))
    single, multi = tmp_path / "single.jsonl", tmp_path / "multi.jsonl"
    args = ["attribute", str(src), "--model", str(tiny_model_dir), "--steps", "3", "--method", "gausslegendre"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "segkit", *args, "--out", str(single)], check=True, env=env,
                   capture_output=True)
    proc = subprocess.run([*TORCHRUN, "-m", "segkit", *args, "--out", str(multi)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {0, 1} <= {owner(f"r{i}", 2) for i in range(6)}  # both ranks had work
    assert shard_path(multi, 0, 2).exists() and shard_path(multi, 1, 2).exists()
    a, b = strip(load(single)), strip(load(multi))
    assert [r["id"] for r in b] == [r["id"] for r in a]
    assert all(close(ra, rb) for ra, rb in zip(a, b))


def close(x, y, tol=1e-5):
    """Equal records, floats to a relative tolerance (two processes may sum in another order)."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(close(u, v) for u, v in zip(x, y))
    if isinstance(x, float):
        return abs(x - y) <= tol * max(abs(x), abs(y)) + 1e-8
    return x == y


def test_torchrun_training_saves_a_model_that_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from segkit.synth import SynthConfig, run_synth

    data, out = tmp_path / "train.jsonl", tmp_path / "model"
    run_synth(SynthConfig(out=str(data), n=24, seed=3))
    cmd = [*TORCHRUN, "-m", "segkit", "train", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4",
           "--mode", "full"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["n_examples"] == 24
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.get_input_embeddings().num_embeddings >= len(tok)


@pytest.mark.slow
def test_torchrun_evaluate_equals_single_process(tmp_path, write_jsonl, tiny_model_dir):
    """Each rank generates for its share of problems; the merged records equal one process's, each problem once."""
    bench = write_jsonl("bench.jsonl", [{"id": str(i), "problem": f"What is {i} + {i}?", "answer": str(2 * i)}
                                        for i in range(7)])
    single, multi = tmp_path / "single.jsonl", tmp_path / "multi.jsonl"
    # batch size 1: a problem's greedy tokens cannot depend on which others share its batch (padding)
    args = ["evaluate", "--model", str(tiny_model_dir), "--data", str(bench), "--max-new-tokens", "5",
            "--batch-size", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "segkit", *args, "--out", str(single)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([*TORCHRUN, "-m", "segkit", *args, "--out", str(multi)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {owner(f"bench/{i}", 2) for i in range(7)} == {0, 1}  # both ranks had work
    a, b = load(single), load(multi)
    assert [r["id"] for r in b] == [f"bench/{i}" for i in range(7)]  # input order, each problem once
    assert b == a
    assert json.loads(multi.with_suffix(".summary.json").read_text())["datasets"]["bench"]["n_problems"] == 7
    # a relaunch finds every problem done: nothing generated, nothing appended
    proc = subprocess.run([*TORCHRUN, "-m", "segkit", *args, "--out", str(multi)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and load(multi) == a, proc.stderr[-3000:]


def test_overwrite_that_dies_before_the_merge_is_never_resumed_into_a_mixed_file(tmp_path, write_jsonl,
                                                                                 monkeypatch):
    """Two ranks --overwrite OUT (old options A) with options B; rank 1 dies, so nothing is merged. OUT and its
    options file still say A: a resume with B is refused (OUT holds A records), and so is one with A (the shards
    hold B records); OUT is left as it was. --overwrite again replaces it with B records only."""
    from segkit.outputs import OutputError, options_path

    src = write_jsonl("in.jsonl", records(8))
    out = tmp_path / "out.jsonl"

    def made_with(v, die_at=None):  # a rank killed at die_at
        return tagged("by", v, fail_at=die_at)

    monkeypatch.setenv("SEGKIT_RUN_ID", "launch-1")
    for rank in (0, 1):
        run_stage(made_with("A"), src, out, required=("id",), world=(rank, 2), progress=False, options={"m": "A"})
    assert {r["by"] for r in load(out)} == {"A"}
    old, old_options = out.read_bytes(), options_path(out).read_bytes()
    mine1 = [r["id"] for r in load(src) if owner(r["id"], 2) == 1]
    monkeypatch.setenv("SEGKIT_RUN_ID", "launch-2")
    run_stage(made_with("B"), src, out, required=("id",), world=(0, 2), progress=False, overwrite=True,
              options={"m": "B"})
    with pytest.raises(ValueError, match="fails"):  # rank 1 dies before the merge
        run_stage(made_with("B", die_at=mine1[1]), src, out, required=("id",), world=(1, 2), progress=False,
                  overwrite=True, options={"m": "B"})
    assert out.read_bytes() == old and options_path(out).read_bytes() == old_options
    monkeypatch.setenv("SEGKIT_RUN_ID", "launch-3")
    for v in ("B", "A"):  # the resume, with either setting
        with pytest.raises(OutputError, match="other options"):
            run_stage(made_with(v), src, out, required=("id",), world=(1, 2), progress=False, options={"m": v})
        assert out.read_bytes() == old and options_path(out).read_bytes() == old_options
    for rank in (0, 1):
        run_stage(made_with("B"), src, out, required=("id",), world=(rank, 2), progress=False, overwrite=True,
                  options={"m": "B"})
    assert [(r["id"], r["by"]) for r in load(out)] == [(f"r{i}", "B") for i in range(8)]
    assert json.loads(options_path(out).read_text())["m"] == "B"
