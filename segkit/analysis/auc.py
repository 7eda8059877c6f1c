"""Threshold-free evidence of what each segment score sees: ROC-AUC of planted useful segments against the rest.

A score that ranks the planted useful segments (``core``, ``verify``, ``correction``) above the others has AUC 1,
a score blind to them 0.5. The bootstrap resamples traces (segments of one trace are not independent). Segments
always trained (``score.ALWAYS_KEEP``) are left out by default, as in the selection grid: no selection decides on
them, and the final segment, which states the answer, would dominate every attribution score.

Controls before claims: the table holds, beside the model's scores, the model-free ones (``controls``: length,
position, the strength formula on a constant attribution, overlap with the question), a random score and IG
strength from an attributor of the same architecture with random weights (``with_random_weights``; Adebayo et al.,
2018); ``kind`` says which is which. ``versus_model_free`` is IG's AUC minus the best model-free AUC, paired.

    >>> auc_table(records, variant="answer restated")      # score, kind, variant, role, auc, ci_low, ci_high, ...
    >>> versus_model_free(records, variant="answer restated")  # strength - best model-free: diff, interval, verdict
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import stats
from ..score import ALWAYS_KEEP, BETA
from ..roles import ROLES, USEFUL
from .controls import MODEL_FREE_SCORES
from .selection import selectable_segments


def _rule(r: dict, beta: float) -> list[float]:
    # the paper's rule as a score: strength where consistency <= beta, pushed below every such segment otherwise;
    # thresholding it at a trace's tau cut-off gives back exactly the rule's selection
    return [s if c <= beta else s - 1.0 for s, c in zip(r["strength"], r["consistency"])]


def _random(r: dict) -> list[float]:
    rng = random.Random(f"auc:{r.get('id')}")
    return [rng.random() for _ in r["segments"]]


RANDOM_WEIGHTS = "strength_random_weights"  # the record field ``with_random_weights`` adds

# name -> (record field it needs, per-segment score; larger = "more worth learning", as the training mode reads it)
SEGMENT_SCORES: dict[str, tuple[str | None, Callable[[dict, float], list[float]]]] = {
    "strength": ("strength", lambda r, beta: r["strength"]),
    "consistency": ("consistency", lambda r, beta: r["consistency"]),
    "paper rule": ("strength", _rule),
    # removing an important segment lowers log p(answer): the effect's negative is the score
    "removal effect": ("removal_effect", lambda r, beta: [0.0 if e is None else -e for e in r["removal_effect"]]),
    "perplexity": ("segment_log_perplexity", lambda r, beta: r["segment_log_perplexity"]),
    "entropy": ("segment_entropy", lambda r, beta: r["segment_entropy"]),
    "random": (None, lambda r, beta: _random(r)),
    # IG strength from the attributor's architecture with random weights (``with_random_weights``): what strength
    # says about a segment when the model has learned nothing
    "strength (random weights)": (RANDOM_WEIGHTS, lambda r, beta: r[RANDOM_WEIGHTS]),
    **MODEL_FREE_SCORES,
}
RANDOM_SCORES = ("random", "strength (random weights)")


def kind(score: str) -> str:
    """``"model-free"`` (a segment's surface), ``"random"`` (a random score or random weights) or ``"model"``."""
    return "model-free" if score in MODEL_FREE_SCORES else "random" if score in RANDOM_SCORES else "model"


def with_random_weights(records: Sequence[dict], random_weights: Sequence[dict]) -> list[dict]:
    """``records`` with ``strength_random_weights``: the ``strength`` of the same trace (same ``id``) attributed by
    the random-weight attributor (``segkit.pipeline.sanity_attributions``); records it did not attribute go
    without."""
    by_id = {r["id"]: r["strength"] for r in random_weights}
    return [{**r, RANDOM_WEIGHTS: by_id[r["id"]]} if r.get("id") in by_id else r for r in records]


def _traces(kept: list, fn: Callable[[dict, float], list[float]], beta: float, role: str) -> list[tuple]:
    """Per trace, ``(scores, useful)`` of the segments that ``role`` compares (see ``auc_table``)."""
    traces = []
    for r, ii in kept:
        s, roles = np.asarray(fn(r, beta), float)[ii], np.array([r["segment_roles"][i] for i in ii])
        useful = np.isin(roles, list(USEFUL))
        keep = (np.ones_like(useful) if role == "all" else
                (roles == role) | ~useful if role in USEFUL else useful | (roles == role))
        if keep.any():
            traces.append((s[keep], useful[keep]))
    return traces


def _kept(records: Sequence[dict], field: str | None, always_keep: Sequence[str]) -> list:
    # a score is read on the records that carry its field (the random-weight strength: the first n_sanity)
    return [(r, ii) for r in records if field is None or field in r
            for ii in [selectable_segments(r, always_keep)] if ii]


def within_trace_auc(traces: Sequence[tuple], n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> dict:
    """``{"within_auc", "within_ci_low", "within_ci_high", "n_within"}``: the mean of per-trace AUCs over the traces
    that have both classes (bootstrap over those traces). Strength is normalised within a trace, so a pooled AUC also
    rewards traces with few segments; within one trace only the ranking counts."""
    aucs = [stats.roc_auc(s, y) for s, y in traces if 0 < np.sum(y) < len(y)]
    if not aucs:
        return {"within_auc": float("nan"), "within_ci_low": float("nan"), "within_ci_high": float("nan"),
                "n_within": 0}
    mean, lo, hi = stats.bootstrap_mean_ci(aucs, n_resamples, seed)
    return {"within_auc": mean, "within_ci_low": lo, "within_ci_high": hi, "n_within": len(aucs)}


def auc_table(records: Sequence[dict], variant: str = "default", scores: Sequence[str] | None = None,
              beta: float = BETA, always_keep: Sequence[str] = ALWAYS_KEEP, n_resamples: int = stats.N_RESAMPLES,
              seed: int = 0) -> pd.DataFrame:
    """One row per (score, role): ``score``, ``kind`` (``kind``: model, model-free, random), ``variant`` (as given:
    which testbed), ``role``, ``auc`` (segments pooled over traces), ``ci_low``, ``ci_high`` (95%, traces
    resampled), ``n_pos``, ``n_neg``, ``n_traces``, and ``within_auc`` with its interval and ``n_within``
    (``within_trace_auc``: the mean AUC within one trace, over the traces holding both classes).

    ``role`` ``all`` is useful against the rest; a useful role (e.g. ``core``) is that role against every
    non-useful segment; a non-useful role (e.g. ``repeat``) is every useful segment against that role. A score is
    read on the records that carry its field and left out when none does (``removal effect`` before
    ``add_removal_effects``); ``scores`` picks among ``SEGMENT_SCORES``. Records need ``segment_roles`` (the
    testbed).
    """
    names = list(scores or SEGMENT_SCORES)
    unknown = set(names) - set(SEGMENT_SCORES)
    if unknown:
        raise ValueError(f"unknown scores {sorted(unknown)}; choose among {list(SEGMENT_SCORES)}")
    every = _kept(records, None, always_keep)
    roles_present = [x for x in ROLES if any(r["segment_roles"][i] == x for r, ii in every for i in ii)]
    rows = []
    for name in names:
        field, fn = SEGMENT_SCORES[name]
        kept = _kept(records, field, always_keep)
        for role in ["all"] + roles_present if kept else []:
            traces = _traces(kept, fn, beta, role)
            ci = stats.auc_ci(traces, n_resamples, seed)
            rows.append({"score": name, "kind": kind(name), "variant": variant, "role": role, "auc": ci["auc"],
                         "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n_pos": ci["n_pos"],
                         "n_neg": ci["n_neg"], "n_traces": len(kept),
                         **within_trace_auc(traces, n_resamples, seed)})
    return pd.DataFrame(rows)


def versus_model_free(records: Sequence[dict], score: str = "strength", variant: str = "default",
                      beta: float = BETA, always_keep: Sequence[str] = ALWAYS_KEEP,
                      n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> dict:
    """``score``'s pooled AUC (role ``all``) minus the best model-free score's, paired: ``{"variant", "score",
    "best", "auc", "best_auc", "diff", "ci_low", "ci_high", "verdict"}``. The best model-free score is chosen on the
    same data (the largest AUC over ``MODEL_FREE_SCORES``), so the difference is IG against the strongest surface
    explanation these traces offer; the interval resamples traces once and computes both AUCs on each resample
    (``stats.auc_resamples``), and ``verdict`` is ``stats.verdict_word`` ("not detected" when it contains 0)."""
    kept = _kept(records, SEGMENT_SCORES[score][0], always_keep)  # the model-free scores are read on these too
    names = [score] + [n for n, (f, _) in MODEL_FREE_SCORES.items() if f is None or all(f in r for r, _ in kept)]
    boot = {n: stats.auc_resamples(_traces(kept, SEGMENT_SCORES[n][1], beta, "all"), n_resamples, seed)[:2]
            for n in names}  # (AUC, its resamples): the same draws for every score (same traces, same seed)
    best = max(names[1:], key=lambda n: boot[n][0])
    diffs = boot[score][1] - boot[best][1]
    lo, hi = stats.percentile_interval(diffs[~np.isnan(diffs)])
    return {"variant": variant, "score": score, "best": best, "auc": boot[score][0], "best_auc": boot[best][0],
            "diff": boot[score][0] - boot[best][0], "ci_low": lo, "ci_high": hi,
            "verdict": stats.verdict_word(lo, hi)}


def describe_versus(row: dict) -> str:
    """``versus_model_free``'s row as a sentence, e.g. ``"answer restated: IG strength 0.701 minus length 0.990 =
    -0.289 [-0.320, -0.255], lower: IG strength does not beat the segment's surface."``"""
    plain = {"higher": "beats the segment's surface", "lower": "does not beat the segment's surface",
             "not detected": "is not shown to beat the segment's surface"}[row["verdict"]]
    return (f"{row['variant']}: IG {row['score']} {row['auc']:.3f} minus {row['best']} {row['best_auc']:.3f} = "
            f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], {row['verdict']}: IG {row['score']} "
            f"{plain}.")


def auc_summary(auc: pd.DataFrame, role: str = "all") -> pd.DataFrame:
    """``auc_table`` rows of ``role`` as a score x variant table of ``"0.62 [0.58, 0.66]"`` strings, for reading."""
    part = auc[auc.role == role]
    cells = {(r.score, r.variant): f"{r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in part.itertuples()}
    scores, variants = list(dict.fromkeys(part.score)), list(dict.fromkeys(part.variant))
    return pd.DataFrame([[cells.get((s, v), "") for v in variants] for s in scores],
                        index=pd.Index(scores, name="score"), columns=pd.Index(variants, name="variant"))
