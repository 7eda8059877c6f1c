"""IG attribution against an independent plain-torch re-implementation of the paper's loop; the adaptive scheme."""
import math
import os

import pytest
import torch

from segkit import attribute as A
from segkit.attribute import assemble, attribute_record
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
    F = A.AnswerLogProb(tiny_model, a.input_ids, a.targets)
    x = tiny_model.get_input_embeddings()(a.input_ids)[None]
    assert F.n_tokens == int(a.targets.max()) < len(a.input_ids)
    full = torch.log_softmax(tiny_model(inputs_embeds=x).logits[0], -1)
    expect = sum(full[p - 1, a.input_ids[p]] for p in a.targets.tolist())
    assert float(F(x[:, :F.n_tokens])[0]) == pytest.approx(float(expect), rel=1e-5)
    assert float(F(x)[0]) == pytest.approx(float(expect), rel=1e-5)  # longer input: the tail is ignored


def test_gausslegendre_converges_and_fields(tiny_model, smol_tokenizer):
    out = attribute_record(tiny_model, smol_tokenizer, record(), steps=32, method="gausslegendre",
                           baseline="pad-trace")
    assert out["completeness_error"] < 0.01
    delta = out["f_input"] - out["f_baseline"]
    assert abs(out["attribution_sum"] - delta) / abs(delta) == pytest.approx(out["completeness_error"])
    n = len(out["segments"])
    for key in ("attributions", "strength", "consistency", "tokens", "segment_log_perplexity", "segment_entropy"):
        assert len(out[key]) == n
    assert sum(out["strength"]) == pytest.approx(1.0)
    assert all(0 <= c <= 1 for c in out["consistency"])
    assert out["prompt_attribution"] == 0  # pad-trace: the prompt is the same at both ends of the path


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
    assert out["target_error_met"] and out["completeness_error"] <= A.TARGET_ERROR
    capped = attribute_record(tiny_model, smol_tokenizer, record(), target_error=1e-9, max_steps=24)
    assert capped["target_error_met"] is False and 15 < capped["ig_steps"] <= 24


class KnownPath:
    """A stand-in for `Path` whose F is known: F(alpha) = tanh(40 (alpha - 0.7)) on token 0, alpha on token 1."""
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
    raw, used = A.adaptive_ig(path, f0, f1, steps=8, target_error=1e-4, max_steps=512)
    assert float(raw.sum()) == pytest.approx(f1 - f0, rel=1e-4)
    assert raw[1] == pytest.approx(1.0, rel=1e-6)  # the smooth part is exact from the start
    assert used == len(path.alphas) < 100
    near = sum(abs(a - 0.7) < 0.15 for a in path.alphas)
    assert near > used / 2  # most points went where F changes fast
    # the same budget spent uniformly is far worse
    w, alphas = A.schedule("gausslegendre", used)
    uniform = torch.tensor(w) @ KnownPath().integrand(alphas)
    assert abs(float(uniform.sum()) - (f1 - f0)) > 10 * abs(float(raw.sum()) - (f1 - f0))


def test_adaptive_stops_at_the_cap():
    path = KnownPath()
    _, used = A.adaptive_ig(path, path.f(0), path.f(1), steps=8, target_error=1e-12, max_steps=20)
    assert used <= 20


def test_selection_agreement():
    a = {"strength": [0.6, 0.3, 0.1], "consistency": [0.5, 0.5, 0.5]}
    b = {"strength": [0.1, 0.3, 0.6], "consistency": [0.5, 0.5, 0.5]}
    assert A.selection_agreement(a, a) == 1.0
    assert A.selection_agreement(a, b) == pytest.approx(1 / 3)  # {0, 1} against {1, 2}


def test_batch_plan_and_threads(monkeypatch, tiny_model):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(A, "memory_budget", lambda device: 1000)
    assert A.auto_batch_size(cpu, 100, 10) == (A.CPU_BATCH_TOKENS // 100, False)  # CPU: capped by tokens
    assert A.auto_batch_size(cpu, 100, 10_000) == (1, False)
    assert A.auto_batch_size(gpu, 100, 10) == (100, False)  # GPU: as many as fit
    assert A.auto_batch_size(gpu, 100, 800)[1] is True      # not two: checkpointing
    before = torch.get_num_threads()
    try:
        assert 1 <= A.cpu_threads(tiny_model, n_tokens=16) == torch.get_num_threads() <= (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
