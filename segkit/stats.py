"""Intervals and verdicts: percentile bootstrap over problems (and base models), ROC-AUC, one generated sentence.

Evaluation results come as rows ``{"problem", "base_seed", "ft_seed", "mode", <metric>: value}``: one row per
problem, base model and fine-tuning seed. Fine-tuning seeds are averaged per (base model, problem); the bootstrap
then resamples base models and, within each, problems (a two-level bootstrap), so an interval covers the problems
drawn, the fine-tuning seeds and the base model. With one base model it is the ordinary bootstrap over problems.
Comparisons are paired: a difference is taken per (base model, problem) before resampling, so what two modes share
(the problem's difficulty, the base model) cancels.

    >>> rows = [{"problem": p, "mode": m, "length": 40 + p - 10 * (m == "oracle")}
    ...         for p in range(20) for m in ("full", "oracle")]
    >>> mean_ci(rows, "full", "length")        # the problems differ: a wide interval
    {'mean': 49.5, 'ci_low': 46.9, 'ci_high': 51.9}
    >>> paired_difference(rows, "oracle", "full", "length")   # 10 shorter on every problem: no width
    {'diff': -10.0, 'ci_low': -10.0, 'ci_high': -10.0}
    >>> roc_auc([0.9, 0.1, 0.5], [True, False, True])
    1.0
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

N_RESAMPLES = 2000
LEVEL = 0.95


def percentile_interval(estimates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` share of bootstrap estimates (the percentile interval)."""
    lo, hi = np.percentile(estimates, [50 * (1 - level), 50 * (1 + level)])
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


def hierarchical_mean_ci(matrix: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                         level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)`` for ``matrix`` of shape (base models, problems): each resample draws base models
    with replacement, then, for each drawn base model, problems with replacement."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"need a non-empty (base models, problems) matrix, got shape {m.shape}")
    n_base, n_prob = m.shape
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, n_base, size=(n_resamples, n_base))               # (R, B)
    problems = rng.integers(0, n_prob, size=(n_resamples, n_base, n_prob))    # (R, B, P)
    estimates = m[bases[:, :, None], problems].mean(axis=(1, 2))              # (R,)
    return (float(m.mean()), *percentile_interval(estimates, level))


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


def paired_difference(rows: Sequence[dict], mode: str, vs: str, metric: str, n_resamples: int = N_RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> dict:
    """``{"diff", "ci_low", "ci_high"}``: ``mode`` minus ``vs`` on ``metric``, differenced per (base seed,
    problem) and bootstrapped at both levels. Both modes must cover the same base seeds and problems."""
    a, bases_a, probs_a = per_problem_matrix(rows, mode, metric)
    b, bases_b, probs_b = per_problem_matrix(rows, vs, metric)
    if bases_a != bases_b or probs_a != probs_b:
        raise ValueError(f"{mode!r} and {vs!r} were not evaluated on the same base seeds and problems")
    diff, lo, hi = hierarchical_mean_ci(a - b, n_resamples, seed, level)
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
    ok = pairs > 0
    estimates = ((pos_g * (below + 0.5 * neg_g)).sum(axis=1)[ok] / pairs[ok])
    lo, hi = percentile_interval(estimates, level) if estimates.size else (float("nan"), float("nan"))
    return {"auc": auc, "ci_low": lo, "ci_high": hi, "n_pos": int(labels.sum()), "n_neg": int((~labels).sum())}


# how a difference reads: the word when the interval lies above or below zero, per metric
DIRECTION = {"accuracy": ("higher", "lower"), "mean_length": ("longer", "shorter")}
UNITS = {"accuracy": "", "mean_length": " tokens"}


def describe_difference(d: dict) -> str:
    """``"accuracy +0.030 [-0.010, +0.070], no difference"`` for one row of a differences table."""
    metric = d["metric"]
    up, down = DIRECTION.get(metric, ("higher", "lower"))
    fmt = "{:+.3f}" if metric == "accuracy" else "{:+.1f}"
    word = up if d["ci_low"] > 0 else down if d["ci_high"] < 0 else "no difference"
    return (f"{metric.replace('_', ' ')} {fmt.format(d['diff'])} [{fmt.format(d['ci_low'])}, "
            f"{fmt.format(d['ci_high'])}]{UNITS.get(metric, '')}, {word}")


def verdict(differences: Sequence[dict], mode: str = "selective", level: float = LEVEL) -> str:
    """One sentence per comparison of ``mode`` in ``differences`` (rows ``{"mode", "vs", "metric", "diff",
    "ci_low", "ci_high"}``), e.g. ``"selective vs full: accuracy +0.030 [-0.010, +0.070], no difference; mean
    length -12.0 [-18.0, -6.0] tokens, shorter."``, joined; the words come from where each interval lies."""
    by_vs: dict[str, list[dict]] = {}
    for d in differences:
        if d["mode"] == mode:
            by_vs.setdefault(d["vs"], []).append(d)
    if not by_vs:
        return f"no comparison of {mode} was made."
    head = f"({level:.0%} intervals) "
    return head + " ".join(f"{mode} vs {vs}: " + "; ".join(describe_difference(d) for d in ds) + "."
                           for vs, ds in by_vs.items())
