"""Bad inputs and arguments as a new user makes them (issue 13), through the command line.

Every case checks the exit code, the one-line message (``file:line`` where there is one) and that the input and
any earlier output are byte-identical afterwards. Cheap stages run as a real process (``python -m segkit``);
stages that load a model run through ``cli.main`` in this process, on the tiny Llama of conftest.py.
"""
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from segkit.cli import main
from segkit.records import OutputError, check_output, finished_ids, load, merge_shards, owner, run_stage, shard_path

from conftest import SHORT, tagged

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MISSING_MODEL = "no/such/model.gguf"  # a stage that loads its model before checking would fail on this instead


def segkit(*argv, timeout=120):
    """Run ``python -m segkit ARGV``; returns (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "segkit", *map(str, argv)], capture_output=True, text=True, env=ENV,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def in_process(capsys, *argv):
    """``cli.main(ARGV)`` here; returns (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line(err: str, command: str) -> str:
    """The single ``segkit COMMAND: ...`` line of stderr (progress bars and log lines aside); no traceback."""
    assert "Traceback" not in err, err[-2000:]
    lines = [x.strip("\r") for x in err.splitlines() if x.lstrip("\r").startswith(f"segkit {command}: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def snapshot(*paths):
    """Bytes of every file (files of a folder, recursively), to compare before and after."""
    out = {}
    for p in map(Path, paths):
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else []):
            out[str(f)] = f.read_bytes()
        out[f"{p} exists"] = p.exists()
    return out


def with_segments(rec, segments=None):
    segments = segments or [rec["solution"]]
    return {**rec, "solution": "".join(segments), "segments": segments}


ATTRIBUTED = {**with_segments(SHORT, ["3 + 4 = 7.", "\n\nWait, 4 + 3 = 7 too."]),
              "attributions": [[0.5, -0.25, 0.25], [0.2, 0.1]], "strength": [0.6, 0.4], "consistency": [0.5, 0.9]}


@pytest.fixture
def traces(write_jsonl):
    return write_jsonl("traces.jsonl", [SHORT, {**SHORT, "id": "s2"}])


@pytest.fixture
def earlier_out(tmp_path):
    """An OUT left by an earlier run, which a failed run must leave as it was."""
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({**SHORT, "id": "earlier"}) + "\n")
    return out


# --- outputs are written safely ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["segment", "select"])
def test_out_that_is_the_input_is_refused_and_the_input_stays(stage, tmp_path, write_jsonl):
    src = write_jsonl("same.jsonl", [ATTRIBUTED, {**ATTRIBUTED, "id": "s2"}])
    before = snapshot(src)
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "same.jsonl"):  # the same file by any path
        rc, _, err = segkit(stage, src, "--out", out)
        assert rc == 2 and f"{out}: is the input {src}" in one_line(err, stage)
        assert snapshot(src) == before


def test_attribute_overwrite_onto_its_input_is_refused_before_the_model_loads(capsys, write_jsonl):
    src = write_jsonl("same.jsonl", [with_segments(SHORT)])
    before = snapshot(src)
    rc, _, err = in_process(capsys, "attribute", src, "--out", src, "--overwrite", "--model", MISSING_MODEL)
    assert rc == 2 and f"{src}: is the input" in one_line(err, "attribute")
    assert snapshot(src) == before


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_device_as_out_is_refused_and_left_alone(device, traces):
    before = snapshot(traces)
    rc, _, err = segkit("segment", traces, "--out", device)
    assert rc == 2 and f"{device}: is not a regular file" in one_line(err, "segment")
    assert stat.S_ISCHR(os.stat(device).st_mode)  # still the device node, not a file written in its place
    assert snapshot(traces) == before


def test_any_rewrite_refuses_a_device():
    """Stages that write through records.dump/atomic_write (synth, the pipeline) never replace a device either."""
    rc, _, err = segkit("synth", "--out", "/dev/null", "--n", 2)
    assert rc == 2 and "/dev/null: is not a regular file" in one_line(err, "synth")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_folder_as_out_is_refused(traces, tmp_path):
    rc, _, err = segkit("segment", traces, "--out", tmp_path)
    assert rc == 2 and f"{tmp_path}: is a folder" in one_line(err, "segment")


def test_check_output_rules(tmp_path):
    src, folder = tmp_path / "in.jsonl", tmp_path / "model"
    src.write_text("{}\n")
    folder.mkdir()
    assert check_output(tmp_path / "new.jsonl", src) == tmp_path / "new.jsonl"
    assert check_output(folder / "run2", src, folder=False)  # a new file path inside a folder that is not read
    for bad, reads, is_folder in [(src, [src], False), (folder, [folder], True), (folder / "sub", [folder], True),
                                  (tmp_path, [folder], True), (src, [], True)]:
        with pytest.raises(OutputError):
            check_output(bad, *reads, folder=is_folder)


def test_interrupted_or_failed_rewrite_leaves_the_old_out(write_jsonl, earlier_out):
    src = write_jsonl("in.jsonl", [SHORT, {**SHORT, "id": "s2"}, {**SHORT, "id": "s3"}])
    before = snapshot(earlier_out)

    def fn(rec):
        if rec["id"] == "s2":
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second record
        return rec

    with pytest.raises(KeyboardInterrupt):
        run_stage(fn, src, earlier_out, required=(), overwrite=True, progress=False)
    assert snapshot(earlier_out) == before
    assert [p.name for p in earlier_out.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left
    run_stage(lambda r: r, src, earlier_out, required=(), overwrite=True, progress=False)
    assert finished_ids(earlier_out) == ["s1", "s2", "s3"]


def test_evaluate_onto_its_benchmark_is_refused(capsys, write_jsonl, tiny_model_dir):
    bench = write_jsonl("bench.jsonl", [{"id": "p1", "question": "What is 3 + 4?", "answer": "7"}])
    before = snapshot(bench)
    rc, _, err = in_process(capsys, "evaluate", "--model", tiny_model_dir, "--data", bench, "--out", bench,
                            "--max-new-tokens", 2)
    assert rc == 2 and f"{bench}: is the input" in one_line(err, "evaluate")
    assert snapshot(bench) == before


def test_train_into_its_init_model_folder_is_refused(capsys, tmp_path, write_jsonl, tiny_model_dir):
    init = tmp_path / "init"
    shutil.copytree(tiny_model_dir, init)  # a copy: the session's model must survive a failure of this test
    data = write_jsonl("train.jsonl", [SHORT])
    before = snapshot(init, data)
    rc, _, err = in_process(capsys, "train", data, "--init", init, "--out", init, "--epochs", 0.01)
    assert rc == 2 and str(init) in one_line(err, "train")
    assert snapshot(init, data) == before


def test_report_onto_its_notebooks_is_refused(capsys, tmp_path):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(Path(__file__).parents[1] / "notebooks", notebooks)
    before = snapshot(notebooks)
    rc, _, err = in_process(capsys, "report", "--params", notebooks / "params" / "default.yaml", "--notebooks",
                            notebooks, "--out", notebooks, "--workdir", tmp_path / "runs")
    assert rc == 2 and str(notebooks) in one_line(err, "report")
    assert snapshot(notebooks) == before


# --- ids are unique ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("records,message", [
    ([{**SHORT, "id": "d1"}, {**SHORT, "id": "d1", "solution": "other"}], ":2: duplicate id 'd1' (first at line 1)"),
    ([{**SHORT, "id": 7}, {**SHORT, "id": "7"}], ":2: duplicate id '7' (first at line 1)"),  # alike as strings
    ([SHORT, {k: v for k, v in SHORT.items() if k != "id"}, {**SHORT, "id": "2"}],  # line 2 gets id "2"
     ":3: duplicate id '2' (first at line 2)"),
    ([{**SHORT, "id": None}], ":1: field 'id': expected a non-empty string or integer, got null"),
])
def test_duplicate_ids_stop_the_run_naming_both_lines(records, message, write_jsonl, earlier_out):
    src = write_jsonl("in.jsonl", records)
    before = snapshot(src, earlier_out)
    rc, _, err = segkit("segment", src, "--out", earlier_out)
    assert rc == 2 and f"{src}{message}" in one_line(err, "segment")
    assert snapshot(src, earlier_out) == before


def test_unique_ids_suffix_renames_repeats(write_jsonl, tmp_path):
    src = write_jsonl("in.jsonl", [{**SHORT, "id": "d1"}, {**SHORT, "id": "d1", "answer": "8"}, {**SHORT, "id": "d1#2"},
                                   {k: v for k, v in SHORT.items() if k != "id"}, {**SHORT, "id": 4}])
    out = tmp_path / "out.jsonl"
    rc, _, err = segkit("segment", src, "--out", out, "--unique-ids", "suffix")
    assert rc == 0, err
    assert [r["id"] for r in load(out)] == ["d1", "d1#2", "d1#2#2", "4", "4#2"]


def test_resume_with_duplicated_and_missing_ids_loses_nothing(write_jsonl, tmp_path):
    """The issue's case: two records 'd1', OUT already holding the first; the rerun must do the second."""
    recs = [{**SHORT, "id": "d1", "answer": "1"}, {**SHORT, "id": "d1", "answer": "2"},
            {k: v for k, v in SHORT.items() if k != "id"}, {**SHORT, "id": "3", "answer": "4"}]
    src, out = write_jsonl("in.jsonl", recs), tmp_path / "out.jsonl"
    calls = []

    def fn(rec):
        calls.append(rec["id"])
        return {**rec, "done": True}

    with pytest.raises(Exception, match=r"in.jsonl:2: duplicate id 'd1' \(first at line 1\)"):
        run_stage(fn, src, out, progress=False)
    assert finished_ids(out) == ["d1"]  # the record before the duplicate is kept
    calls.clear()
    res = run_stage(fn, src, out, progress=False, dedupe_ids="suffix")
    assert calls == ["d1#2", "3", "3#2"] and res.resumed == 1
    assert [(r["id"], r["answer"]) for r in load(out)] == [("d1", "1"), ("d1#2", "2"), ("3", "7"), ("3#2", "4")]


def test_two_process_merge_with_duplicated_and_missing_ids(write_jsonl, tmp_path):
    recs = [{**SHORT, "id": f"r{i % 5}", "answer": str(i)} for i in range(10)]  # every id twice
    recs += [{k: v for k, v in SHORT.items() if k != "id"} for _ in range(4)]  # ids from line numbers 11..14
    src, out = write_jsonl("in.jsonl", recs), tmp_path / "out.jsonl"
    expected = [f"r{i}" for i in range(5)] + [f"r{i}#2" for i in range(5)] + ["11", "12", "13", "14"]
    assert {owner(i, 2) for i in expected} == {0, 1}  # both ranks have work

    def fn(rec):
        return {**rec, "done": True}

    with pytest.raises(Exception, match="duplicate id 'r0'"):
        run_stage(fn, src, out, world=(0, 2), progress=False)
    run_stage(fn, src, out, world=(0, 2), progress=False, dedupe_ids="suffix")
    assert not out.exists()  # rank 1 has not run
    run_stage(fn, src, out, world=(1, 2), progress=False, dedupe_ids="suffix")
    merged = load(out)
    assert [r["id"] for r in merged] == expected  # input order, every record once
    assert [r["answer"] for r in merged[:10]] == [str(i) for i in range(10)]  # r0 (answer 0) ... r0#2 (answer 5)
    assert merge_shards(src, out, 2, dedupe_ids="suffix")  # idempotent


def test_overwrite_under_two_ranks_never_mixes_old_and_new(write_jsonl, tmp_path, monkeypatch):
    """Issue 12: each rank empties only its own shard and marker; OUT is replaced by the merge of this launch."""
    src, out = write_jsonl("in.jsonl", [{**SHORT, "id": f"r{i}"} for i in range(8)]), tmp_path / "out.jsonl"

    def version(v, skip=None):
        return tagged("version", v, fail_at=skip)

    monkeypatch.setenv("SEGKIT_RUN_ID", "launch-1")
    for rank in (0, 1):
        run_stage(version(1, skip="r3"), src, out, world=(rank, 2), progress=False, on_error="skip")
    assert [r["version"] for r in load(out)] == [1] * 7  # r3 skipped
    old = snapshot(out)
    monkeypatch.setenv("SEGKIT_RUN_ID", "launch-2")
    run_stage(version(2), src, out, world=(0, 2), progress=False, overwrite=True)
    assert snapshot(out) == old  # rank 1's shard and marker are from launch 1: no merge yet, OUT untouched
    run_stage(version(2), src, out, world=(1, 2), progress=False, overwrite=True)
    assert [(r["id"], r["version"]) for r in load(out)] == [(f"r{i}", 2) for i in range(8)]  # r3 is back
    for rank in (0, 1):
        marker = json.loads(Path(f"{shard_path(out, rank, 2)}.skipped").read_text())
        assert marker == {"launch": "launch-2", "skipped": []}


# --- fields are typed --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,message", [  # the three cases
    ({"answer": None}, "field 'answer': expected a non-empty string or number, got null"),
    ({"segments": SHORT["solution"]}, "field 'segments': expected a list of strings, got a string"),
    ({"segments": [1, 2]}, "field 'segments': expected a list of strings, got a list whose item 0 is a number"),
])
def test_attribute_checks_field_types_and_skip_skips_them(bad, message, capsys, write_jsonl, tmp_path,
                                                          tiny_model_dir):
    good = with_segments(SHORT)
    src = write_jsonl("in.jsonl", [{**good, **bad, "id": "bad"}, {**good, "id": "after"}])
    out = tmp_path / "out.jsonl"
    args = ["attribute", src, "--out", out, "--model", tiny_model_dir, "--steps", 2]
    rc, _, err = in_process(capsys, *args)
    assert rc == 2 and f"{src}:1: {message}" in one_line(err, "attribute")
    assert finished_ids(out) == []
    assert in_process(capsys, *args, "--on-error", "skip")[0] == 0
    assert finished_ids(out) == ["after"]


@pytest.mark.parametrize("fields,message", [
    ({"answer": True}, "field 'answer': expected a non-empty string or number, got true"),
    ({"answer": 7}, None), ({"answer": 2.5}, None), ({"answer": float("inf")}, "got a number"),
    ({"answer": " "}, "field 'answer': expected a non-empty string or number, got a string"),
    ({"question": ""}, "field 'question': expected a non-empty string, got a string"),
    ({"segments": ["3 + 4 = 7."]}, "field 'segments': expected a list of strings, got segments that do not join"),
    ({"attributions": [[0.1], [0.2, "x"]]}, "field 'attributions': expected a list of lists of numbers, one per "
                                            "segment, got a list whose item 1 is not a list of numbers"),
    ({"attributions": [[0.1], [0.2, 0.3], [0.0]]}, "got 3 entries for 2 segments"),
    ({"selected_spans_ids": [0, 2]}, "field 'selected_spans_ids': expected a list of segment indices, got "
                                     "indices outside 0..1"),
    ({"selected_spans_ids": [True]}, "got a list whose item 0 is true"),
])
def test_field_types(fields, message):
    from segkit.records import RecordError, require

    rec = {**ATTRIBUTED, "attributions": [[0.1], [0.2, 0.3]], "selected_spans_ids": [1], **fields}
    if message is None:
        require(rec, list(fields), "f.jsonl", 3)
        return
    with pytest.raises(RecordError) as e:
        require(rec, list(fields), "f.jsonl", 3)
    assert str(e.value).startswith("f.jsonl:3: field ") and message in str(e.value)


def test_skip_skips_any_exception_but_not_an_interrupt(write_jsonl, tmp_path):
    src, out = write_jsonl("in.jsonl", [SHORT, {**SHORT, "id": "s2"}]), tmp_path / "out.jsonl"

    def fn(rec):
        if rec["id"] == "s1":
            return {**rec, "x": 1 / 0}
        return rec

    res = run_stage(fn, src, out, on_error="skip", progress=False)
    assert res.skipped_ids == ["s1"] and "in.jsonl:1: ZeroDivisionError: division by zero" in res.skipped[0]
    with pytest.raises(Exception, match="in.jsonl:1: ZeroDivisionError"):
        run_stage(fn, src, tmp_path / "out2.jsonl", progress=False)


@pytest.mark.parametrize("record,message", [
    (with_segments(SHORT), "missing field 'attributions' (run `segkit attribute` first)"),
    ({**ATTRIBUTED, "attributions": [[0.5, float("nan")], [0.1]]},
     "not strict JSON: the number NaN is not finite (JSON has no NaN or Infinity)"),
    ({**ATTRIBUTED, "attributions": [[0.5]]},
     "field 'attributions': expected a list of lists of numbers, one per segment, got 1 entries for 2 segments"),
])
def test_select_names_what_is_missing_or_mistyped(record, message, write_jsonl, earlier_out):
    src = write_jsonl("in.jsonl", [record])
    before = snapshot(src, earlier_out)
    rc, _, err = segkit("select", src, "--out", earlier_out)
    assert rc == 2 and f"{src}:1: {message}" in one_line(err, "select")
    assert snapshot(src, earlier_out) == before


# --- text as users have it ---------------------------------------------------------------------------------------

def test_select_computes_strength_and_consistency_from_the_attributions(write_jsonl, tmp_path):
    """Issue 12: one definition. What attribute stored is not trusted: select recomputes it with segkit.score."""
    src = write_jsonl("in.jsonl", [{**ATTRIBUTED, "strength": [0.0, 1.0], "consistency": [1.0, 1.0]}])
    out = tmp_path / "out.jsonl"
    assert segkit("select", src, "--out", out, "--tau", 0.5, "--beta", 0.6)[0] == 0
    (rec,) = load(out)
    # by hand: sum|a| / sqrt(n) = 1 / sqrt(3) and 0.3 / sqrt(2), normalised; |sum a| / sum|a| = 0.5 and 1
    raw = [1 / 3 ** 0.5, 0.3 / 2 ** 0.5]
    assert rec["strength"] == pytest.approx([r / sum(raw) for r in raw]) and rec["consistency"] == [0.5, 1.0]
    assert rec["selected_spans_ids"] == [0]  # the strongest (0.73 >= tau) has consistency 0.5 <= beta


def test_crlf_trace_splits_like_lf(write_jsonl, tmp_path):
    crlf = {**SHORT, "solution": "a=1.\r\n\r\nWait, a=1 indeed.\r\n\r\nAlternatively: 1."}
    src, out = write_jsonl("in.jsonl", [crlf]), tmp_path / "out.jsonl"
    assert segkit("segment", src, "--out", out)[0] == 0
    (rec,) = load(out)
    assert rec["segments"] == ["a=1.", "\r\n\r\nWait, a=1 indeed.", "\r\n\r\nAlternatively: 1."]


def test_bom_at_file_start_is_read(tmp_path):
    src, out = tmp_path / "bom.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(SHORT).encode() + b"\r\n" + json.dumps({**SHORT, "id": "s2"}).encode())
    rc, _, err = segkit("segment", src, "--out", out)
    assert rc == 0, err
    assert finished_ids(out) == ["s1", "s2"]


def test_non_utf8_line_is_named_and_skippable(tmp_path, earlier_out):
    src = tmp_path / "latin1.jsonl"
    lines = [json.dumps(SHORT).encode(), json.dumps({**SHORT, "id": "s2", "solution": "café"}).encode("utf-8")
             .replace("caf\\u00e9".encode(), "caf\xe9".encode("latin-1")), json.dumps({**SHORT, "id": "s3"}).encode()]
    src.write_bytes(b"\n".join(lines) + b"\n")
    before = snapshot(src, earlier_out)
    rc, _, err = segkit("segment", src, "--out", earlier_out)
    assert rc == 2 and f"{src}:2: not UTF-8 (byte 0xe9" in one_line(err, "segment")
    assert snapshot(src, earlier_out) == before
    rc, _, err = segkit("segment", src, "--out", earlier_out, "--on-error", "skip")
    assert rc == 0 and finished_ids(earlier_out) == ["s1", "s3"]  # the good lines before and after


# --- arguments are checked before any work -----------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--tau", "-0.5"], "tau must be in (0, 1], got -0.5"), (["--tau", "nan"], "tau must be in (0, 1], got nan"),
    (["--tau", "0"], "tau must be in (0, 1]"), (["--beta", "2"], "beta must be in [0, 1], got 2.0"),
])
def test_select_ranges(args, message, write_jsonl, earlier_out):
    src = write_jsonl("in.jsonl", [ATTRIBUTED])
    before = snapshot(src, earlier_out)
    t0 = time.perf_counter()
    rc, _, err = segkit("select", src, "--out", earlier_out, *args)
    assert rc == 2 and message in one_line(err, "select")
    assert time.perf_counter() - t0 < 5  # generous: no heavy library is loaded to say so
    assert snapshot(src, earlier_out) == before


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "steps"), (["--steps", "20", "--max-steps", "10"], "max_steps"),
    (["--device", "cuda"], "CUDA"), (["--device", "mps"], "MPS is not available"),
])
def test_attribute_arguments_fail_before_the_model_loads(args, message, capsys, write_jsonl, tmp_path):
    src, out = write_jsonl("in.jsonl", [with_segments(SHORT)]), tmp_path / "out.jsonl"
    rc, _, err = in_process(capsys, "attribute", src, "--out", out, "--model", MISSING_MODEL, *args)
    assert rc == 2 and message in one_line(err, "attribute") and "GGUF" not in err
    assert not out.exists()  # no empty OUT left behind


def test_attribute_missing_input_says_so_before_the_model_loads(capsys, tmp_path):
    rc, _, err = in_process(capsys, "attribute", tmp_path / "nope.jsonl", "--out", tmp_path / "o.jsonl",
                            "--model", MISSING_MODEL)
    assert rc == 2 and f"{tmp_path / 'nope.jsonl'}: no such file" in one_line(err, "attribute")


def test_folder_that_is_not_a_model_says_what_it_lacks(capsys, write_jsonl, tmp_path):
    src, empty = write_jsonl("in.jsonl", [with_segments(SHORT)]), tmp_path / "not_a_model"
    empty.mkdir()
    rc, _, err = in_process(capsys, "attribute", src, "--out", tmp_path / "o.jsonl", "--model", empty)
    assert rc == 2 and f"{empty}: not a model folder: no config.json" in one_line(err, "attribute")


def test_synth_n_zero(tmp_path):
    rc, _, err = segkit("synth", "--out", tmp_path / "s.jsonl", "--n", 0)
    assert rc == 2 and "n must be at least 1, got 0" in one_line(err, "synth")
    assert not (tmp_path / "s.jsonl").exists()


# --- interrupts and start-up -------------------------------------------------------------------------------------

def test_ctrl_c_is_one_line_exit_130_and_the_rerun_resumes(capsys, write_jsonl, tmp_path, tiny_model_dir):
    """A real SIGINT to this process while ``segkit attribute`` runs in it (as Ctrl-C in a terminal sends)."""
    recs = [{**with_segments(SHORT), "id": f"r{i}"} for i in range(12)]
    src, out = write_jsonl("in.jsonl", recs), tmp_path / "out.jsonl"
    args = ["attribute", src, "--out", out, "--model", tiny_model_dir, "--steps", 6, "--method", "gausslegendre"]
    running = threading.Event()

    def on_sigint(signum, frame):  # Python's own handler, but only while the command runs (never hits pytest)
        if running.is_set():
            raise KeyboardInterrupt

    def press_ctrl_c():
        deadline = time.time() + 120
        while time.time() < deadline and running.is_set() and not (out.exists() and finished_ids(out)):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        running.set()
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        rc = main([str(a) for a in args])
    finally:
        running.clear()
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    n = len(finished_ids(out))
    assert rc == 130 and 1 <= n < 12
    assert one_line(err, "attribute") == (f"segkit attribute: interrupted after {n} record{'s' * (n != 1)}; rerun "
                                          f"the same command to resume")
    assert all(json.loads(x)["id"] for x in out.read_text().splitlines())  # every line a whole record
    done = out.read_text()
    assert in_process(capsys, *args)[0] == 0
    assert finished_ids(out) == [f"r{i}" for i in range(12)] and out.read_text().startswith(done)


def test_help_is_fast_and_loads_no_stage():
    t0 = time.perf_counter()
    rc, out, _ = segkit("--help")
    assert rc == 0 and "segment" in out and "attribute" in out
    assert time.perf_counter() - t0 < 2.5  # under 1 s on an idle core, interpreter start included
    probe = ("import sys, segkit.cli as c; c.build_parser(); "
             "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'pandas', 'segkit.attribute') "
             "if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_build_parser_fails_loudly_on_a_broken_stage(monkeypatch):
    from segkit import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", ("segkit.no_such_module", "Config", "run", "a stage"))
    with pytest.raises(ImportError):
        cli.build_parser("broken")


def test_a_last_record_without_its_newline_is_cut_not_glued(tmp_path):
    """A final line that parses but lost its newline (a write cut short) is dropped: appending after it would glue
    two records onto one line."""
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\n{"id": "b"}')
    assert finished_ids(out) == ["a"] and out.read_text().endswith('"b"}')  # a reader cuts nothing: it may be
    assert finished_ids(out, cut=True) == ["a"]                              # another process's line in progress
    assert out.read_text() == '{"id": "a"}\n'


def test_a_resume_with_other_options_is_refused(tmp_path):
    """Records made with one set of options are not silently extended by a run with others (another model, other
    IG settings): OUT.options.json says what made OUT, and a mismatch is a one-line error; --overwrite starts over."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "question": "q", "solution": "s", "answer": "1"}) + "\n"
                           for i in range(3)))
    out = tmp_path / "out.jsonl"
    run_stage(lambda r: r, src, out, progress=False, options={"model": "A", "steps": 15})
    before = out.read_bytes()
    with pytest.raises(OutputError, match=r"other options \(model\)"):
        run_stage(lambda r: r, src, out, progress=False, options={"model": "B", "steps": 15})
    assert out.read_bytes() == before
    assert run_stage(lambda r: r, src, out, progress=False, options={"model": "A", "steps": 15}).resumed == 3
    run_stage(lambda r: {**r, "by": "B"}, src, out, progress=False, overwrite=True, options={"model": "B", "steps": 15})
    assert all(r["by"] == "B" for r in load(out))
    assert run_stage(lambda r: r, src, out, progress=False, options={"model": "B", "steps": 15}).resumed == 3


# --- issue 19: no stage adopts a file it did not write ----------------------------------------------------------

def test_appending_stages_refuse_files_they_did_not_write(capsys, tmp_path, write_jsonl, tiny_model_dir):
    """A user's one-line file, notes, an unrelated JSON Lines file and another stage's output sharing the input's
    ids: each is refused in one line and left byte-identical (no 'interrupted run' cut, nothing appended)."""
    src = write_jsonl("seg.jsonl", [with_segments(SHORT), {**with_segments(SHORT), "id": "s2"}])
    bench = write_jsonl("bench.jsonl", [{"id": "p1", "problem": "What is 3 + 4?", "answer": "7"}])
    (tmp_path / "results.json").write_text("my results, one line")
    (tmp_path / "notes.txt").write_text("notes\nmore notes\n")
    write_jsonl("other.jsonl", [{"id": "x", "text": "mine"}])
    assert segkit("segment", write_jsonl("raw.jsonl", [SHORT, {**SHORT, "id": "s2"}]), "--out",
                  tmp_path / "segmented.jsonl")[0] == 0  # shares the input's ids
    model = ["--model", tiny_model_dir, "--steps", 2]
    for name in ("results.json", "other.jsonl", "segmented.jsonl"):
        out = tmp_path / name
        before = snapshot(out, src)
        rc, _, err = in_process(capsys, "attribute", src, "--out", out, *model)
        assert rc == 2 and f"{out}: exists and was not written by this stage" in one_line(err, "attribute")
        assert snapshot(out, src) == before
    notes = tmp_path / "notes.txt"
    before = snapshot(notes, bench)
    rc, _, err = in_process(capsys, "evaluate", "--model", tiny_model_dir, "--data", bench, "--out", notes,
                            "--max-new-tokens", 2)
    assert rc == 2 and "not written by this stage" in one_line(err, "evaluate") and snapshot(notes, bench) == before
    assert not (tmp_path / "notes.problems.jsonl").exists()  # nothing written beside it either
    # its own output resumes; another process holding it is refused at once, OUT untouched
    out = tmp_path / "att.jsonl"
    assert in_process(capsys, "attribute", src, "--out", out, *model)[0] == 0
    assert in_process(capsys, "attribute", src, "--out", out, *model)[0] == 0  # resumed: 2 already done
    before = snapshot(out)
    with out.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `segkit attribute` holds it
        rc, _, err = in_process(capsys, "attribute", src, "--out", out, *model)
    assert rc == 2 and f"{out}: another process is writing it now" in one_line(err, "attribute")
    assert snapshot(out) == before


def test_options_are_not_silently_dropped(tmp_path, write_jsonl, earlier_out):
    """A list option given twice adds to the list; any other option given twice, a negative --limit and
    --epochs 0 are refused in one line before any work."""
    src = write_jsonl("in.jsonl", [SHORT])
    out = tmp_path / "seg.jsonl"
    rc, _, err = segkit("segment", src, "--out", out, "--keyword", "\\n\\nWait", "--keyword", "\\n\\nAlternatively")
    assert rc == 0, err
    assert len(load(out)[0]["segments"]) == 3  # both keywords split, not only the last one given
    before = snapshot(src, earlier_out)
    for argv, command, message in [
            (["segment", src, "--out", earlier_out, "--on-error", "skip", "--on-error", "stop"], "segment",
             "--on-error given twice"),
            (["segment", src, "--out", earlier_out, "--unique-ids", "stop", "--unique-ids", "suffix"], "segment",
             "--unique-ids given twice"),
            (["evaluate", "--model", MISSING_MODEL, "--data", src, "--out", earlier_out, "--limit", -1], "evaluate",
             "--limit must be at least 1, or 0 for every problem; got -1"),
            (["train", src, "--out", tmp_path / "model", "--epochs", 0], "train", "--epochs and --lr must be above 0"),
            (["train", src, "--out", tmp_path / "model", "--limit", -1], "train", "--skip and --limit cannot be")]:
        rc, _, err = segkit(*argv)
        assert rc == 2 and message in one_line(err, command)
        assert snapshot(src, earlier_out) == before and not (tmp_path / "model").exists()


def test_a_copied_record_is_not_renamed_into_two(write_jsonl, tmp_path):
    """Two copies of one record (two runs appended to one file): the message says so and --unique-ids suffix,
    which is for distinct records sharing an id, does not keep both."""
    src = write_jsonl("in.jsonl", [SHORT, {**SHORT, "id": "s2"}, SHORT])
    out = tmp_path / "out.jsonl"
    for extra in ([], ["--unique-ids", "suffix"]):
        rc, _, err = segkit("segment", src, "--out", out, *extra)
        assert rc == 2 and f"{src}:3: repeats line 1 exactly (id 's1')" in one_line(err, "segment")
        assert not out.exists()
    src = write_jsonl("in2.jsonl", [SHORT, {**SHORT, "answer": "8"}])
    rc, _, err = segkit("segment", src, "--out", out)
    assert rc == 2 and "for distinct records that share an id; not for copies" in one_line(err, "segment")


def test_a_failed_write_is_one_line_and_keeps_the_finished_model(capsys, tmp_path, write_jsonl, monkeypatch):
    """The disk fills while a retrain saves: one line naming OUT, the old model folder (its train_summary.json
    included) byte-identical, no temporary folder left."""
    import errno

    from segkit.synth import SynthConfig, run_synth
    from transformers import PreTrainedModel

    data, out = tmp_path / "train.jsonl", tmp_path / "model"
    run_synth(SynthConfig(out=str(data), n=8, seed=1))
    args = ["train", data, "--out", out, "--epochs", 1, "--batch-size", 4, "--threads", 1]
    assert in_process(capsys, *args)[0] == 0
    before = snapshot(out, data)

    def disk_full(self, path, *a, **k):
        (Path(path) / "model.safetensors").write_bytes(b"half")  # a write that started, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    rc, _, err = in_process(capsys, *args, "--seed", 1)
    assert rc == 2 and f"{out}: cannot write: No space left on device; free some space" in one_line(err, "train")
    assert snapshot(out, data) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.jsonl"]  # no .partial folder left


def test_strict_json_in_and_out(write_jsonl, tmp_path, earlier_out):
    """A lone surrogate, a number too large for a float and NaN are per-record errors with file:line that
    --on-error skip skips; nothing a stage writes holds NaN or Infinity."""
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps({**SHORT, "id": "a", "question": "q\ud800"}),  # \ud800 escaped by dumps
                              json.dumps({**SHORT, "id": "b"}).replace('"7"', "1e400"),
                              json.dumps({**SHORT, "id": "c"}).replace('"7"', "NaN"),
                              json.dumps({**SHORT, "id": "d"})]) + "\n")
    before = snapshot(src, earlier_out)
    rc, _, err = segkit("segment", src, "--out", earlier_out)
    assert rc == 2 and f"{src}:1: holds a lone UTF-16 surrogate (\\ud800)" in one_line(err, "segment")
    assert snapshot(src, earlier_out) == before
    rc, _, err = segkit("segment", src, "--out", earlier_out, "--on-error", "skip")
    assert rc == 0 and finished_ids(earlier_out) == ["d"]
    assert f"{src}:2: not strict JSON: the number 1e400 is not finite" in err and f"{src}:3: not strict" in err
    out = tmp_path / "computed.jsonl"
    res = run_stage(lambda r: {**r, "x": float("nan") if r["id"] == "d" else 1.0}, earlier_out, out,
                    required=(), on_error="skip", progress=False)
    assert res.skipped_ids == ["d"] and "Out of range float values are not JSON compliant" in res.skipped[0]
    assert out.read_text() == ""


def test_a_choice_over_nothing_is_missing_not_nan(tmp_path):
    """Traces too short to leave the tau/beta rule a segment to decide: the paper's default is kept, the reason
    says the comparison is missing, and the choice file holds null, never NaN."""
    import pandas as pd

    from segkit.analysis import choose_tau_beta_on_signal, save_choice

    nan = float("nan")
    spread = pd.DataFrame([  # the default cell selects every decided segment: no unselected one to compare with
        {"tau": 0.5, "beta": 0.8, "segment_ratio": 0.5, "confidence_gap": 0.2, "ci_low": 0.1, "ci_high": 0.3,
         "vs_default": nan, "vs_default_ci_low": nan, "vs_default_ci_high": nan},
        {"tau": 0.7, "beta": 0.8, "segment_ratio": 1.0, "confidence_gap": nan, "ci_low": nan, "ci_high": nan,
         "vs_default": nan, "vs_default_ci_low": nan, "vs_default_ci_high": nan}])
    choice = choose_tau_beta_on_signal(spread)
    assert (choice["tau"], choice["beta"]) == (0.7, 0.8) and choice["confidence_gap"] is None
    assert "nan" not in choice["reason"].lower() and "is missing (the paper's cell has no confidence gap" in \
        choice["reason"]
    text = save_choice(choice, tmp_path / "choice.json").read_text()
    assert "NaN" not in text and json.loads(text)["vs_default"] is None


def test_vllm_relaunch_finds_only_what_was_installed(tmp_path, monkeypatch, capsys, write_jsonl):
    """A `.venv-vllm` in the current folder is not run; a relaunch that exits 0 having written nothing is an
    error, not a success."""
    import importlib.util

    from segkit import generation

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: nothing to relaunch")
    planted = tmp_path / ".venv-vllm" / "bin" / "segkit"
    planted.parent.mkdir(parents=True)
    planted.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ran'}\n")
    planted.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGKIT_VLLM_SEGKIT", raising=False)
    assert generation.vllm_segkit() != str(planted) and generation.vllm_segkit() != ".venv-vllm/bin/segkit"
    bench = write_jsonl("bench.jsonl", [{"id": "p1", "problem": "What is 3 + 4?", "answer": "7"}])
    silent = tmp_path / "silent-segkit"
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(0o755)
    monkeypatch.setenv("SEGKIT_VLLM_SEGKIT", str(silent))
    out = tmp_path / "eval.jsonl"
    rc, _, err = in_process(capsys, "evaluate", "--model", "m", "--data", bench, "--engine", "vllm", "--out", out)
    assert rc == 2 and f"exited 0 but {out} lacks 1 problem(s) (first: bench/p1)" in one_line(err, "evaluate")
    assert not (tmp_path / "ran").exists()


def test_version_and_a_refused_pickle_are_one_line(capsys, tmp_path, write_jsonl, tiny_model_dir):
    from importlib.metadata import version

    rc, out, _ = segkit("--version")
    assert rc == 0 and out.strip() == f"segkit {version('segkit')}"
    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(  # a pickle that would run os.system on load
        b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.")
    src = write_jsonl("in.jsonl", [with_segments(SHORT)])
    rc, _, err = in_process(capsys, "attribute", src, "--out", tmp_path / "o.jsonl", "--model", model)
    assert rc == 2 and "refused to unpickle" in one_line(err, "attribute")


def test_a_full_disk_while_appending_keeps_the_records_before(write_jsonl, tmp_path, monkeypatch):
    """ENOSPC at the second record's write: one OutputError naming OUT; the first record stays, whole, and the
    rerun resumes after it."""
    import contextlib
    import errno

    from segkit import records

    src, out = write_jsonl("in.jsonl", [SHORT, {**SHORT, "id": "s2"}, {**SHORT, "id": "s3"}]), tmp_path / "out.jsonl"
    real = records.locked_append

    class FullAfterOne:
        def __init__(self, f):
            self.f, self.name, self.n = f, f.name, 0

        def write(self, text):
            self.n += 1
            if self.n > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(text)

        def flush(self):
            self.f.flush()

    @contextlib.contextmanager
    def full_disk(path, before):
        with real(path, before) as f:
            yield FullAfterOne(f)

    monkeypatch.setattr(records, "locked_append", full_disk)
    with pytest.raises(OutputError, match=f"{out}: cannot write: No space left on device; free some space"):
        run_stage(lambda r: r, src, out, required=(), progress=False)
    assert finished_ids(out) == ["s1"]
    monkeypatch.setattr(records, "locked_append", real)
    assert run_stage(lambda r: r, src, out, required=(), progress=False).resumed == 1
    assert finished_ids(out) == ["s1", "s2", "s3"]


@pytest.mark.parametrize("stage", ["segment", "select"])
def test_an_input_without_records_is_refused_not_an_empty_success(stage, tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("\n  \n")
    rc, _, err = segkit(stage, src, "--out", tmp_path / "out.jsonl")
    assert rc == 2 and f"{src}: holds no records" in one_line(err, stage)
    assert not (tmp_path / "out.jsonl").exists()
