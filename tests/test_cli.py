"""The command line over JSON Lines: stages chained, bad input named by file and line, resume without duplicates."""
import json

import pytest

from segkit.cli import main
from segkit.records import finished_ids, load

from conftest import SHORT

OTHER = {"id": "s2", "question": "What is 10 - 3?", "solution": "10 - 3 = 7.\n\nBut wait, check: 7 + 3 = 10.",
         "answer": "7"}


def run(*argv):
    return main([str(a) for a in argv])


def test_segment_attribute_select_chain(tmp_path, write_jsonl, tiny_model_dir, capsys):
    src = write_jsonl("in.jsonl", [SHORT, {**OTHER, "extra": {"kept": True}}])
    seg, att, sel = tmp_path / "seg.jsonl", tmp_path / "att.jsonl", tmp_path / "sel.jsonl"
    assert run("segment", src, "--out", seg) == 0
    assert run("attribute", seg, "--out", att, "--model", tiny_model_dir, "--steps", 6) == 0
    assert run("select", att, "--out", sel, "--tau", 0.9, "--beta", 1.0) == 0
    recs = load(sel)
    assert [r["id"] for r in recs] == ["s1", "s2"]
    assert recs[1]["extra"] == {"kept": True}  # unknown fields pass through
    for r in recs:
        assert "".join(r["segments"]) == r["solution"]
        assert r["selected_spans_ids"] and r["selected_spans_ids"] == sorted(r["selected_spans_ids"])
        # the default adaptive scheme starts from --steps points (2 intervals of 3) and refines to error 0.05
        assert r["ig_steps"] >= 6 and r["target_error_met"] == (r["completeness_error"] <= 0.05)
    assert "2 traces" in capsys.readouterr().out


@pytest.mark.parametrize("bad,stage,message", [
    ('{"question": "q", "solution": "s", "answer": "1"', "segment", "not JSON"),
    ('[1, 2]', "segment", "expected a JSON object"),
    ({"question": "q", "answer": "1"}, "segment", "missing field 'solution'"),
    ({"question": "q", "solution": "   ", "answer": "1"}, "segment", "empty solution"),
    ({**SHORT, "id": "bad", "segments": ["x"], "answer": ""}, "attribute", "yields no tokens"),
    ({**SHORT, "id": "bad", "answer": "7"}, "attribute", "missing field 'segments'"),
    ({**SHORT, "id": "bad", "segments": ["word " * 600]}, "attribute", "longer than the model's context of 512"),
])
def test_bad_input_is_named_and_earlier_results_stay(bad, stage, message, tmp_path, write_jsonl, tiny_model_dir,
                                                      capsys):
    good = {**OTHER, "segments": ["10 - 3 = 7."]}
    src = write_jsonl("in.jsonl", [good, bad, {**good, "id": "after"}])
    out = tmp_path / "out.jsonl"
    extra = ["--model", tiny_model_dir, "--steps", 2] if stage == "attribute" else []
    assert run(stage, src, "--out", out, *extra) == 2
    err = capsys.readouterr().err
    assert f"{src}:2:" in err and message in err
    assert finished_ids(out) == ["s2"]  # the record before the bad one is written, nothing lost
    # --on-error skip reports the bad line and goes on; the rerun resumes (s2 is not recomputed)
    assert run(stage, src, "--out", out, "--on-error", "skip", *extra) == 0
    assert finished_ids(out) == ["s2", "after"]


def test_attribute_resumes_after_interruption(tmp_path, write_jsonl, tiny_model_dir):
    segs = [{**r, "segments": [r["solution"]]} for r in (SHORT, OTHER, {**OTHER, "id": "s3"})]
    src = write_jsonl("in.jsonl", segs)
    out = tmp_path / "out.jsonl"
    assert run("attribute", src, "--out", out, "--model", tiny_model_dir, "--steps", 2) == 0
    lines = out.read_text().splitlines(keepends=True)
    # interrupted while writing the second record: one whole line, then a torn one
    out.write_text(lines[0] + lines[1][:40])
    assert run("attribute", src, "--out", out, "--model", tiny_model_dir, "--steps", 2) == 0
    again = out.read_text().splitlines(keepends=True)
    assert again[0] == lines[0]  # the finished record is not recomputed (its timing field is unchanged)
    assert [json.loads(x)["id"] for x in again] == ["s1", "s2", "s3"]


def test_hub_id_offline_fails_clearly(monkeypatch):
    from segkit.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="Hub is unreachable"):
        load_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        load_model("missing/model.gguf")


@pytest.mark.slow
def test_real_pretrained_lm_through_the_stages(tmp_path, write_jsonl):
    """SmolLM2-135M-Instruct (the offline GGUF) through segment, attribute and select."""
    src = write_jsonl("in.jsonl", [SHORT])
    seg, att, sel = tmp_path / "seg.jsonl", tmp_path / "att.jsonl", tmp_path / "sel.jsonl"
    assert run("segment", src, "--out", seg) == 0
    assert run("attribute", seg, "--out", att, "--model", "smollm2-135m-instruct", "--steps", 4,
               "--method", "gausslegendre", "--baseline", "pad-trace") == 0
    assert run("select", att, "--out", sel) == 0
    (r,) = load(sel)
    assert len(r["strength"]) == len(r["segments"]) == 3
    assert r["f_input"] > r["f_baseline"]  # the real model is more confident in "7" given the trace
    assert r["f_input"] > -5  # and fairly confident in absolute terms
    assert all(isinstance(i, int) for i in r["selected_spans_ids"])
