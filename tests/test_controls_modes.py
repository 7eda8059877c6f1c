"""The controls matched in trained tokens (``random-tokens``, ``length``), IG's share of the oracle's gain over
token-matched random (``recovered``), and the trained-token share beside every mode's results."""
import json
import random

import numpy as np
import pytest

from segkit import analysis, prompt
from segkit.modes import MODES, segments_for_mode
from segkit.segment import segment
from segkit.synth import SynthConfig, make_records
from segkit.testbed_model import tokenizer_corpus
from segkit.train import build_example, build_tokenizer

KEPT = lambda n: {0, n - 2, n - 1}  # noqa: E731 (the always-kept first, second-to-last and last, by hand)


def synthetic(rid, n, draw):
    """A record of ``n`` segments whose attributions have varied lengths (1-40 tokens) and a random selection."""
    tokens = [draw.randint(1, 40) for _ in range(n)]
    return {"id": rid, "segments": [f"s{i} " for i in range(n)], "attributions": [[0.1] * t for t in tokens],
            "selected_spans_ids": sorted(draw.sample(range(n), draw.randint(0, n)))}


def budget(rec):
    """The tokens selective trains beyond the always-kept segments, worked out by hand."""
    n = len(rec["segments"])
    return sum(len(rec["attributions"][i]) for i in rec["selected_spans_ids"] if i not in KEPT(n))


@pytest.fixture(scope="module")
def records():
    draw = random.Random(5)
    return [synthetic(f"r{k}", draw.randint(4, 14), draw) for k in range(60)]


def test_random_tokens_lands_within_half_a_segment_of_the_selective_budget(records):
    for rec in records:
        n = len(rec["segments"])
        free = [len(rec["attributions"][i]) for i in range(n) if i not in KEPT(n)]
        for seed in range(4):
            chosen = segments_for_mode(rec, "random-tokens", seed=seed)
            assert not set(chosen) & KEPT(n)  # the always-kept ones are trained anyway, by every mode
            total = sum(len(rec["attributions"][i]) for i in chosen)
            assert abs(total - budget(rec)) <= max(free) / 2
            assert chosen == segments_for_mode(rec, "random-tokens", seed=seed)  # deterministic for a seed


def test_random_tokens_draws_afresh_per_seed_and_per_trace(records):
    def draws(rec, seeds=range(6)):
        return {tuple(segments_for_mode(rec, "random-tokens", seed=s)) for s in seeds}

    def free_tokens(rec):
        n = len(rec["segments"])
        return sum(len(a) for i, a in enumerate(rec["attributions"]) if i not in KEPT(n))

    roomy = [r for r in records if len(r["segments"]) >= 8 and 0 < budget(r) < free_tokens(r) / 2]  # room to vary
    assert roomy and all(len(draws(r)) > 1 for r in roomy)  # the seed goes into the draw
    renamed = [dict(r, id=r["id"] + "'") for r in roomy]  # same text, another trace
    assert any(segments_for_mode(a, "random-tokens") != segments_for_mode(b, "random-tokens")
               for a, b in zip(roomy, renamed))


def test_length_takes_the_longest_segments_at_the_budget():
    # segments 1-5 are free, with 9, 2, 7, 3, 4 tokens; 0, 6 and 7 are always kept
    tokens = [5, 9, 2, 7, 3, 4, 1, 6]
    rec = {"id": "h", "segments": ["x"] * 8, "attributions": [[0.0] * t for t in tokens]}
    assert segments_for_mode({**rec, "selected_spans_ids": [2, 4, 5, 6]}, "length") == [1]      # 2 + 3 + 4 = 9
    assert segments_for_mode({**rec, "selected_spans_ids": [2, 3, 4, 5]}, "length") == [1, 3]   # 16 = 9 + 7
    assert segments_for_mode({**rec, "selected_spans_ids": [0, 7]}, "length") == []             # nothing beyond
    # 12 tokens: 9, then 7 would overshoot by more than it closes, 4 comes within one
    assert segments_for_mode({**rec, "selected_spans_ids": [1, 4]}, "length") == [1, 5]


def test_the_controls_come_after_the_existing_modes_and_need_attributions(records):
    assert MODES[-2:] == ("random-tokens", "length") and MODES.index("oracle") == len(MODES) - 3
    bare = {k: v for k, v in records[0].items() if k != "attributions"}
    with pytest.raises(ValueError, match="needs the record field 'attributions'"):
        segments_for_mode(bare, "random-tokens")


def test_build_example_trains_as_many_tokens_as_selective(tmp_path):
    recs = make_records(SynthConfig(out="", n=12, seed=3, chain_length=3, distractors=2, redundant=1.0))
    build_tokenizer(tokenizer_corpus(recs), tmp_path)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    for k, rec in enumerate(recs):
        segs = segment(rec["solution"])
        spans = prompt.encode_segments(tok, segs)[2]
        n = len(segs)
        # attributions of the trained model's own token counts, so the budget holds in its tokens exactly
        rec = dict(rec, attributions=[[0.0] * (e - s) for s, e in spans], selected_spans_ids=list(range(1, n - 2, 2)))
        trained = {m: sum(build_example(tok, rec, m, seed=k)["loss_mask"]) for m in ("selective", "random-tokens")}
        free = [e - s for i, (s, e) in enumerate(spans) if i not in KEPT(n)]
        assert abs(trained["random-tokens"] - trained["selective"]) <= max(free) / 2


def mode_rows(values):
    """Per-problem rows for two base models, ``values[mode](base, problem) -> (accuracy, mean_length)``."""
    return [{"problem": p, "base_seed": b, "ft_seed": 0, "mode": mode, "accuracy": f(b, p)[0],
             "mean_length": f(b, p)[1]} for mode, f in values.items() for b in (0, 1) for p in range(12)]


def base(b, p):
    return 0.1 + 0.05 * (p % 5) + 0.02 * b, 300.0 + 7 * p - 20 * b


def test_recovered_is_half_when_selective_lies_half_way():
    def oracle(b, p):  # a gain that varies by problem and base model, every one above 0
        acc, length = base(b, p)
        return acc + 0.2 + 0.01 * p, length - 40 - 3 * (p % 4) - 5 * b

    def selective(b, p):
        return tuple((x + y) / 2 for x, y in zip(base(b, p), oracle(b, p)))

    rows = mode_rows({"random-tokens": base, "oracle": oracle, "selective": selective, "full": base})
    out = {r["metric"]: r for r in analysis.recovered(rows, n_resamples=300)}
    for metric in ("accuracy", "mean_length"):
        r = out[metric]
        assert r["missing"] is None and r["recovered"] == pytest.approx(0.5)
        # the same resamples above and below the line: every resampled share is one half
        assert r["ci_low"] == pytest.approx(0.5) and r["ci_high"] == pytest.approx(0.5)
        assert r["oracle_gain_ci_low"] * r["oracle_gain_ci_high"] > 0
    assert out["mean_length"]["oracle_gain"] < 0 < out["accuracy"]["oracle_gain"]
    diffs = analysis.differences_table(rows, n_resamples=100)
    assert {("selective", "random-tokens"), ("oracle", "random-tokens")} <= set(zip(diffs["mode"], diffs["vs"]))
    head = analysis.finetuning_headline(rows, n_resamples=100)
    assert head["recovered"][0]["recovered"] == pytest.approx(0.5)


def test_recovered_is_missing_without_an_oracle_gain_or_without_the_modes():
    def oracle(b, p):  # as good as token-matched random, give or take: no gain to share
        acc, length = base(b, p)
        return acc + (0.1 if p % 2 else -0.1), length + (5 if p % 2 else -5)

    rows = mode_rows({"random-tokens": base, "oracle": oracle, "selective": base})
    for r in analysis.recovered(rows, n_resamples=300):
        assert r["recovered"] is None and r["ci_low"] is None and "not detected" in r["missing"]
        assert r["oracle_gain_ci_low"] <= 0 <= r["oracle_gain_ci_high"]
    absent = analysis.recovered([r for r in rows if r["mode"] != "oracle"], n_resamples=50)
    assert [r["missing"] for r in absent] == ["needs the modes oracle, which did not run"] * 2
    json.dumps(absent, allow_nan=False)  # None, never NaN


def test_default_pairs_are_unchanged_without_the_controls():
    rows = mode_rows({m: base for m in ("full", "selective", "random", "strength-only", "perplexity", "entropy",
                                        "oracle")})
    before = [("selective", vs) for vs in ("full", "random", "strength-only", "perplexity", "entropy", "oracle")] + [
        ("oracle", "full")]  # what the reports compared before the token-matched controls existed
    diffs = analysis.differences_table(rows, n_resamples=50)
    assert diffs.equals(analysis.differences_table(rows, before, n_resamples=50))


def test_trained_token_share_beside_every_mode_and_its_plot():
    rows = []
    for mode, share, length in (("full", 1.0, 400), ("selective", 0.5, 260), ("random-tokens", 0.5, 250),
                                ("oracle", 0.3, 200), ("base", 0.0, 90)):
        for b in (0, 1):
            records = [{"id": f"p{i}", "correct": [i % 2], "n_tokens": [length + 10 * b + i]} for i in range(4)]
            rows += analysis.per_problem_rows(records, mode, base_seed=b, trained_token_fraction=share + 0.01 * b)
    table = analysis.modes_table(rows, n_resamples=50).set_index("mode")
    assert table.loc["selective", "trained_token_fraction"] == pytest.approx(0.505)
    assert table.loc["oracle", "trained_token_fraction_ci_low"] <= 0.305 <= table.loc["oracle",
                                                                                    "trained_token_fraction_ci_high"]
    fig = analysis.plot_length_vs_share(rows)
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 8  # four fine-tuned modes x two base models; base left out
    assert sorted({t.get_text() for t in ax.texts}) == ["full", "oracle", "random-tokens", "selective"]
    share, length = np.array([[0.01 * b + s, 10 * b + 1.5 + n] for s, n in ((1.0, 400), (0.5, 260), (0.5, 250),
                                                                             (0.3, 200)) for b in (0, 1)]).T
    assert f"r = {np.corrcoef(share, length)[0, 1]:.2f}" in ax.get_title() and len(ax.lines) == 1
