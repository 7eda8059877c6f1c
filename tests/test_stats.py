"""Intervals, paired differences, ROC-AUC and the verdict sentence, on cases computed by hand."""
import itertools

import numpy as np
import pytest

from segkit import stats


def rows_of(values: dict, ft_seeds=(0,)):
    """Rows from ``{(mode, base_seed, problem): value or [value per ft seed]}``."""
    out = []
    for (mode, base, problem), v in values.items():
        vs = v if isinstance(v, list) else [v] * len(ft_seeds)
        out += [{"mode": mode, "base_seed": base, "ft_seed": s, "problem": problem, "correct": x}
                for s, x in zip(ft_seeds, vs)]
    return out


def test_auc_hand_computed_with_ties():
    assert stats.roc_auc([0.9, 0.1, 0.5], [True, False, True]) == 1.0
    assert stats.roc_auc([0.9, 0.1, 0.5], [False, True, False]) == 0.0
    # pos {1, 0} vs neg {1, 0}: a tie (1/2), a win, a loss, a tie -> 2 / 4
    assert stats.roc_auc([1, 1, 0, 0], [1, 0, 1, 0]) == 0.5
    # pos {0.4, 0.8} vs neg {0.2, 0.4}: 1 + 1/2 + 1 + 1 -> 3.5 / 4
    assert stats.roc_auc([0.2, 0.4, 0.4, 0.8], [0, 1, 0, 1]) == 0.875
    assert np.isnan(stats.roc_auc([0.1, 0.2], [1, 1]))


def test_auc_equals_the_share_of_pairs_ranked_right():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pairs = [(p, n) for p, n in itertools.product(scores[labels], scores[~labels])]
    by_pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert stats.roc_auc(scores, labels) == pytest.approx(by_pairs, abs=1e-12)


def test_auc_interval_resamples_traces():
    # every trace ranks its useful segment first: any resample of traces still gives 1
    perfect = [([0.9, 0.1, 0.2], [True, False, False]), ([0.7, 0.3], [True, False])] * 5
    out = stats.auc_ci(perfect, n_resamples=200)
    assert out == {"auc": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n_pos": 10, "n_neg": 15}
    # half the traces perfectly right, half perfectly wrong: the pooled AUC is 1/2 and the interval is wide
    mixed = [([0.9, 0.1], [True, False])] * 10 + [([0.1, 0.9], [True, False])] * 10
    out = stats.auc_ci(mixed, n_resamples=500)
    assert out["auc"] == 0.5 and out["ci_low"] < 0.35 and out["ci_high"] > 0.65


def test_bootstrap_interval_of_a_mean():
    assert stats.bootstrap_mean_ci([0.25] * 20) == (0.25, 0.25, 0.25)
    # two values 0 and 1: resample means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> the 95% interval is [0, 1]
    assert stats.bootstrap_mean_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)
    # 400 fair coin flips: the normal approximation gives 0.5 +- 1.96 * 0.5 / 20 = +- 0.049
    values = np.tile([0.0, 1.0], 200)
    mean, lo, hi = stats.bootstrap_mean_ci(values, seed=1)
    assert mean == 0.5 and hi - lo == pytest.approx(2 * 0.049, abs=0.01)
    assert stats.bootstrap_mean_ci(values, seed=1) == (mean, lo, hi)  # seeded: same interval


def test_hierarchical_interval_covers_the_base_model():
    # two base models, one solves nothing, the other everything: which base models are drawn decides it all
    matrix = np.array([[0.0] * 50, [1.0] * 50])
    assert stats.hierarchical_mean_ci(matrix) == (0.5, 0.0, 1.0)
    # with one base model it is the bootstrap over problems
    one = np.tile([0.0, 1.0], 100)[None, :]
    mean, lo, hi = stats.hierarchical_mean_ci(one, seed=2)
    assert mean == 0.5 and hi - lo == pytest.approx(2 * 1.96 * 0.5 / np.sqrt(200), abs=0.015)


def test_paired_difference_cancels_what_modes_share_and_averages_seeds():
    # problems differ wildly, but "a" is "b" plus 0.1 on every problem: the paired interval has no width
    values = {}
    for p in range(30):
        values[("b", 0, p)] = p / 30
        values[("a", 0, p)] = p / 30 + 0.1
    d = stats.paired_difference(rows_of(values), "a", "b", "correct")
    assert d["diff"] == pytest.approx(0.1) and d["ci_low"] == pytest.approx(0.1) and d["ci_high"] == pytest.approx(0.1)
    # fine-tuning seeds are averaged per problem before the bootstrap: seeds 0 and 1 -> 0.5 on each problem
    seeds = rows_of({("a", 0, p): [0.0, 1.0] for p in range(10)} | {("b", 0, p): [0.0, 0.0] for p in range(10)},
                    ft_seeds=(0, 1))
    assert stats.paired_difference(seeds, "a", "b", "correct") == {"diff": 0.5, "ci_low": 0.5, "ci_high": 0.5}
    assert stats.mean_ci(seeds, "a", "correct") == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5}


def test_paired_difference_needs_the_same_problems():
    rows = rows_of({("a", 0, 1): 1.0, ("a", 0, 2): 1.0, ("b", 0, 1): 0.0, ("b", 0, 3): 0.0})
    with pytest.raises(ValueError, match="same base seeds and problems"):
        stats.paired_difference(rows, "a", "b", "correct")
    with pytest.raises(ValueError, match="missing"):
        stats.mean_ci(rows_of({("a", 0, 1): 1.0, ("a", 1, 2): 1.0}), "a", "correct")


def test_verdict_lines_follow_the_intervals():
    diffs = [{"mode": "selective", "vs": "full", "metric": "accuracy", "diff": 0.03, "ci_low": -0.01, "ci_high": 0.07},
             {"mode": "selective", "vs": "full", "metric": "mean_length", "diff": -12, "ci_low": -18, "ci_high": -6},
             {"mode": "selective", "vs": "random", "metric": "accuracy", "diff": 0.05, "ci_low": 0.01,
              "ci_high": 0.09},
             {"mode": "oracle", "vs": "full", "metric": "accuracy", "diff": 0.2, "ci_low": 0.1, "ci_high": 0.3}]
    assert stats.verdict(diffs) == [
        "selective vs full: accuracy +0.030 [-0.010, +0.070], not detected; "
        "mean length -12.0 [-18.0, -6.0] tokens, shorter",
        "selective vs random: accuracy +0.050 [+0.010, +0.090], higher",
        "oracle vs full: accuracy +0.200 [+0.100, +0.300], higher"]
    assert stats.verdict([]) == []
    # a base-model row leads where there is one: its interval, Holm p and word (in the metric's terms)
    family = [{"mode": "selective", "vs": "full", "metric": "mean_length", "diff": -12.0, "ci_low": -20.0,
               "ci_high": -4.0, "p_value": 0.01, "p_holm": 0.02, "n_base": 5, "verdict": "lower"},
              {"mode": "oracle", "vs": "full", "metric": "accuracy", "diff": 0.2, "ci_low": float("nan"),
               "ci_high": float("nan"), "p_value": float("nan"), "p_holm": float("nan"), "n_base": 1,
               "verdict": "no interval over base models (1 base model)"}]
    lines = stats.verdict(diffs, family)
    assert lines[0] == ("selective vs full: accuracy +0.030 [-0.010, +0.070], not detected; mean length -12.0 "
                        "[-20.0, -4.0] tokens (t over 5 base models, Holm p = 0.02): shorter")
    assert lines[2] == ("oracle vs full: accuracy +0.200: no interval over base models (1 base model); over its "
                        "problems [+0.100, +0.300]")


def test_describe_difference_takes_its_word_from_verdict_word():
    row = {"metric": "mean_length", "diff": 1.0, "ci_low": 0.5, "ci_high": 1.5}
    assert stats.describe_difference(row).endswith(", " + stats.metric_word("mean_length", "higher")) \
        and stats.describe_difference(row).endswith("longer")
    assert stats.describe_difference({**row, "ci_low": -0.5}).endswith("not detected")
    assert stats.describe_difference({**row, "diff": float("nan")}) == "mean length missing (nothing to compare)"


def test_auc_interval_matches_resampling_traces_one_by_one():
    # the vectorised bootstrap against the plain loop: resample traces, pool, roc_auc
    rng = np.random.default_rng(5)
    traces = [(rng.integers(0, 4, size=n).astype(float), rng.random(n) < 0.5) for n in rng.integers(2, 6, size=40)]
    fast = stats.auc_ci(traces, n_resamples=3000, seed=1)
    loop = []
    for _ in range(3000):
        pick = rng.integers(0, len(traces), size=len(traces))
        loop.append(stats.roc_auc(np.concatenate([traces[i][0] for i in pick]),
                                  np.concatenate([traces[i][1] for i in pick])))
    lo, hi = stats.percentile_interval(np.array(loop))
    assert fast["ci_low"] == pytest.approx(lo, abs=0.02) and fast["ci_high"] == pytest.approx(hi, abs=0.02)
    assert fast["ci_low"] < fast["auc"] < fast["ci_high"]


def base_rows(diffs: dict):
    """Rows of modes "a" and "b" where a - b is ``diffs[base][problem]`` and b varies by problem."""
    return rows_of({(m, base, p): (10.0 * p) + (d if m == "a" else 0.0)
                    for base, per in diffs.items() for p, d in enumerate(per) for m in ("a", "b")})


def test_base_model_t_interval_by_hand():
    # base-model means of the paired differences: 1, 2, 3 -> mean 2, sd 1, se 1/sqrt(3); t(0.975, 2 df) = 4.302653
    rows = base_rows({0: [0.0, 2.0], 1: [1.0, 3.0], 2: [3.0, 3.0]})
    d = stats.base_model_difference(rows, "a", "b", "correct")
    half = 4.302653 / np.sqrt(3)
    assert d["diff"] == pytest.approx(2.0) and d["n_base"] == 3
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    # with 2 df the t distribution has a closed form: two-sided p = 1 - |t| / sqrt(t^2 + 2), t = 2 sqrt(3)
    t = 2 * np.sqrt(3)
    assert d["p_value"] == pytest.approx(1 - t / np.sqrt(t ** 2 + 2), abs=1e-9)
    # the problems within a base model do not narrow it: many problems, the same three base-model means
    wide = stats.base_model_difference(base_rows({b: [b + 1.0] * 40 for b in range(3)}), "a", "b", "correct")
    assert (wide["ci_low"], wide["ci_high"]) == pytest.approx((d["ci_low"], d["ci_high"]))
    one = stats.base_model_difference(base_rows({0: [1.0, 2.0]}), "a", "b", "correct")
    assert one["diff"] == 1.5 and np.isnan(one["ci_low"]) and np.isnan(one["p_value"])


def test_holm_by_hand():
    # sorted p 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> made monotone: 0.03, 0.06, 0.06
    reject, adjusted = stats.holm([0.01, 0.04, 0.03])
    assert reject == [True, False, False] and adjusted == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.001, 0.02], alpha=0.05) == ([True, True], pytest.approx([0.002, 0.02]))


def test_verdict_words():
    assert stats.verdict_word(-0.1, 0.3) == "not detected"
    assert stats.verdict_word(0.1, 0.3) == "higher" and stats.verdict_word(-0.3, -0.1) == "lower"
    assert stats.verdict_word(-0.02, 0.03, margin=0.05) == "equivalent within 0.05"
    assert stats.verdict_word(-0.02, 0.06, margin=0.05) == "not detected"  # the margin must hold all of it
    # a difference the interval detects stays detected inside the margin, and says it is inside
    assert stats.verdict_word(0.01, 0.02, margin=0.05) == "higher (within ±0.05)"
    assert stats.metric_word("mean_length", "lower (within ±3)") == "shorter (within ±3)"
    assert stats.verdict_word(float("nan"), float("nan")) == "not detected"


def test_family_verdicts_hold_for_the_family():
    # a - b: base means 1, 2, 3 (p 0.074: not detected); c - b: 1.0, 1.1, 0.9 (t = 17.3, p 0.0033, higher alone);
    # d - b: 0.0, 0.01, -0.01 (inside a margin of 0.1)
    per_mode = {"a": [1.0, 2.0, 3.0], "c": [1.0, 1.1, 0.9], "d": [0.0, 0.01, -0.01]}
    rows = rows_of({(m, base, p): 5.0 * p + (per_mode[m][base] if m in per_mode else 0.0)
                    for m in ("a", "b", "c", "d") for base in range(3) for p in range(4)})
    out = stats.family_verdicts(rows, [("a", "b"), ("c", "b"), ("d", "b")], "correct", margin=0.1)
    assert [d["verdict"] for d in out] == ["not detected", "higher", "equivalent within 0.1"]
    assert out[1]["p_holm"] == pytest.approx(min(1.0, 3 * out[1]["p_value"]))
    # d - b: mean 0, se 0.01 / sqrt(3); TOST p = the upper tail at t = 0.1 / se (both sides alike); Holm over three
    assert out[2]["p_tost"] == pytest.approx(upper_tail_2df(0.1 / (0.01 / np.sqrt(3))), rel=1e-6)
    assert out[2]["p_tost_holm"] == pytest.approx(3 * out[2]["p_tost"], rel=1e-6) and out[2]["p_tost_holm"] < 0.05
    # a fourth comparison with p a little under 0.05 is "higher" alone, but not after Holm over four
    per_mode["e"] = [0.65, 1.0, 1.35]  # t = 4.95, p = 0.038; Holm: 3 x 0.038 > 0.05
    rows = rows_of({(m, base, p): 5.0 * p + (per_mode[m][base] if m in per_mode else 0.0)
                    for m in ("a", "b", "c", "d", "e") for base in range(3) for p in range(4)})
    alone = stats.base_model_difference(rows, "e", "b", "correct")
    assert alone["ci_low"] > 0 and stats.verdict_word(alone["ci_low"], alone["ci_high"]) == "higher"
    out = stats.family_verdicts(rows, [("a", "b"), ("c", "b"), ("d", "b"), ("e", "b")], "correct")
    assert out[3]["verdict"] == "not detected" and out[1]["verdict"] == "higher"


def upper_tail_2df(t: float) -> float:
    """P(T > t) for Student's t with 2 degrees of freedom: (1 - t / sqrt(t^2 + 2)) / 2."""
    return (1 - t / np.sqrt(t * t + 2)) / 2


def family_rows(per_mode: dict) -> list[dict]:
    """Rows where ``mode`` minus "b" averages ``per_mode[mode][base]`` on each of 3 base models (4 problems)."""
    return rows_of({(m, base, p): 5.0 * p + (per_mode[m][base] if m in per_mode else 0.0)
                    for m in ("b", *per_mode) for base in range(3) for p in range(4)})


def test_equivalence_is_holm_corrected_and_a_detected_difference_stays_detected():
    # e - b: base means 0.05, 0.06, 0.07 (se 0.01 / sqrt 3); its 95% interval [0.035, 0.085] lies inside +-0.1, but
    # the difference is detected (t = 10.4, two-sided p 0.009): "higher", and inside the margin too (TOST p 0.010)
    # f - b: -0.035, 0, 0.035 (se 0.035 / sqrt 3): TOST p 0.019 alone, 0.058 after Holm over three
    # g - b: 1, 2, 3: neither detected nor equivalent (TOST p near 1)
    per_mode = {"e": [0.05, 0.06, 0.07], "f": [-0.035, 0.0, 0.035], "g": [1.0, 2.0, 3.0]}
    rows = family_rows(per_mode)
    se_e, se_f = 0.01 / np.sqrt(3), 0.035 / np.sqrt(3)
    p_e, tost_e, tost_f = 2 * upper_tail_2df(0.06 / se_e), upper_tail_2df(0.04 / se_e), upper_tail_2df(0.1 / se_f)
    assert (p_e, tost_e, tost_f) == pytest.approx((0.0092, 0.0101, 0.0192), abs=1e-4)
    e, f, g = stats.family_verdicts(rows, [("e", "b"), ("f", "b"), ("g", "b")], "correct", margin=0.1)
    assert (e["p_value"], e["p_tost"], f["p_tost"]) == pytest.approx((p_e, tost_e, tost_f), rel=1e-6)
    assert e["verdict"] == "higher (within ±0.1)" and e["p_holm"] == pytest.approx(3 * p_e, rel=1e-6)
    assert e["p_tost_holm"] == pytest.approx(3 * tost_e, rel=1e-6)
    # Holm steps down: 3 x 0.0101 = 0.030 rejects e's TOST, then 2 x 0.0192 = 0.038 rejects f's
    assert f["ci_low"] > -0.1 and f["ci_high"] < 0.1 and f["p_tost_holm"] == pytest.approx(2 * tost_f, rel=1e-6)
    assert f["verdict"] == "equivalent within 0.1" and g["verdict"] == "not detected"
    # without e's small TOST p in the family, f's stands first: 3 x 0.0192 = 0.058, not equivalent after all
    per_mode["h"] = [2.0, 3.0, 4.0]
    f, g, h = stats.family_verdicts(family_rows(per_mode), [("f", "b"), ("g", "b"), ("h", "b")], "correct",
                                    margin=0.1)
    assert f["p_tost_holm"] == pytest.approx(3 * tost_f, rel=1e-6) and f["verdict"] == "not detected"
    (alone,) = stats.family_verdicts(family_rows(per_mode), [("f", "b")], "correct", margin=0.1)
    assert alone["verdict"] == "equivalent within 0.1"  # alone, 0.0192 < 0.05
    # no margin: no TOST, and the words are the difference's alone
    (e,) = stats.family_verdicts(rows, [("e", "b")], "correct")
    assert e["verdict"] == "higher" and np.isnan(e["p_tost"]) and np.isnan(e["p_tost_holm"])


def test_no_spread_between_base_models_gives_no_interval():
    # 2 base models, each +0.005 on every problem (ties are common with one sample per problem): the t interval would
    # have width 0 and p = 0, "equivalent within 0.021" or "higher"; instead there is no interval, as with one base
    rows = [{**r, "accuracy": r["correct"]} for r in rows_of({(m, base, p): 0.1 * (p % 3) + 0.005 * (m == "a")
                                                               for m in ("a", "b", "c") for base in range(2)
                                                               for p in range(200)})]
    d = stats.base_model_difference(rows, "a", "b", "accuracy", margin=0.021)
    assert d["diff"] == pytest.approx(0.005) and d["n_base"] == 2
    assert all(np.isnan(d[k]) for k in ("ci_low", "ci_high", "p_value", "p_tost"))
    row, same = stats.family_verdicts(rows, [("a", "b"), ("c", "b")], "accuracy", margin=0.021)
    for r in (row, same):  # c - b is exactly 0 everywhere: not "equivalent" either
        assert r["verdict"] == "no interval (no spread between base models)"
        assert np.isnan(r["p_holm"]) and np.isnan(r["p_tost_holm"])
    # the verdict line gives the bootstrap interval over problems instead, as with one base model
    assert stats.describe_family_row(row, {"ci_low": 0.005, "ci_high": 0.005}) == (
        "accuracy +0.005: no interval (no spread between base models); over its problems [+0.005, +0.005]")


def test_family_verdicts_with_one_base_model_say_there_is_no_interval():
    rows = rows_of({(m, 0, p): 5.0 * p + (1.0 if m == "a" else 0.0) for m in ("a", "b") for p in range(4)})
    (row,) = stats.family_verdicts(rows, [("a", "b")], "correct", margin=10.0)
    assert row["diff"] == 1.0 and row["n_base"] == 1 and np.isnan(row["ci_low"]) and np.isnan(row["p_holm"])
    assert row["verdict"] == "no interval over base models (1 base model)"  # not "equivalent", not "higher"


def test_auc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    for n in (5, 40, 300):
        scores = rng.integers(0, 6, size=n).astype(float)  # six values: many ties
        labels = rng.random(n) < 0.3
        labels[:2] = [True, False]
        assert stats.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
