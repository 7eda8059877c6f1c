"""IG attribution against independent plain-torch re-implementations (the paper's loop, a fine Riemann sum, F
from a separate forward pass); the adaptive scheme; options, record fields and hardware planning."""
import math
import subprocess
import sys

import pytest
import torch

from segkit import attribute
from segkit import hardware, ig
from segkit.attribute import attribute_record
from segkit.prompt import assemble, encode_answer
from segkit.segment import segment

from conftest import SHORT


def record(rec=SHORT):
    return {**rec, "segments": segment(rec["solution"])}


def paper_loop(model, tokenizer, rec, steps):
    """The paper's IG, written from its description: one interpolation point per pass, full logits, alphas =
    linspace(0, 1, J), mean gradient times (input - baseline); pad embedding at every position."""
    a = assemble(tokenizer, rec["question"], rec["segments"], rec["answer"])
    emb = model.get_input_embeddings()
    x = emb(a.input_ids)[None].detach()
    x0 = emb(torch.tensor([tokenizer.pad_token_id]))[0].expand_as(x)
    grads = torch.zeros_like(x)
    for alpha in torch.linspace(0, 1, steps):
        e = (x0 + alpha * (x - x0)).requires_grad_(True)
        logp = torch.log_softmax(model(inputs_embeds=e).logits[0], -1)
        f = sum(logp[p - 1, a.input_ids[p]] for p in a.targets.tolist())
        grads += torch.autograd.grad(f, e)[0]
    raw = (grads / steps * (x - x0))[0].sum(-1)
    return raw, a


def flat(out):
    return torch.tensor([v for seg in out["attributions"] for v in seg])


def assert_same_paper_output(model, tokenizer, rec, steps, tol=1e-4, **kw):
    raw, a = paper_loop(model, tokenizer, rec, steps)
    out = attribute_record(model, tokenizer, rec, steps=steps, method="paper", baseline="pad", **kw)
    expect = (raw / raw.norm())[a.trace[0]:a.trace[1]]
    got = flat(out)
    assert got.shape == expect.shape
    assert float((got - expect).norm() / expect.norm()) < tol
    # the sum can nearly cancel (SmolLM2 at J=2: -0.011 out of an L1 mass of ~10), so compare it to the mass
    assert abs(out["attribution_sum"] - float(raw.sum())) <= tol * float(raw.abs().sum())
    assert out["ig_steps"] == steps and out["attribution_seconds"] > 0
    assert "target_error_met" not in out  # a fixed scheme is not refined unless asked


def test_paper_scheme_matches_the_paper_loop(tiny_model, smol_tokenizer):
    assert_same_paper_output(tiny_model, smol_tokenizer, record(), steps=6, batch_size=4)


@pytest.mark.slow
def test_paper_scheme_matches_the_paper_loop_on_smollm2(smol_tokenizer):
    from segkit.models import load_model

    model, _ = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    assert_same_paper_output(model, smol_tokenizer, record(), steps=2, tol=1e-3)  # 30 fp32 layers: 1e-4 apart


def test_answer_target_found_from_offsets(smol_tokenizer):
    a = assemble(smol_tokenizer, "q?", ["Some trace."], "42")
    assert smol_tokenizer.decode(a.input_ids[a.targets]) == "42"
    assert smol_tokenizer.decode(a.input_ids[a.targets[-1] + 1:]) == "}"
    # a token that overlaps the answer counts as an answer token ("}}" closes both \frac{}{} and \boxed{})
    a = assemble(smol_tokenizer, "q?", ["Some trace."], "3\\frac{1}{2}")
    assert smol_tokenizer.decode(a.input_ids[a.targets]).startswith("3\\frac{1}{2}")
    assert "box" not in smol_tokenizer.decode(a.input_ids[a.targets])
    pieces = [p for seg in a.pieces for p in seg]
    assert "".join(pieces) == "Some trace."


def test_input_cut_after_the_answer_leaves_F_unchanged(tiny_model, smol_tokenizer):
    a = assemble(smol_tokenizer, "q?", ["Some trace."], "3\\frac{1}{2}")
    F = ig.AnswerLogProb(tiny_model, a.input_ids, a.targets)
    x = tiny_model.get_input_embeddings()(a.input_ids)[None]
    assert F.n_tokens == int(a.targets.max()) < len(a.input_ids)
    full = torch.log_softmax(tiny_model(inputs_embeds=x).logits[0], -1)
    expect = sum(full[p - 1, a.input_ids[p]] for p in a.targets.tolist())
    assert float(F(x[:, :F.n_tokens])[0]) == pytest.approx(float(expect), rel=1e-5)
    assert float(F(x)[0]) == pytest.approx(float(expect), rel=1e-5)  # longer input: the tail is ignored


def plain_ig(model, tokenizer, rec, points=64):
    """IG with the trace-only pad baseline written plainly: the whole input through the model at every point (no
    prompt cache, no cut after the answer), F from the final hidden states at the rows that predict the answer
    tokens, midpoint rule with ``points`` points. Returns raw attributions ``(T,)``, F(x), F(x') and the input."""
    a = assemble(tokenizer, rec["question"], rec["segments"], rec["answer"])
    emb = model.get_input_embeddings()
    x = emb(a.input_ids)[None].detach()                                        # (1, T, H)
    x0 = x.clone()
    x0[:, a.trace[0]:a.trace[1]] = emb.weight[tokenizer.pad_token_id]

    def F(e):  # (B, T, H) -> (B,)
        hidden = model.model(inputs_embeds=e).last_hidden_state[:, a.targets - 1]  # (B, A, H)
        logp = torch.log_softmax(model.lm_head(hidden), -1)                        # (B, A, V)
        return logp[:, torch.arange(len(a.targets)), a.input_ids[a.targets]].sum(-1)

    grads = torch.zeros_like(x)
    for chunk in ((torch.arange(points) + 0.5) / points).split(32):
        e = (x0 + chunk.view(-1, 1, 1) * (x - x0)).requires_grad_(True)
        grads += torch.autograd.grad(F(e).sum(), e)[0].sum(0, keepdim=True)
    with torch.no_grad():
        return (grads / points * (x - x0))[0].sum(-1), float(F(x)[0]), float(F(x0)[0]), a


def test_gausslegendre_converges_to_a_plain_riemann_sum(tiny_model, smol_tokenizer):
    out = attribute_record(tiny_model, smol_tokenizer, record(), steps=32, method="gausslegendre",
                           baseline="pad-trace")
    raw, f_x, f_x0, a = plain_ig(tiny_model, smol_tokenizer, record())
    # F at both ends, from separate forward passes of the whole input
    assert out["f_input"] == pytest.approx(f_x, rel=1e-5) and out["f_baseline"] == pytest.approx(f_x0, rel=1e-5)
    # completeness: the sum of the attributions is the change in F, as computed independently
    assert abs(out["attribution_sum"] - (f_x - f_x0)) < 0.01 * abs(f_x - f_x0)
    assert out["completeness_error"] < 0.01
    # the attributions themselves: the same per token as the fine Riemann sum
    expect = (raw / raw.norm())[a.trace[0]:a.trace[1]]
    assert float((flat(out) - expect).norm() / expect.norm()) < 1e-3
    assert out["prompt_attribution"] == 0  # pad-trace: the prompt is the same at both ends of the path
    n = len(out["segments"])
    for key in ("attributions", "strength", "consistency", "tokens", "segment_log_perplexity", "segment_entropy"):
        assert len(out[key]) == n
    assert [len(v) for v in out["attributions"]] == [len(t) for t in out["tokens"]]
    assert sum(out["strength"]) == pytest.approx(1.0)
    assert all(0 <= c <= 1 for c in out["consistency"])


def test_segment_perplexity_and_entropy_from_full_logits(tiny_model, smol_tokenizer):
    out = attribute_record(tiny_model, smol_tokenizer, record(), steps=3, method="gausslegendre")
    a = assemble(smol_tokenizer, record()["question"], record()["segments"], "7")
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(input_ids=a.input_ids[None]).logits[0], -1)  # (T, V)
    for i, (s, e) in enumerate(a.segments):
        rows = torch.arange(s, e)
        nll = -logp[rows - 1, a.input_ids[rows]]
        entropy = -(logp[rows - 1].exp() * logp[rows - 1]).sum(-1)
        assert out["segment_log_perplexity"][i] == pytest.approx(float(nll.mean()), rel=1e-4)
        assert out["segment_entropy"][i] == pytest.approx(float(entropy.mean()), rel=1e-4)


@pytest.mark.parametrize("method", ["gausslegendre", "adaptive"])
def test_batch_size_does_not_change_results(tiny_model, smol_tokenizer, method):
    outs = [attribute_record(tiny_model, smol_tokenizer, record(), steps=8, method=method, batch_size=b)
            for b in (1, 3, 16)]
    for o in outs[1:]:
        assert o["ig_steps"] == outs[0]["ig_steps"]
        for s0, s1 in zip(outs[0]["attributions"], o["attributions"]):
            assert s1 == pytest.approx(s0, rel=1e-4, abs=1e-7)


def test_gradient_checkpointing_does_not_change_results(tiny_model, smol_tokenizer):
    outs = [attribute_record(tiny_model, smol_tokenizer, record(), steps=4, method="gausslegendre",
                             checkpointing=c) for c in (False, True)]
    assert flat(outs[1]).tolist() == pytest.approx(flat(outs[0]).tolist(), rel=1e-4, abs=1e-7)
    emb = tiny_model.get_input_embeddings()
    assert not emb(torch.tensor([1])).requires_grad  # no hook left behind
    assert not tiny_model.is_activation_checkpointing and not any(m.training for m in tiny_model.modules())


def test_target_error_raises_steps(tiny_model, smol_tokenizer):
    out = attribute_record(tiny_model, smol_tokenizer, record(), steps=2, method="gausslegendre",
                           target_error=1e-3, max_steps=256)
    assert out["target_error_met"] and out["completeness_error"] <= 1e-3 and out["ig_steps"] > 2
    capped = attribute_record(tiny_model, smol_tokenizer, record(), steps=2, method="riemann_trapezoid",
                              target_error=1e-12, max_steps=4)
    assert capped["ig_steps"] == 4 and capped["target_error_met"] is False


def test_default_is_adaptive_and_says_whether_the_target_was_met(tiny_model, smol_tokenizer):
    out = attribute_record(tiny_model, smol_tokenizer, record())
    assert (out["ig_method"], out["ig_baseline"]) == ("adaptive", "pad-trace")
    assert out["target_error_met"] and out["completeness_error"] <= attribute.TARGET_ERROR
    capped = attribute_record(tiny_model, smol_tokenizer, record(), target_error=1e-9, max_steps=24)
    assert capped["target_error_met"] is False and 15 < capped["ig_steps"] <= 24


class KnownPath:
    """A stand-in for `InterpolationPath` whose F is known: F(alpha) = tanh(40 (alpha - 0.7)) on token 0, alpha on token 1."""
    f = staticmethod(lambda a: math.tanh(40 * (a - 0.7)) + a)

    def __init__(self):
        self.alphas = []

    def value(self, alphas):
        return torch.tensor([self.f(a) for a in alphas])

    def integrand(self, alphas):
        self.alphas += alphas
        return torch.tensor([[40 / math.cosh(40 * (a - 0.7)) ** 2, 1.0] for a in alphas])


def test_adaptive_places_points_where_F_changes_fast():
    path = KnownPath()
    f0, f1 = path.f(0), path.f(1)
    raw, used = ig.adaptive_ig(path, f0, f1, steps=8, target_error=1e-4, max_steps=512)
    assert float(raw.sum()) == pytest.approx(f1 - f0, rel=1e-4)
    assert raw[1] == pytest.approx(1.0, rel=1e-6)  # the smooth part is exact from the start
    assert used == len(path.alphas) < 100
    near = sum(abs(a - 0.7) < 0.15 for a in path.alphas)
    assert near > used / 2  # most points went where F changes fast
    # the same budget spent uniformly is far worse
    w, alphas = ig.schedule("gausslegendre", used)
    uniform = torch.tensor(w) @ KnownPath().integrand(alphas)
    assert abs(float(uniform.sum()) - (f1 - f0)) > 10 * abs(float(raw.sum()) - (f1 - f0))


def test_adaptive_stops_at_the_cap():
    path = KnownPath()
    _, used = ig.adaptive_ig(path, path.f(0), path.f(1), steps=8, target_error=1e-12, max_steps=20)
    assert used <= 20


def test_selection_agreement():
    a = {"strength": [0.6, 0.3, 0.1], "consistency": [0.5, 0.5, 0.5]}
    b = {"strength": [0.1, 0.3, 0.6], "consistency": [0.5, 0.5, 0.5]}
    assert attribute.selection_agreement(a, a) == 1.0
    assert attribute.selection_agreement(a, b) == pytest.approx(1 / 3)  # {0, 1} against {1, 2}


def test_batch_plan(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(hardware, "memory_budget", lambda device: 1000)
    assert hardware.auto_batch_size(cpu, 100, 10) == (hardware.CPU_BATCH_TOKENS // 100, False)  # capped by tokens
    assert hardware.auto_batch_size(cpu, 100, 10_000) == (1, False)
    assert hardware.auto_batch_size(gpu, 100, 10) == (100, False)  # GPU: as many as fit
    assert hardware.auto_batch_size(gpu, 100, 800)[1] is True      # not two: checkpointing


def test_cpu_thread_policy(monkeypatch, tiny_model):
    before, cores = torch.get_num_threads(), hardware.cpu_cores()
    try:
        assert hardware.fastest_cpu_threads(tiny_model, n_tokens=16) in {1, cores}
        assert torch.get_num_threads() == before  # measuring leaves torch's setting as it was
        # a count chosen through OMP_NUM_THREADS (torchrun: 1 per process) is kept, without measuring
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(hardware, "fastest_cpu_threads", lambda *a, **k: pytest.fail("measured"))
        assert hardware.set_cpu_threads(tiny_model) == before == torch.get_num_threads()
        assert hardware.set_cpu_threads(tiny_model, 1) == 1 == torch.get_num_threads()  # an explicit count wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        with pytest.raises(pytest.fail.Exception, match="measured"):
            hardware.set_cpu_threads(tiny_model)  # neither: measured
    finally:
        torch.set_num_threads(before)


def test_encode_answer_and_assemble_agree(smol_tokenizer):
    ids, (first, end) = encode_answer(smol_tokenizer, 42)
    assert smol_tokenizer.decode(ids[first:end]) == "42" and smol_tokenizer.decode(ids[end:]) == "}"
    a = assemble(smol_tokenizer, "q?", ["Some trace."], 42)
    assert a.input_ids[-len(ids):].tolist() == ids
    assert a.targets.tolist() == list(range(len(a.input_ids) - len(ids) + first, len(a.input_ids) - len(ids) + end))
    assert attribute.assemble is assemble  # still importable from segkit.attribute
    with pytest.raises(ValueError, match="yields no tokens"):
        encode_answer(smol_tokenizer, "")


@pytest.mark.parametrize("field,value,said", [
    ("answer", None, "field 'answer'.*null"),
    ("segments", "3 + 4 = 7.\n\nWait, 7.", "field 'segments'.*a string"),
    ("segments", [1, 2], "field 'segments'"),
    ("question", ["q"], "field 'question'"),
])
def test_mistyped_fields_are_value_errors_naming_the_field(tiny_model, smol_tokenizer, field, value, said):
    with pytest.raises(ValueError, match=said):
        attribute_record(tiny_model, smol_tokenizer, {**record(), field: value}, steps=2, method="gausslegendre")


def test_bad_options_fail_before_the_model_runs(tiny_model, smol_tokenizer):
    for bad in (dict(steps=0), dict(steps=8, max_steps=4), dict(method="simpson"), dict(baseline="mean"),
                dict(method="riemann_left", steps=1), dict(target_error=-0.1), dict(batch_size=0)):
        with pytest.raises(ValueError):
            attribute_record(tiny_model, smol_tokenizer, record(), **bad)


def test_config_checks_itself_before_out_is_touched(tmp_path, write_jsonl):
    src, out = write_jsonl("in.jsonl", [record()]), tmp_path / "out.jsonl"
    cases = [(dict(steps=0), "steps"), (dict(steps=16, max_steps=8), "max_steps"), (dict(method="simpson"), "method"),
             (dict(baseline="mean"), "baseline"), (dict(method="riemann_middle", steps=1), "steps"),
             (dict(target_error=float("nan")), "target_error"), (dict(batch_size=-1), "batch_size"),
             (dict(threads=-1), "threads"), (dict(device="tpu"), "device"), (dict(trace_batch=0), "trace_batch"),
             (dict(input=str(tmp_path / "missing.jsonl")), "no such file"), (dict(out=str(src)), str(src))]
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda"), "CUDA"))
    if not torch.backends.mps.is_available():
        cases.append((dict(device="mps"), "MPS"))
    for bad, said in cases:
        with pytest.raises(ValueError, match=said) as e:
            attribute.AttributeConfig(**{"input": str(src), "out": str(out), **bad})
        assert "\n" not in str(e.value)  # one line
    assert not out.exists()
    cfg = attribute.AttributeConfig(input=str(src), out=str(out))
    assert (cfg.steps, cfg.method, cfg.baseline, cfg.max_steps) == (attribute.STEPS, attribute.METHOD,
                                                                     attribute.BASELINE, attribute.MAX_STEPS)


def test_run_attribute_skips_mistyped_records(tmp_path, write_jsonl, tiny_model_dir):
    """One trace at a time and several in shared passes (a failing record in a group stays that record's error):
    the same records are written, with the same attributions up to float rounding."""
    import json

    good = record()
    src = write_jsonl("in.jsonl", [good, {**good, "id": "null", "answer": None}, RECORDS[2],
                                   {**good, "id": "ints", "segments": [1, 2]}, {**good, "id": "s2"}])
    written = {}
    for trace_batch in (1, 3):
        out = tmp_path / f"out{trace_batch}.jsonl"
        cfg = attribute.AttributeConfig(input=str(src), out=str(out), model=str(tiny_model_dir), steps=2,
                                        method="gausslegendre", on_error="skip", threads=1, trace_batch=trace_batch)
        assert attribute.run_attribute(cfg).startswith("3 attributed, 0 already done, 2 skipped")
        written[trace_batch] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written[3]] == [r["id"] for r in written[1]] == ["s1", "s3", "s2"]
    for a, b in zip(*written.values()):
        assert flat(b).tolist() == pytest.approx(flat(a).tolist(), rel=1e-4, abs=1e-6)


def test_import_is_light():
    """``segkit attribute --help`` imports this module: no torch, transformers or captum."""
    code = "import sys, segkit.attribute; print(sorted(m for m in ('torch', 'transformers', 'captum') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


RECORDS = [record(), record({"id": "s2", "question": "Tom has 12 apples and gives 5 of them away. How many are left?",
                             "solution": "12 - 5 = 7.\n\nWait, check: 7 + 5 = 12.", "answer": "7"}),
           record({"id": "s3", "question": "What is 2 * 9?", "solution": "2 * 9 = 18.\n\nWait, 9 + 9 = 18 as well, "
                   "and 18 / 2 = 9.\n\nAlternatively, 10 + 8 = 18.\n\nSo 18.", "answer": "18"}),
           record({**SHORT, "id": "s4", "solution": SHORT["solution"] + "\n\nWait, 3 + 4 = 7." * 25})]  # no cache


@pytest.mark.parametrize("opts", [{"steps": 1, "target_error": 1e-3, "max_steps": 64},
                                  {"method": "gausslegendre", "baseline": "pad", "steps": 5, "batch_size": 4}])
def test_traces_sharing_passes_give_their_own_attributions(tiny_model, smol_tokenizer, opts):
    """Traces of different prompt and trace lengths (padded, masked, their own positions), refined to different
    numbers of points (the adaptive default) or not: each gets what it gets alone, up to float rounding."""
    alone = [attribute_record(tiny_model, smol_tokenizer, r, **opts) for r in RECORDS]
    assert len({o["n_tokens"] for o in alone}) == 4 and len({o["ig_steps"] for o in alone}) > ("target_error" in opts)
    shared = attribute.attribute_records(tiny_model, smol_tokenizer, RECORDS, trace_batch=4, **opts)
    for a, s in zip(alone, shared):
        assert s["ig_steps"] == a["ig_steps"] and s["id"] == a["id"]
        assert flat(s).tolist() == pytest.approx(flat(a).tolist(), rel=1e-4, abs=1e-6)
        for k in ("f_input", "f_baseline", "attribution_sum", "strength"):
            assert s[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6)
        # the error is what is left of F(x) - F(x') after the sum cancels it (to 1e-4 here): rounding shows more
        assert s["completeness_error"] == pytest.approx(a["completeness_error"], abs=1e-4)
