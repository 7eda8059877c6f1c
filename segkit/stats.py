"""Intervals and verdicts: percentile bootstrap over problems (and base models), ROC-AUC, one generated sentence.

Evaluation results come as rows ``{"problem", "base_seed", "ft_seed", "mode", <metric>: value}``: one row per
problem, base model and fine-tuning seed. Fine-tuning seeds are averaged per (base model, problem); the bootstrap
then resamples base models and, within each, problems (a two-level bootstrap), so an interval covers the problems
drawn, the fine-tuning seeds and the base model. With one base model it is the ordinary bootstrap over problems.
Comparisons are paired: a difference is taken per (base model, problem) before resampling, so what two modes share
(the problem's difficulty, the base model) cancels. Where the claim is about base models (does a method help a base
model?), ``base_model_difference`` takes the base model as the unit (a t interval over base-model means, and a TOST
p-value against an equivalence margin), ``holm`` corrects a family of such comparisons, ``family_verdicts`` words
each comparison from its Holm-adjusted p-values (``verdict_word`` words a single interval), and ``verdict`` writes
one line per comparison from those words.

    >>> rows = [{"problem": p, "mode": m, "length": 40 + p - 10 * (m == "oracle")}
    ...         for p in range(20) for m in ("full", "oracle")]
    >>> mean_ci(rows, "full", "length")        # the problems differ: a wide interval
    {'mean': 49.5, 'ci_low': 46.9, 'ci_high': 51.9}
    >>> paired_difference(rows, "oracle", "full", "length")   # 10 shorter on every problem: no width
    {'diff': -10.0, 'ci_low': -10.0, 'ci_high': -10.0}
    >>> roc_auc([0.9, 0.1, 0.5], [True, False, True])
    1.0
    >>> verdict_word(-0.01, 0.02, margin=0.05), verdict_word(0.01, 0.02), verdict_word(0.01, 0.02, margin=0.05)
    ('equivalent within 0.05', 'higher', 'higher (within ±0.05)')
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

N_RESAMPLES = 2000
LEVEL = 0.95


def percentile_interval(estimates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` share of bootstrap estimates (the percentile interval)."""
    lo, hi = np.percentile(estimates, [50 - 50 * level, 50 + 50 * level])  # exactly [2.5, 97.5] at 95%
    return float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float], n_resamples: int = N_RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)`` of the mean of ``values`` (one per problem), resampling values with
    replacement ``n_resamples`` times with a seeded generator (same input, same interval)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values to bootstrap")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_resamples, v.size))
    return (float(v.mean()), *percentile_interval(v[idx].mean(axis=1), level))


def hierarchical_resample_means(matrix: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """The ``(n_resamples,)`` bootstrap means of ``matrix`` of shape (base models, problems): each resample draws
    base models with replacement, then, for each drawn base model, problems with replacement. The draws depend only
    on the shape and ``seed``, so matrices of one shape resampled with one seed are resampled alike (a ratio of two
    means can be read per resample)."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"need a non-empty (base models, problems) matrix, got shape {m.shape}")
    n_base, n_prob = m.shape
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, n_base, size=(n_resamples, n_base))               # (R, B)
    problems = rng.integers(0, n_prob, size=(n_resamples, n_base, n_prob))    # (R, B, P)
    return m[bases[:, :, None], problems].mean(axis=(1, 2))                   # (R,)


def hierarchical_mean_ci(matrix: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                         level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)`` for ``matrix`` of shape (base models, problems), by the two-level bootstrap
    (``hierarchical_resample_means``)."""
    estimates = hierarchical_resample_means(matrix, n_resamples, seed)
    return (float(np.mean(matrix)), *percentile_interval(estimates, level))


def per_problem_matrix(rows: Iterable[dict], mode: str, metric: str) -> tuple[np.ndarray, list, list]:
    """``(matrix, base_seeds, problems)``: ``metric`` of ``mode`` averaged over fine-tuning seeds, one row per base
    seed and one column per problem (sorted). Every base seed must have every problem."""
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r["mode"] == mode:
            cells.setdefault((r.get("base_seed", 0), r["problem"]), []).append(float(r[metric]))
    if not cells:
        raise ValueError(f"no rows for mode {mode!r}")
    bases = sorted({b for b, _ in cells})
    problems = sorted({p for _, p in cells})
    missing = [(b, p) for b in bases for p in problems if (b, p) not in cells]
    if missing:
        raise ValueError(f"mode {mode!r}: no result for (base seed, problem) {missing[0]} ({len(missing)} missing)")
    return np.array([[np.mean(cells[b, p]) for p in problems] for b in bases]), bases, problems


def mean_ci(rows: Sequence[dict], mode: str, metric: str, n_resamples: int = N_RESAMPLES, seed: int = 0,
            level: float = LEVEL) -> dict:
    """``{"mean", "ci_low", "ci_high"}`` of ``metric`` for ``mode``, by the two-level bootstrap."""
    m, _, _ = per_problem_matrix(rows, mode, metric)
    mean, lo, hi = hierarchical_mean_ci(m, n_resamples, seed, level)
    return {"mean": mean, "ci_low": lo, "ci_high": hi}


def difference_matrix(rows: Sequence[dict], mode: str, vs: str, metric: str) -> np.ndarray:
    """``mode`` minus ``vs`` on ``metric`` per (base seed, problem) (``per_problem_matrix``); both modes must cover
    the same base seeds and problems."""
    a, bases_a, probs_a = per_problem_matrix(rows, mode, metric)
    b, bases_b, probs_b = per_problem_matrix(rows, vs, metric)
    if bases_a != bases_b or probs_a != probs_b:
        raise ValueError(f"{mode!r} and {vs!r} were not evaluated on the same base seeds and problems")
    return a - b


def paired_difference(rows: Sequence[dict], mode: str, vs: str, metric: str, n_resamples: int = N_RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> dict:
    """``{"diff", "ci_low", "ci_high"}``: ``mode`` minus ``vs`` on ``metric``, differenced per (base seed,
    problem) and bootstrapped at both levels. Both modes must cover the same base seeds and problems."""
    diff, lo, hi = hierarchical_mean_ci(difference_matrix(rows, mode, vs, metric), n_resamples, seed, level)
    return {"diff": diff, "ci_low": lo, "ci_high": hi}


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The probability that a random positive scores above a random negative, ties counting one half
    (Mann-Whitney U / (n_pos n_neg), from midranks). NaN when one class is empty."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # midranks: tied scores share the mean of the ranks they occupy
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auc_ci(traces: Sequence[tuple[Sequence[float], Sequence[bool]]], n_resamples: int = N_RESAMPLES, seed: int = 0,
           level: float = LEVEL) -> dict:
    """``{"auc", "ci_low", "ci_high", "n_pos", "n_neg"}`` over segments pooled from ``traces`` (each a pair of
    per-segment scores and labels); the bootstrap resamples whole traces, since segments of one trace are not
    independent. Resamples with a single class are dropped.

    All resamples at once: a resample weights each segment by how often its trace was drawn, and the weighted
    Mann-Whitney count is read off cumulative sums over the segments sorted by score (ties count one half)."""
    auc, estimates, labels = auc_resamples(traces, n_resamples, seed)
    estimates = estimates[~np.isnan(estimates)]
    lo, hi = percentile_interval(estimates, level) if estimates.size else (float("nan"), float("nan"))
    return {"auc": auc, "ci_low": lo, "ci_high": hi, "n_pos": int(labels.sum()), "n_neg": int((~labels).sum())}


def auc_resamples(traces: Sequence[tuple[Sequence[float], Sequence[bool]]], n_resamples: int = N_RESAMPLES,
                  seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """``(pooled AUC, (n_resamples,) bootstrap AUCs, pooled labels)`` for ``auc_ci``; a resample with a single class
    is NaN. The draws depend only on the number of traces and ``seed``, so two scores of the same traces are
    resampled alike and their AUCs can be differenced per resample (a paired interval)."""
    if not traces:
        raise ValueError("no traces")
    scores = np.concatenate([np.asarray(s, dtype=float) for s, _ in traces])
    labels = np.concatenate([np.asarray(y, dtype=bool) for _, y in traces])
    trace_of = np.repeat(np.arange(len(traces)), [len(s) for s, _ in traces])
    auc = roc_auc(scores, labels)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(traces), np.full(len(traces), 1 / len(traces)), size=n_resamples)  # (R, traces)
    order = np.argsort(scores, kind="mergesort")
    weights = draws[:, trace_of[order]].astype(float)                                               # (R, N)
    pos, neg = weights * labels[order], weights * ~labels[order]
    starts = np.flatnonzero(np.r_[True, np.diff(scores[order]) != 0])                               # tie groups
    pos_g, neg_g = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)       # (R, groups)
    below = np.cumsum(neg_g, axis=1) - neg_g
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample with one class: 0 / 0, NaN
        estimates = (pos_g * (below + 0.5 * neg_g)).sum(axis=1) / np.where(pairs > 0, pairs, np.nan)
    return auc, estimates, labels


# how a difference reads: the word when the interval lies above or below zero, per metric
DIRECTION = {"accuracy": ("higher", "lower"), "mean_length": ("longer", "shorter")}
UNITS = {"accuracy": "", "mean_length": " tokens"}


def missing(x) -> bool:
    """Whether ``x`` is absent: None (null in JSON) or NaN."""
    return x is None or x != x


def _fmt(metric: str, x: float) -> str:
    return ("{:+.3f}" if metric == "accuracy" else "{:+.1f}").format(x)


def metric_word(metric: str, word: str) -> str:
    """``verdict_word``'s ``"higher"``/``"lower"`` in ``metric``'s terms (``"longer"``/``"shorter"`` for length),
    also where a note follows (``"higher (within ±0.02)"``)."""
    up, down = DIRECTION.get(metric, ("higher", "lower"))
    head, sep, rest = str(word).partition(" ")
    return {"higher": up, "lower": down}.get(head, head) + sep + rest


def describe_difference(d: dict) -> str:
    """``"accuracy +0.030 [-0.010, +0.070], not detected"`` for one row of a differences table (the word from
    ``verdict_word``, no margin)."""
    metric = d["metric"]
    if any(d[k] != d[k] for k in ("diff", "ci_low", "ci_high")):  # NaN: a difference over nothing
        return f"{metric.replace('_', ' ')} missing (nothing to compare)"
    word = metric_word(metric, verdict_word(d["ci_low"], d["ci_high"]))
    return (f"{metric.replace('_', ' ')} {_fmt(metric, d['diff'])} [{_fmt(metric, d['ci_low'])}, "
            f"{_fmt(metric, d['ci_high'])}]{UNITS.get(metric, '')}, {word}")


def describe_family_row(f: dict, bootstrap: dict | None = None) -> str:
    """One metric of a comparison by its base-model row ``f`` (``family_verdicts``), e.g. ``"accuracy +0.010
    [-0.020, +0.040] (t over 5 base models, Holm p = 0.9): not detected"`` (the interval unadjusted, the p and word
    Holm-adjusted; where the word speaks of the margin, the Holm-adjusted TOST p too). Without such an interval
    (fewer than 2 base models, or no spread between them) the line says so and gives the ``bootstrap`` row's
    interval over problems (if given)."""
    metric, name, units = f["metric"], f["metric"].replace("_", " "), UNITS.get(f["metric"], "")
    if f["n_base"] < 2 or missing(f["ci_low"]):
        over = "" if bootstrap is None or missing(bootstrap["ci_low"]) else (
            f"; over its problems [{_fmt(metric, bootstrap['ci_low'])}, {_fmt(metric, bootstrap['ci_high'])}]{units}")
        return f"{name} {_fmt(metric, f['diff'])}{units}: {f['verdict']}{over}"
    word, tost = f["verdict"], f.get("p_tost_holm")
    also = f", Holm TOST p = {tost:.2g}" if "within" in word and not missing(tost) else ""
    return (f"{name} {_fmt(metric, f['diff'])} [{_fmt(metric, f['ci_low'])}, {_fmt(metric, f['ci_high'])}]{units} "
            f"(t over {f['n_base']} base models, Holm p = {f['p_holm']:.2g}{also}): {metric_word(metric, word)}")


def verdict(differences: Sequence[dict], family: Sequence[dict] | None = None) -> list[str]:
    """One line per comparison ``(mode, vs)``, in the order of ``differences`` (rows ``{"mode", "vs", "metric",
    "diff", "ci_low", "ci_high"}``), its metrics joined by "; ". Where the base-model rows ``family``
    (``family_verdicts``) are given they lead (``describe_family_row``), else the bootstrap rows
    (``describe_difference``), e.g. ``"selective vs full: accuracy +0.030 [-0.010, +0.070], not detected; mean
    length -12.0 [-18.0, -6.0] tokens, shorter"``. The words come from where each interval lies."""
    by_pair: dict[tuple, list[dict]] = {}
    for d in differences:
        by_pair.setdefault((d["mode"], d["vs"]), []).append(d)
    rows = {(f["mode"], f["vs"], f["metric"]): f for f in family or ()}
    return [f"{mode} vs {vs}: " + "; ".join(
        describe_family_row(rows[mode, vs, d["metric"]], d) if (mode, vs, d["metric"]) in rows
        else describe_difference(d) for d in ds) for (mode, vs), ds in by_pair.items()]


# Comparisons whose unit is the base model. The two-level bootstrap above resamples base models, but with the 2-5
# base models a run trains, a percentile interval has few distinct resamples to draw on and no small-sample
# correction, so it comes out too narrow. The t interval over base-model means (B - 1 degrees of freedom) is the
# textbook interval for the mean of B cluster means: wide when B is small, as the evidence is. Problems enter
# through each base model's mean, so their number narrows nothing beyond what the base models agree on.
# scipy.stats and statsmodels are imported on use: each takes most of a second to import.

def base_model_difference(rows: Sequence[dict], mode: str, vs: str, metric: str, level: float = LEVEL,
                          margin: float | None = None) -> dict:
    """``{"diff", "ci_low", "ci_high", "p_value", "p_tost", "n_base"}``: ``mode`` minus ``vs`` on ``metric``,
    differenced per (base seed, problem), averaged over problems per base model, then a t interval and two-sided
    p-value over the base-model means (``scipy.stats.ttest_1samp``, B - 1 degrees of freedom). ``p_tost`` is the
    equivalence test against ``+-margin`` (TOST: the larger of the one-sided p-values against -M and +M; below
    alpha exactly where the 1 - 2 alpha interval, 90% at alpha 5%, lies inside +-M); NaN without a margin. NaN
    interval and p-values with fewer than 2 base models, or when every base model's mean is the same (no spread
    to test against: a t interval of width 0 would claim certainty that B base models cannot give)."""
    from scipy import stats as st

    a, bases_a, probs_a = per_problem_matrix(rows, mode, metric)
    b, bases_b, probs_b = per_problem_matrix(rows, vs, metric)
    if bases_a != bases_b or probs_a != probs_b:
        raise ValueError(f"{mode!r} and {vs!r} were not evaluated on the same base seeds and problems")
    means = (a - b).mean(axis=1)                                    # (base models,)
    out = {"diff": float(means.mean()), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
           "p_tost": float("nan"), "n_base": len(means)}
    if len(means) > 1 and np.ptp(means) > 0:  # one base model, or all agree exactly: no spread to test against
        test = st.ttest_1samp(means, 0.0)
        ci = test.confidence_interval(level)
        out |= {"ci_low": float(ci.low), "ci_high": float(ci.high), "p_value": float(test.pvalue)}
        if margin is not None:
            out["p_tost"] = float(max(st.ttest_1samp(means, -margin, alternative="greater").pvalue,
                                      st.ttest_1samp(means, margin, alternative="less").pvalue))
    return out


def holm(p_values: Sequence[float], alpha: float = 1 - LEVEL) -> tuple[list[bool], list[float]]:
    """``(rejected, adjusted p-values)`` for a family of comparisons, Holm's step-down correction
    (``statsmodels.stats.multitest.multipletests``): the family-wise error stays below ``alpha``."""
    from statsmodels.stats.multitest import multipletests

    reject, adjusted, _, _ = multipletests(np.asarray(p_values, dtype=float), alpha=alpha, method="holm")
    return [bool(r) for r in reject], [float(p) for p in adjusted]


def verdict_word(ci_low: float, ci_high: float, margin: float | None = None) -> str:
    """What one interval of a difference allows one to say, with no correction for multiplicity: ``"higher"`` or
    ``"lower"`` when it excludes 0 (with ``" (within ±M)"`` when the stated margin ``M`` also contains it), else
    ``"equivalent within M"`` when ``+-M`` contains it, else ``"not detected"``. A NaN bound says ``"not
    detected"``. (An equivalence test at alpha reads the 1 - 2 alpha interval, 90% at 5%; ``family_verdicts``
    words a family from Holm-adjusted p-values instead.)"""
    inside = margin is not None and -margin <= ci_low and ci_high <= margin
    if ci_low > 0 or ci_high < 0:
        return ("higher" if ci_low > 0 else "lower") + (f" (within ±{margin:g})" if inside else "")
    return f"equivalent within {margin:g}" if inside else "not detected"


def family_verdicts(rows: Sequence[dict], comparisons: Sequence[tuple[str, str]], metric: str,
                    margin: float | None = None, level: float = LEVEL) -> list[dict]:
    """One ``base_model_difference`` row per ``(mode, vs)`` in ``comparisons`` (its t interval unadjusted), with
    ``p_holm`` (the difference's p, Holm over the family), ``p_tost_holm`` (the TOST p against ``+-margin``, Holm
    over the family; NaN without a margin) and ``verdict``: ``"higher"``/``"lower"`` where Holm rejects no
    difference (adding ``" (within ±M)"`` where Holm also rejects the TOST), else ``"equivalent within M"`` where
    Holm rejects the TOST (the 90% interval inside +-M, at the family's 5%), else ``"not detected"``. So the words
    hold for the family, not one comparison at a time. Without an interval (fewer than 2 base models, or no spread
    between them) the p-values are NaN, the verdict says why, and its p enters Holm as 1 (it never rejects)."""
    out = [{"mode": m, "vs": v, "metric": metric, **base_model_difference(rows, m, v, metric, level, margin)}
           for m, v in comparisons]
    alpha = 1 - level
    reject, adjusted = holm([1.0 if missing(d["p_value"]) else d["p_value"] for d in out], alpha)
    equivalent, tost = holm([1.0 if missing(d["p_tost"]) else d["p_tost"] for d in out], alpha)
    for d, r, adj, e, adj_tost in zip(out, reject, adjusted, equivalent, tost):
        nan = float("nan")
        if d["n_base"] < 2:  # one base model: no spread between base models to build an interval from
            d |= {"p_holm": nan, "p_tost_holm": nan,
                  "verdict": f"no interval over base models ({d['n_base']} base model)"}
        elif missing(d["p_value"]):  # every base model's mean the same: a t interval of width 0 says nothing
            d |= {"p_holm": nan, "p_tost_holm": nan, "verdict": "no interval (no spread between base models)"}
        else:
            within = margin is not None and e
            word = (("higher" if d["diff"] > 0 else "lower") + (f" (within ±{margin:g})" if within else "") if r
                    else f"equivalent within {margin:g}" if within else "not detected")
            d |= {"p_holm": adj, "p_tost_holm": nan if margin is None else adj_tost, "verdict": word}
    return out
