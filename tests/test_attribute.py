"""IG attribution against an independent plain-torch re-implementation of the paper's loop."""
import pytest
import torch

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


def test_paper_scheme_matches_the_paper_loop(tiny_model, smol_tokenizer):
    rec = record()
    raw, a = paper_loop(tiny_model, smol_tokenizer, rec, steps=12)
    out = attribute_record(tiny_model, smol_tokenizer, rec, steps=12, method="paper", baseline="pad", batch_size=5)
    ref = raw / raw.norm()
    got = torch.tensor([v for seg in out["attributions"] for v in seg])
    expect = ref[a.trace[0]:a.trace[1]]
    assert got.shape == expect.shape
    assert float((got - expect).norm() / expect.norm()) < 1e-4
    assert out["attribution_sum"] == pytest.approx(float(raw.sum()), rel=1e-4)
    assert out["ig_steps"] == 12 and out["attribution_seconds"] > 0


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


def test_batch_size_does_not_change_results(tiny_model, smol_tokenizer):
    outs = [attribute_record(tiny_model, smol_tokenizer, record(), steps=10, method="gausslegendre", batch_size=b)
            for b in (1, 3, 10)]
    for o in outs[1:]:
        for s0, s1 in zip(outs[0]["attributions"], o["attributions"]):
            assert s1 == pytest.approx(s0, rel=1e-4, abs=1e-7)


def test_target_error_raises_steps(tiny_model, smol_tokenizer):
    out = attribute_record(tiny_model, smol_tokenizer, record(), steps=2, method="gausslegendre",
                           target_error=1e-3, max_steps=256)
    assert out["target_error_met"] and out["completeness_error"] <= 1e-3 and out["ig_steps"] > 2
    capped = attribute_record(tiny_model, smol_tokenizer, record(), steps=2, method="riemann_trapezoid",
                              target_error=1e-12, max_steps=4)
    assert capped["ig_steps"] == 4 and capped["target_error_met"] is False
