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


def with_segments(rec, segments=None):
    segments = segments or [rec["solution"]]
    return {**rec, "solution": "".join(segments), "segments": segments}


@pytest.mark.parametrize("bad,stage,message", [
    ('{"question": "q", "solution": "s", "answer": "1"', "segment", "not JSON"),
    ('[1, 2]', "segment", "expected a JSON object, got a list"),
    ({"question": "q", "answer": "1"}, "segment", "missing field 'solution'"),
    ({"question": "q", "solution": "   ", "answer": "1"}, "segment", "empty solution"),
    ({"question": "q", "solution": ["a"], "answer": "1"}, "segment", "field 'solution': expected a string, got a list"),
    ({**with_segments(SHORT), "id": "bad", "answer": ""}, "attribute",
     "field 'answer': expected a non-empty string or number, got a string"),
    ({**SHORT, "id": "bad", "answer": "7"}, "attribute", "missing field 'segments' (run `segkit segment` first)"),
    ({**with_segments(SHORT, ["word " * 600]), "id": "bad"}, "attribute", "longer than the model's context of 512"),
])
def test_bad_input_is_named_and_earlier_results_stay(bad, stage, message, tmp_path, write_jsonl, tiny_model_dir,
                                                      capsys):
    good = with_segments(OTHER)
    src = write_jsonl("in.jsonl", [good, bad, {**good, "id": "after"}])
    out = tmp_path / "out.jsonl"
    extra = ["--model", tiny_model_dir, "--steps", 2] if stage == "attribute" else []
    # an earlier OUT of this stage (an appending stage resumes only its own output, issue 19)
    assert run(stage, write_jsonl("earlier.jsonl", [{**good, "id": "earlier"}]), "--out", out, *extra) == 0
    earlier = out.read_text()
    assert run(stage, src, "--out", out, *extra) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith(f"segkit {stage}: error: ")]  # one line, no traceback
    assert line.startswith(f"segkit {stage}: error: {src}:2: ") and message in line and "Traceback" not in err
    if stage == "segment":  # a stage that rewrites OUT leaves it as it was when it fails
        assert out.read_text() == earlier
    else:  # an appending stage keeps what it had and the record before the bad one: nothing lost
        assert finished_ids(out) == ["earlier", "s2"]
    # --on-error skip reports the bad line and goes on; the rerun resumes (s2 is not recomputed)
    assert run(stage, src, "--out", out, "--on-error", "skip", *extra) == 0
    assert finished_ids(out) == (["s2", "after"] if stage == "segment" else ["earlier", "s2", "after"])


def test_attribute_resumes_after_interruption(tmp_path, write_jsonl, tiny_model_dir):
    segs = [with_segments(r) for r in (SHORT, OTHER, {**OTHER, "id": "s3"})]
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


def test_device_and_model_folder_errors_say_what_is_wrong(tmp_path):
    import torch

    from segkit.models import locate, resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': CUDA is not available here"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(FileNotFoundError, match="not a model folder: no config.json"):
        locate(str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"")
    assert locate(str(tmp_path)) == (str(tmp_path), "m.gguf")  # a folder holding one GGUF file is that file


@pytest.mark.parametrize("command", ["segment", "select", "synth", "train", "evaluate", "report"])
def test_to_argv_rebuilds_the_config(command, tmp_path):
    """``commands.to_argv`` is the inverse of the parser: evaluate relies on it to rerun itself in the vLLM environment."""
    import dataclasses

    from segkit.cli import build_parser
    from segkit.commands import config_class, to_argv

    cls = config_class(command)
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "q", "solution": "s", "answer": "1"}\n')
    given = {"segment": dict(input=str(src), out=str(tmp_path / "o.jsonl"), unique_ids="suffix"),
             "select": dict(input=str(src), out=str(tmp_path / "o.jsonl"), tau=0.5, beta=0.3),
             "synth": dict(out=str(tmp_path / "o.jsonl"), n=3),
             "train": dict(data=str(src), out=str(tmp_path / "m"), mode="selective", lora_r=4, grad_accum=2),
             "evaluate": dict(model="m", data=[str(src), str(src)], out=str(tmp_path / "o.jsonl"), n=4,
                              overwrite=True, temperature=0.6),
             "report": dict(params=str(src), only=["a", "b"], fresh=True)}[command]
    cfg = cls(**given)
    args = build_parser(command).parse_args([command, *to_argv(cfg)])
    assert cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}) == cfg
