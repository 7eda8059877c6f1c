"""segkit.analysis on small inputs whose answers can be checked by hand, and on the tiny real-architecture model."""
import json
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from segkit import analysis  # noqa: E402
from segkit.outputs import missing_as_null  # noqa: E402
from segkit.attribute import attribute_record  # noqa: E402
from segkit.segment import segment  # noqa: E402

from conftest import SHORT  # noqa: E402


def rec(strength, consistency, lengths, roles=None, effect=None, rid="t"):
    """A hand-made attributed record: token attributions only matter through their counts here."""
    r = {"id": rid, "question": "q", "answer": "1", "segments": [f"s{i} " for i in range(len(strength))],
         "strength": strength, "consistency": consistency, "attributions": [[0.1] * n for n in lengths],
         "tokens": [[f"t{i}_{k}" for k in range(n)] for i, n in enumerate(lengths)]}
    if roles:
        r["segment_roles"] = roles
    if effect:
        r["removal_effect"] = effect
    return r


# strengths 0.6, 0.3, 0.1: tau 0.5 keeps segment 0; tau 0.9 keeps 0 and 1. Consistency 0.5, 0.9, 0.2.
HAND = rec([0.6, 0.3, 0.1], [0.5, 0.9, 0.2], [2, 3, 5], roles=["core", "repeat", "verify"],
           effect=[-2.0, 0.0, -1.0])


def test_strength_cdf_and_segments_needed():
    cdf = analysis.strength_cdf([rec([0.2, 0.5, 0.3], [1, 1, 1], [1, 1, 1], rid="a"),
                          rec([0.25, 0.25, 0.25, 0.25], [1] * 4, [1] * 4, rid="b")])
    a = cdf[cdf.trace == "a"]
    assert a["cumulative_strength"].round(6).tolist() == [0.5, 0.8, 1.0]  # strongest first
    assert a["segment_fraction"].round(6).tolist() == [round(1 / 3, 6), round(2 / 3, 6), 1.0]
    need = analysis.segments_needed(cdf, shares=(0.5, 0.7)).set_index("share").segment_fraction
    assert need[0.5] == pytest.approx((1 / 3 + 2 / 4) / 2)  # a: 1 of 3 segments; b: 2 of 4
    assert need[0.7] == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_precision_recall_by_hand():
    got = analysis.precision_recall([True, True, False, False], [True, False, True, False])
    assert (got["precision"], got["recall"], got["f1"]) == (0.5, 0.5, 0.5)
    none = analysis.precision_recall([False, False], [True, False])
    assert math.isnan(none["precision"]) and none["recall"] == 0 and none["f1"] == 0


def test_grid_table_by_hand():
    g = analysis.grid_table([HAND], taus=[0.5, 0.9], betas=[0.8, 1.0], always_keep=()).set_index(["tau", "beta"])
    # tau 0.5, beta 0.8: segment 0 only (2 of 10 tokens); gap = mean(0, -1) - (-2) = 1.5; P 1, R 1/2
    row = g.loc[(0.5, 0.8)]
    assert (row.segment_ratio, row.token_ratio) == pytest.approx((1 / 3, 0.2))
    assert row.confidence_gap == pytest.approx(1.5)
    assert (row.precision, row.recall, row.f1) == pytest.approx((1.0, 0.5, 2 / 3))
    # tau 0.9, beta 1.0: segments 0 and 1 (5 of 10 tokens); gap = -1 - mean(-2, 0) = 0; P 1/2, R 1/2
    row = g.loc[(0.9, 1.0)]
    assert (row.segment_ratio, row.token_ratio, row.confidence_gap) == pytest.approx((2 / 3, 0.5, 0.0))
    assert (row.precision, row.recall) == pytest.approx((0.5, 0.5))
    # tau 0.9, beta 0.8: segment 1 is strong but too consistent, so the same as tau 0.5
    assert g.loc[(0.9, 0.8)].segment_ratio == pytest.approx(1 / 3)


def test_always_kept_segments_do_not_steer_the_grid():
    """The last segment (the answer) is strong, consistent and costly to remove; it is trained whatever (tau, beta)
    is, so the grid scores only the segments in between."""
    r = rec([0.1, 0.3, 0.1, 0.05, 0.45], [0.5, 0.5, 0.2, 0.3, 0.95], [2] * 5,
            roles=["core", "core", "repeat", "verify", "final"], effect=[-1.0, -1.5, 0.0, -0.2, -5.0])
    assert analysis.selectable_segments(r) == [1, 2] and analysis.selectable_segments(r, ["first"]) == [1, 2, 3, 4]
    g = analysis.grid_table([r], taus=[0.8], betas=[0.8, 1.0]).set_index(["tau", "beta"])
    # tau 0.8 takes segments 4, 1, 0 (0.85 of the strength); beta 0.8 drops 4: either way only 1 and 2 are scored
    for beta in (0.8, 1.0):
        assert g.loc[(0.8, beta), "confidence_gap"] == pytest.approx(0.0 - (-1.5))
        assert (g.loc[(0.8, beta), "precision"], g.loc[(0.8, beta), "recall"]) == (1.0, 1.0)
    with_last = analysis.grid_table([r], taus=[0.8], betas=[0.8, 1.0], always_keep=()).set_index(["tau", "beta"])
    assert with_last.loc[(0.8, 1.0), "confidence_gap"] > with_last.loc[(0.8, 0.8), "confidence_gap"]


def test_choose_tau_beta_and_the_choice_file(tmp_path):
    g = analysis.grid_table([HAND], taus=[0.5, 0.9], betas=[0.8, 1.0], always_keep=())
    choice = analysis.choose_tau_beta(g)
    assert (choice["tau"], choice["beta"]) == (0.5, 0.8)  # gap 1.5; ties with (0.9, 0.8) go to tau 0.5 (first)
    assert analysis.choose_tau_beta(g, min_ratio=0.5)["beta"] == 1.0  # only the cells selecting 2 of 3 segments qualify
    with pytest.raises(ValueError, match="no grid cell"):
        analysis.choose_tau_beta(g, min_ratio=0.9)
    path = analysis.save_choice(choice, tmp_path / "sub" / "choice.json")
    assert analysis.load_choice(path)["tau"] == 0.5
    assert analysis.load_choice(tmp_path / "missing.json")["tau"] == 0.7  # the paper's default


def test_bleu_overlap_with_earlier_segments():
    segs = ["the sum is five", "\n\nWait, the sum is five", "\n\nAlternatively multiply seven by three"]
    got = analysis.bleu_overlap(segs)
    assert math.isnan(got[0])  # nothing before the first segment
    assert 0.5 < got[1] <= 1.0  # repeats the first segment (plus "Wait ,")
    assert got[2] == 0.0  # shares no word with the earlier segments
    assert analysis.bleu_overlap(["a b c d", "a b c d"])[1] == pytest.approx(1.0)


def test_segment_table_groups_and_roles():
    t = analysis.segment_table([HAND], tau=0.9, beta=0.8)
    assert t.important.tolist() == [True, False, False]
    assert t.group.tolist() == ["high strength, moderate consistency", "high strength, high consistency",
                                "low strength, moderate consistency"]
    assert t.useful.tolist() == [True, False, True]
    assert t.removal_effect.tolist() == [-2.0, 0.0, -1.0]
    by_group = analysis.removal_by_group(t).set_index("group")
    assert by_group.loc["high strength, moderate consistency", "mean"] == -2.0


def test_render_heatmap_shows_every_token_escaped():
    r = rec([0.6, 0.4], [0.5, 0.9], [2, 1], roles=["core", "final"])
    r["tokens"] = [["x", " <b>"], [" & y"]]
    r["attributions"] = [[0.5, -0.25], [0.1]]
    page = analysis.render_heatmap(r, tau=0.5, beta=0.8, scale_quantile=1.0)  # full colour at the largest |score|
    assert "&lt;b&gt;" in page and "&amp; y" in page and "<b>" not in page.replace("<b>trace", "")
    assert page.count("title='") == 3  # one hover score per token
    assert "title='-0.2500'" in page and "rgba(31, 119, 180, 0.500)" in page  # negative: blue, half the max
    assert "[0 core s=0.60 c=0.50 selected]" in page and "[1 final s=0.40 c=0.90]" in page


def test_summarise_modes_mean_and_std():
    import pandas as pd

    t = pd.DataFrame({"mode": ["full", "full", "selective"], "seed": [0, 1, 0], "accuracy": [0.2, 0.4, 0.5],
                      "mean_length": [10, 20, 30], "trained_token_fraction": [1.0, 1.0, 0.4]})
    s = analysis.summarise_modes(t).set_index("mode")
    assert s.loc["full", "accuracy_mean"] == pytest.approx(0.3)
    assert s.loc["full", "accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert s.loc["selective", "n_seeds"] == 1
    text = analysis.summarise_modes(t, as_text=True).set_index("mode")
    assert text.loc["full", "accuracy"] == "0.3 ± 0.14" and text.loc["selective", "accuracy"] == "0.5"


def test_precision_recall_by_method_matches_the_rule():
    recs = [HAND, rec([0.1, 0.7, 0.2], [0.3, 0.5, 0.9], [1, 1, 1], roles=["repeat", "core", "final"], rid="u")]
    pr = analysis.precision_recall_by_method(recs, ["selective", "random", "strength-only"], tau=0.5, beta=0.8,
                                      seeds=[0, 1], always_keep=()).set_index(["method", "seed"])
    # the IG rule at tau 0.5: segment 0 of HAND (core) and segment 1 of u (core): 2 of 3 useful segments
    assert pr.loc[("selective", 0), "precision"] == 1.0
    assert pr.loc[("selective", 0), "recall"] == pytest.approx(2 / 3)
    assert pr.loc[("random", 0), "n_selected"] == pr.loc[("random", 1), "n_selected"] == 2  # as many as IG
    assert ("selective", 1) not in pr.index  # deterministic methods run once


def test_plots_return_labelled_figures():
    import pandas as pd
    from matplotlib.figure import Figure

    recs = [HAND, {**HAND, "id": "t2", "strength": [0.2, 0.5, 0.3]}]
    for r in recs:
        r.update(segment_log_perplexity=[1.0, 2.0, 3.0], segment_entropy=[0.5, 0.6, 0.7], completeness_error=0.01,
                 ig_steps=8, n_tokens=10)
    table = analysis.segment_table(recs)
    grid = analysis.grid_table(recs, [0.5, 0.9], [0.8, 1.0], always_keep=())
    modes = pd.DataFrame({"mode": ["full", "selective"], "seed": [0, 0], "accuracy": [0.2, 0.3],
                          "mean_length": [10, 12], "trained_token_fraction": [1.0, 0.5]})
    figs = [analysis.plot_strength_consistency(table), analysis.plot_joint(table, beta=0.8),
            analysis.plot_strength_cdf(analysis.strength_cdf(recs)), analysis.plot_removal_effect(table),
            analysis.plot_segment_features(table), analysis.plot_completeness(analysis.completeness_table(recs)),
            analysis.plot_grid(grid, chosen=analysis.choose_tau_beta(grid)), analysis.plot_modes(modes),
            analysis.plot_precision_recall(analysis.precision_recall_by_method(recs, tau=0.5, always_keep=()))]
    for fig in figs:
        assert isinstance(fig, Figure)
        main = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel() and ax.get_ylabel()]
        assert main, f"no labelled axes in {fig.axes}"


def plain_log_prob(model, tokenizer, question, trace, answer):
    """log p(answer tokens) after prompt + trace + the answer string's head, by one ordinary forward pass over ids
    built here from the prompt module's text pieces (independent of segkit.attribute's assembly and target)."""
    import torch

    from segkit import prompt

    text, (a, b) = prompt.answer_text(answer)
    prompt_ids = prompt.encode(tokenizer, prompt.format_prompt(tokenizer, question))[0]
    trace_ids = prompt.encode(tokenizer, trace)[0]
    ans_ids, offsets = prompt.encode(tokenizer, text)
    ids = torch.tensor([prompt_ids + trace_ids + ans_ids])
    start = len(prompt_ids) + len(trace_ids)
    positions = [start + k for k, (s, e) in enumerate(offsets) if s < b and e > a]  # tokens overlapping the answer
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return float(sum(logp[t - 1, ids[0, t]] for t in positions))


def test_segment_removal_effect_on_the_tiny_model(tiny_model, smol_tokenizer):
    r = {**SHORT, "segments": segment(SHORT["solution"])}  # three segments
    effects = analysis.segment_removal_effect(tiny_model, smol_tokenizer, r)
    full = analysis.answer_log_prob(tiny_model, smol_tokenizer, r["question"], r["segments"], r["answer"])
    assert len(effects) == 3
    for i, e in enumerate(effects):
        rest = r["segments"][:i] + r["segments"][i + 1:]
        expected = plain_log_prob(tiny_model, smol_tokenizer, r["question"], "".join(rest), "7") - \
            plain_log_prob(tiny_model, smol_tokenizer, r["question"], r["solution"], "7")
        assert e == pytest.approx(expected, abs=1e-4)
        assert e != 0  # a real change in F, not a no-op
    # F is the attribution target: the same number as attribute_record's f_input
    attributed = attribute_record(tiny_model, smol_tokenizer, r, steps=2)
    assert full == pytest.approx(attributed["f_input"], rel=1e-5)
    # removing the only segment leaves nothing to condition on: missing (None: records are strict JSON), no error
    assert analysis.segment_removal_effect(tiny_model, smol_tokenizer, {**r, "segments": ["3 + 4 = 7."]}) == [None]


def test_auc_table_by_hand():
    # useful: core (strength 0.6, consistency 0.5), verify (0.1, 0.2); the rest: repeat (0.3, 0.9)
    hand = rec([0.6, 0.3, 0.1], [0.5, 0.9, 0.2], [2, 3, 5], roles=["core", "repeat", "verify"],
               effect=[-2.0, 0.0, -1.0])  # HAND afresh: another test adds fields to it
    t = analysis.auc_table([hand], variant="v", always_keep=(), n_resamples=50).set_index(["score", "role"])
    assert set(t.variant) == {"v"} and "perplexity" not in t.index.get_level_values(0)  # no such field: left out
    assert t.loc[("strength", "all"), "auc"] == 0.5          # 0.6 > 0.3, 0.1 < 0.3
    assert t.loc[("consistency", "all"), "auc"] == 0.0       # 0.5 < 0.9, 0.2 < 0.9
    assert t.loc[("paper rule", "all"), "auc"] == 1.0        # repeat's consistency 0.9 > beta 0.8 puts it last
    assert t.loc[("removal effect", "all"), "auc"] == 1.0    # removing core costs 2, verify 1, repeat 0
    assert (t.loc[("strength", "core"), "auc"], t.loc[("strength", "verify"), "auc"],
            t.loc[("strength", "repeat"), "auc"]) == (1.0, 0.0, 0.5)
    row = t.loc[("strength", "all")]
    assert (row.ci_low, row.ci_high, row.n_pos, row.n_neg) == (0.5, 0.5, 2, 1)  # one trace: every resample is it
    assert 0 <= t.loc[("random", "all"), "auc"] <= 1


def test_auc_table_leaves_out_the_always_kept_segments():
    five = rec([0.1, 0.4, 0.2, 0.2, 0.1], [0.5] * 5, [1] * 5, roles=["core", "core", "repeat", "truncated", "final"])
    t = analysis.auc_table([five], scores=["strength"], n_resamples=20).set_index("role")
    # first, second-to-last and last are always trained: segments 1 (core, 0.4) and 2 (repeat, 0.2) remain
    assert (t.loc["all", "n_pos"], t.loc["all", "n_neg"], t.loc["all", "auc"]) == (1, 1, 1.0)
    assert set(t.index) == {"all", "core", "repeat"}


def eval_records(correct, lengths):
    return [{"id": f"p{i}", "correct": [c], "n_tokens": [n]} for i, (c, n) in enumerate(zip(correct, lengths))]


def test_modes_and_differences_tables_by_hand():
    rows = (analysis.per_problem_rows(eval_records([1, 0, 1, 0], [10, 20, 30, 40]), "full")
            + analysis.per_problem_rows(eval_records([1, 1, 1, 0], [5, 15, 25, 35]), "oracle")
            + analysis.per_problem_rows(eval_records([True, False, True, False], [12, 22, 32, 42]), "selective"))
    modes = analysis.modes_table(rows, n_resamples=200).set_index("mode")
    assert modes.loc["full", "accuracy"] == 0.5 and modes.loc["oracle", "mean_length"] == 20.0
    assert modes.loc["oracle", "accuracy_ci_low"] <= 0.75 <= modes.loc["oracle", "accuracy_ci_high"]
    assert modes.loc["full", "n_problems"] == 4 and modes.loc["full", "n_ft_seeds"] == 1
    diffs = analysis.differences_table(rows, n_resamples=200).set_index(["mode", "vs", "metric"])
    # only pairs whose modes both ran: selective vs full and vs oracle, oracle vs full
    assert set(diffs.index.droplevel(2)) == {("selective", "full"), ("selective", "oracle"), ("oracle", "full")}
    # the oracle is 5 tokens shorter on every problem: the paired interval has no width
    assert tuple(diffs.loc[("oracle", "full", "mean_length")]) == (-5.0, -5.0, -5.0)
    assert tuple(diffs.loc[("selective", "full", "mean_length")]) == (2.0, 2.0, 2.0)
    assert diffs.loc[("oracle", "full", "accuracy"), "diff"] == 0.25
    head = analysis.finetuning_headline(rows, n_resamples=200)
    written = missing_as_null(head)  # what write_json writes: NaN as null
    assert json.loads(json.dumps(written, allow_nan=False)) == written
    # one base model: no interval over base models; each line says so and gives the interval over its problems
    assert head["verdict"] == analysis.verdict(diffs.reset_index(), head["family"])
    assert head["verdict"][0] == ("selective vs full: accuracy +0.000: no interval over base models (1 base model); "
                                  "over its problems [+0.000, +0.000]; mean length +2.0 tokens: no interval over "
                                  "base models (1 base model); over its problems [+2.0, +2.0] tokens")
    assert "This run has 1 base model, so there is no interval over base models" in head["intervals"]
    assert {"mode", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "mean_length"} <= set(head["modes"][0])
    assert {"mode": "oracle", "vs": "full", "metric": "mean_length", "diff": -5.0, "ci_low": -5.0,
            "ci_high": -5.0} in head["differences"]
    fig = analysis.plot_differences(diffs.reset_index())
    assert [ax.get_xlabel() for ax in fig.axes] == ["accuracy difference", "mean output length difference (tokens)"]
    lines = analysis.verdict(diffs.reset_index())  # without base-model rows: the bootstrap intervals
    assert lines[0] == ("selective vs full: accuracy +0.000 [+0.000, +0.000], not detected; mean length +2.0 "
                        "[+2.0, +2.0] tokens, longer")
    assert lines[-1] == ("oracle vs full: accuracy +0.250 [+0.000, +0.750], not detected; mean length -5.0 "
                         "[-5.0, -5.0] tokens, shorter")


def three_base_rows():
    """3 base models x 4 problems. Accuracy: selective - full averages 0, 0.25, 0.5 over each base model's problems
    (+-0.05 by problem), oracle - full 0.4, 0.5, 0.6. Length: selective - full -10, -12, -14, oracle - full -30."""
    rows = []
    for b in range(3):
        for p in range(4):
            acc, length, wobble = 0.1 * p, 100.0 + 10 * p, 0.05 if p % 2 else -0.05
            for mode, a, n in (("full", acc, length), ("selective", acc + 0.25 * b + wobble, length - 10 - 2 * b),
                               ("oracle", acc + 0.4 + 0.1 * b, length - 30)):
                rows.append({"problem": f"p{p}", "base_seed": b, "ft_seed": 0, "mode": mode, "accuracy": a,
                             "mean_length": n, "gold": "4" if p < 2 else str(p)})
    return rows


def t_by_hand(means):
    """Mean, 95% t half-width and two-sided p of three base-model means (2 df: p = 1 - |t| / sqrt(t^2 + 2))."""
    mean, se = sum(means) / 3, (sum((m - sum(means) / 3) ** 2 for m in means) / 2) ** 0.5 / 3 ** 0.5
    t = mean / se
    return mean, 4.302653 * se, 1 - abs(t) / (t * t + 2) ** 0.5


def test_headline_family_and_verdict_lines_by_hand():
    head = analysis.finetuning_headline(three_base_rows(), n_resamples=100)
    fam = {(f["mode"], f["vs"], f["metric"]): f for f in head["family"]}
    assert list(fam) == [(m, v, k) for k in ("accuracy", "mean_length")
                         for m, v in (("selective", "full"), ("selective", "oracle"), ("oracle", "full"))]
    # accuracy: one Holm family of three; p 0.225 (selective - full), 0.102 (selective - oracle), 0.013 (oracle)
    sel, half_sel, p_sel = t_by_hand([0.0, 0.25, 0.5])
    ora, half_ora, p_ora = t_by_hand([0.4, 0.5, 0.6])
    _, half_so, p_so = t_by_hand([-0.4, -0.25, -0.1])
    f = fam["selective", "full", "accuracy"]
    assert (f["diff"], f["ci_low"], f["ci_high"]) == pytest.approx((sel, sel - half_sel, sel + half_sel), abs=1e-5)
    assert f["n_base"] == 3 and f["p_value"] == pytest.approx(p_sel, abs=1e-6) and f["verdict"] == "not detected"
    # Holm: 3 x 0.013 = 0.039 rejects; 2 x 0.102 and then max(0.204, 0.225) do not
    assert fam["oracle", "full", "accuracy"]["p_holm"] == pytest.approx(3 * p_ora, abs=1e-6)
    assert fam["oracle", "full", "accuracy"]["verdict"] == "higher" and ora - half_ora > 0.021  # beyond the margin
    assert fam["selective", "oracle", "accuracy"]["p_holm"] == pytest.approx(2 * p_so, abs=1e-6)
    assert f["p_holm"] == pytest.approx(p_sel, abs=1e-6)
    # length: every base model's oracle is 30 shorter: no spread between base models, so no interval and no p (it
    # enters Holm as 1), not a zero-width interval with p 0
    ora_len = fam["oracle", "full", "mean_length"]
    assert all(math.isnan(ora_len[k]) for k in ("ci_low", "ci_high", "p_value", "p_holm"))
    assert ora_len["verdict"] == "no interval (no spread between base models)"
    length, half_len, p_len = t_by_hand([-10.0, -12.0, -14.0])
    _, _, p_len_so = t_by_hand([20.0, 18.0, 16.0])
    g = fam["selective", "full", "mean_length"]  # Holm: 3 x 0.0041 (selective - oracle), then 2 x 0.0092
    assert g["p_holm"] == pytest.approx(max(2 * p_len, 3 * p_len_so), abs=1e-6) and g["verdict"] == "lower"
    assert math.isnan(g["p_tost"]) and math.isnan(g["p_tost_holm"])  # no length margin: no equivalence test
    assert head["verdict"] == [
        f"selective vs full: accuracy +0.250 [{sel - half_sel:+.3f}, {sel + half_sel:+.3f}] (t over 3 base models, "
        f"Holm p = {p_sel:.2g}): not detected; mean length -12.0 [{length - half_len:+.1f}, {length + half_len:+.1f}] "
        f"tokens (t over 3 base models, Holm p = {g['p_holm']:.2g}): shorter",
        head["verdict"][1],
        f"oracle vs full: accuracy +0.500 [{ora - half_ora:+.3f}, {ora + half_ora:+.3f}] (t over 3 base models, "
        f"Holm p = {3 * p_ora:.2g}): higher; mean length -30.0 tokens: no interval (no spread between base models); "
        "over its problems [-30.0, -30.0] tokens"]
    assert head["verdict"][0].startswith("selective vs full: accuracy +0.250 [-0.371, +0.871]")
    # the bootstrap differences stay under their key, narrower than the t interval over three base models
    boot = {(d["mode"], d["vs"], d["metric"]): d for d in head["differences"]}["selective", "full", "accuracy"]
    assert boot["ci_high"] - boot["ci_low"] < f["ci_high"] - f["ci_low"]
    assert "t intervals over the base models" in head["intervals"] and "accuracy +-0.021" in head["intervals"]
    assert "(unadjusted); a difference is called only where its Holm-adjusted p < 0.05" in head["intervals"]
    assert "90% t interval lies inside +-M" in head["intervals"] and "Holm-corrected" not in head["intervals"]
    # the resolution reads the verdict's t intervals (median half-width of the three accuracy comparisons)
    assert head["resolution"]["half_width"] == pytest.approx(sorted([half_sel, half_so, half_ora])[1], abs=1e-5)
    assert "95% t intervals over 3 base models" in head["resolution"]["sentence"]
    assert head["margins"] == {"accuracy": 0.021}
    # guesses: gold answers 4, 4, 2, 3 on the four problems (each counted once over modes and base models)
    assert (head["constant_guess"], head["uniform_guess"]) == (0.5, pytest.approx(1 / 3))


def test_equivalence_is_said_only_within_the_stated_margin():
    rows = [r for r in three_base_rows() if r["mode"] != "oracle"]
    tight = [{**r, "accuracy": r["accuracy"] - (0.25 * r["base_seed"] - 0.001 * r["base_seed"])
              * (r["mode"] == "selective")} for r in rows]  # selective - full: -0.05/+0.05 by problem, 0, .001, .002
    (acc, _) = analysis.family_table(tight).to_dict("records")
    assert acc["ci_high"] < 0.021 and acc["ci_low"] > -0.021 and acc["verdict"] == "equivalent within 0.021"
    (acc, _) = analysis.family_table(tight, margins={}).to_dict("records")
    assert acc["verdict"] == "not detected"  # no margin stated: an interval around 0 is not detected


def test_guesses_by_hand():
    records = [{"id": "a", "gold": "4"}, {"id": "b", "gold": " 4"}, {"id": "c", "gold": "7"}, {"id": "d", "gold": "9"}]
    assert analysis.guesses(records) == {"constant_guess": 0.5, "uniform_guess": 1 / 3, "n_problems": 4}
    rows = analysis.per_problem_rows([{**r, "correct": [1], "n_tokens": [3]} for r in records], "full")
    assert analysis.guesses(rows + rows) == analysis.guesses(records)  # rows carry the gold; each problem once
    assert analysis.guesses([{"problem": "a"}])["constant_guess"] is None
    text = analysis.describe_guesses(analysis.guesses(records))
    assert "on the 4 evaluated problems: 0.500 always answering" in text and "0.333 answering one" in text


def test_forest_plot_one_point_per_comparison_with_its_holm_verdict():
    head = analysis.finetuning_headline(three_base_rows(), n_resamples=50)
    fig = analysis.plot_forest(head["family"], head["margins"])
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["accuracy difference",
                                                        "mean output length difference (tokens)"]
    for ax, words in zip(fig.axes, (["not detected", "not detected", "higher"], ["shorter", "longer", "no interval"])):
        points = [line for line in ax.lines if line.get_marker() == "o"]
        assert len(points) == 3  # selective - full, selective - oracle, oracle - full
        assert [t.get_text().split(" (")[0] for t in ax.texts] == words
        assert [t.get_text() for t in ax.get_yticklabels()] == ["selective - full", "selective - oracle",
                                                               "oracle - full"]
    title = fig._suptitle.get_text()
    assert "3 base models, unadjusted; called where Holm-adjusted p < 0.05" in title and "Holm per metric" not in title


def test_forest_plot_of_bootstrap_rows_styles_each_point_by_its_interval():
    diffs = [{"mode": "selective", "vs": "full", "metric": "accuracy", "diff": 0.01, "ci_low": -0.02, "ci_high": 0.04},
             {"mode": "oracle", "vs": "full", "metric": "accuracy", "diff": 0.3, "ci_low": 0.2, "ci_high": 0.4},
             {"mode": "random", "vs": "full", "metric": "accuracy", "diff": 0.0, "ci_low": None, "ci_high": None}]
    fig = analysis.plot_forest(diffs)  # no verdict column: an older headline file, or differences_table's rows
    (ax,) = fig.axes
    faces = [line.get_markerfacecolor() for line in ax.lines if line.get_marker() == "o"]
    assert faces == ["white", "k", "white"]  # only the interval that excludes 0 is drawn as detected
    assert fig._suptitle.get_text() == "Paired differences between modes (95% two-level bootstrap intervals)"
    # a row without an interval borrows none from a bootstrap row whose bounds are null (JSON) either
    fam = [{**d, "verdict": "no interval over base models (1 base model)", "p_holm": None, "n_base": 1}
           for d in diffs[2:]]
    alone = analysis.plot_forest(fam, bootstrap=diffs)
    assert len(alone.axes[0].collections) == 0


def test_forest_plot_with_one_base_model_borrows_the_bootstrap_interval():
    rows = [r for r in three_base_rows() if r["base_seed"] == 0]
    head = analysis.finetuning_headline(rows, n_resamples=50)
    alone = analysis.plot_forest(head["family"])  # no interval over one base model: bare points
    assert all(len(ax.collections) == 0 for ax in alone.axes)  # errorbar draws its bars as line collections
    fig = analysis.plot_forest(head["family"], bootstrap=head["differences"])
    assert all(len([c for c in ax.collections if c.get_linestyle()[0][1] is not None]) == 3 for ax in fig.axes)
    assert {t.get_text() for ax in fig.axes for t in ax.texts} == {"over problems only"}
    assert "one base model" in fig._suptitle.get_text()


def test_confidence_gap_spread_agrees_with_the_grid_and_keeps_the_paper_on_noise():
    recs = [rec([0.6, 0.3, 0.1], [0.5, 0.9, 0.2], [2, 3, 5], effect=[-2.0, 0.0, -1.0], rid="a"),
            rec([0.5, 0.4, 0.1], [0.5, 0.5, 0.9], [2, 2, 2], effect=[-1.0, -1.0, 0.5], rid="b")]
    taus, betas = [0.5, 0.7, 0.9], [0.6, 0.8, 1.0]
    spread = analysis.confidence_gap_spread(recs, taus, betas, always_keep=(), n_resamples=300).set_index(
        ["tau", "beta"])
    grid = analysis.grid_table(recs, taus, betas, always_keep=()).set_index(["tau", "beta"])
    # the point estimates are grid_table's pooled gaps, computed another way
    assert spread.confidence_gap.to_numpy() == pytest.approx(grid.confidence_gap.to_numpy(), nan_ok=True)
    assert spread.segment_ratio.to_numpy() == pytest.approx(grid.segment_ratio.to_numpy())
    assert (spread.loc[(0.7, 0.8), ["vs_default", "vs_default_ci_low", "vs_default_ci_high"]] == 0).all()
    # two traces cannot show any cell beyond the spread: the paper's values are kept, and the reason says so
    choice = analysis.choose_tau_beta_on_signal(spread.reset_index())
    assert (choice["tau"], choice["beta"]) == (0.7, 0.8) and "kept" in choice["reason"]


def test_choose_on_signal_takes_a_cell_that_beats_the_default_everywhere():
    # 30 identical traces: selecting the strong segment (tau 0.5) has gap 0 - (-2) = 2 in every resample; tau 0.7
    # also takes the middle segment, whose removal costs nothing: gap 0 - (-2 + 0) / 2 = 1
    recs = [rec([0.6, 0.3, 0.1], [0.5, 0.5, 0.5], [1, 1, 1], effect=[-2.0, 0.0, 0.0], rid=str(i)) for i in range(30)]
    spread = analysis.confidence_gap_spread(recs, [0.5, 0.7], [0.8], always_keep=(), n_resamples=100)
    choice = analysis.choose_tau_beta_on_signal(spread)
    assert (choice["tau"], choice["beta"]) == (0.5, 0.8) and choice["reason"].endswith("chosen.")
    assert choice["confidence_gap"] == pytest.approx(2.0) and choice["ci_low"] == pytest.approx(2.0)
    assert choice["vs_default"] == pytest.approx(1.0)


def test_resolution_compares_the_interval_width_with_the_papers_difference():
    diffs = [{"metric": "accuracy", "ci_low": -0.05, "ci_high": 0.05}, {"metric": "accuracy", "ci_low": 0.0,
                                                                       "ci_high": 0.02},
             {"metric": "accuracy", "ci_low": -0.01, "ci_high": 0.01}, {"metric": "mean_length", "ci_low": -9,
                                                                       "ci_high": 9}]
    r = analysis.resolution(diffs)  # half-widths 0.05, 0.01, 0.01 -> median 0.01 < 0.021
    assert r["half_width"] == pytest.approx(0.01) and r["resolvable"] and "would be resolved" in r["sentence"]
    wide = analysis.resolution(diffs[:1])
    assert wide["half_width"] == pytest.approx(0.05) and not wide["resolvable"] and "cannot" in wide["sentence"]
    assert analysis.resolution(diffs, metric="pass@k")["half_width"] is None
    assert "two-level bootstrap intervals (no base-model intervals were given" in r["sentence"]


def test_resolution_reads_the_t_intervals_over_base_models_where_there_are_any():
    boot = [{"metric": "accuracy", "ci_low": -0.01, "ci_high": 0.01}]  # the bootstrap: too narrow, +-0.01
    fam = [{"metric": "accuracy", "n_base": 3, "ci_low": -0.06, "ci_high": 0.04},
           {"metric": "accuracy", "n_base": 3, "ci_low": float("nan"), "ci_high": float("nan")},  # no spread
           {"metric": "mean_length", "n_base": 3, "ci_low": -9.0, "ci_high": 9.0}]
    r = analysis.resolution(boot, family=fam)
    assert r["half_width"] == pytest.approx(0.05) and not r["resolvable"]
    assert "95% t intervals over 3 base models of +-0.050" in r["sentence"]
    one = analysis.resolution(boot, family=[{"metric": "accuracy", "n_base": 1, "ci_low": None, "ci_high": None}])
    assert one["half_width"] == pytest.approx(0.01) and one["resolvable"]
    assert "bootstrap intervals (with 1 base model there is no t interval over base models" in one["sentence"]


def test_per_problem_results_read_every_model_of_a_compare_modes_table(tmp_path):
    import pandas as pd

    from segkit.records import dump

    files = {}
    for name, correct, lengths in (("b0", [1, 0], [10, 20]), ("b1", [0, 0], [30, 40]), ("f0", [1, 1], [5, 6])):
        files[name] = tmp_path / f"{name}.jsonl"
        dump(eval_records(correct, lengths), files[name])
    table = pd.DataFrame([
        {"base_seed": 0, "mode": "base", "seed": None, "benchmark": "test", "file": str(files["b0"]),
         "trained_token_fraction": 0.0},
        {"base_seed": 1, "mode": "base", "seed": None, "benchmark": "test", "file": str(files["b1"]),
         "trained_token_fraction": 0.0},
        {"base_seed": 0, "mode": "full", "seed": 2, "benchmark": "test", "file": str(files["f0"]),
         "trained_token_fraction": 1.0}])
    rows = analysis.per_problem_results(table)
    assert [(r["mode"], r["base_seed"], r["ft_seed"], r["problem"], r["accuracy"], r["mean_length"]) for r in rows] == [
        ("base", 0, 0, "p0", 1.0, 10), ("base", 0, 0, "p1", 0.0, 20), ("base", 1, 0, "p0", 0.0, 30),
        ("base", 1, 0, "p1", 0.0, 40), ("full", 0, 2, "p0", 1.0, 5), ("full", 0, 2, "p1", 1.0, 6)]
    head = analysis.finetuning_headline(rows[:4], n_resamples=50, results=table)
    assert head["modes"][0]["mode"] == "base" and head["modes"][0]["n_base_seeds"] == 2
    assert head["modes"][0]["mean_length"] == 25.0 and head["modes"][0]["trained_token_fraction"] == 0.0


def test_fig2_ordering_is_claimed_only_where_its_interval_says_so():
    """The sentence under 01's removal table: the paper's ordering (strong moderate-consistency segments cost more
    confidence than strong consistent ones) only when the traces' interval lies below 0; the reverse above;
    otherwise not detected; and no claim without both groups."""
    import pandas as pd

    moderate, high = analysis.GROUPS[:2]

    def table(effect_moderate, effect_high, n=30):
        return pd.DataFrame([{"trace": t, "group": g, "removal_effect": e + 0.01 * (t % 3)}
                             for t in range(n) for g, e in ((moderate, effect_moderate), (high, effect_high))])
    assert analysis.fig2_ordering(table(-0.6, -0.2)).endswith(": the paper's ordering.")
    assert analysis.fig2_ordering(table(-0.2, -0.6)).endswith(": the reverse of the paper's ordering.")
    noisy = pd.DataFrame([{"trace": t, "group": g, "removal_effect": (-1) ** (t + i) * 0.5}
                          for t in range(30) for i, g in enumerate((moderate, high))])
    assert analysis.fig2_ordering(noisy).endswith(": an ordering is not detected.")
    assert "cannot be checked" in analysis.fig2_ordering(table(-0.6, -0.2)[lambda d: d.group == moderate])
