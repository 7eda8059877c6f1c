"""Threshold-free evidence of what each segment score sees: ROC-AUC of planted useful segments against the rest.

A score that ranks the planted useful segments (``core``, ``verify``, ``correction``) above the others has AUC 1,
a score blind to them 0.5. The bootstrap resamples traces (segments of one trace are not independent). Segments
always trained (``score.ALWAYS_KEEP``) are left out by default, as in the selection grid: no selection decides on
them, and the final segment, which states the answer, would dominate every attribution score.

    >>> auc_table(records, variant="answer restated")      # score, variant, role, auc, ci_low, ci_high, ...
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import stats
from ..score import ALWAYS_KEEP, BETA
from ..synth import USEFUL
from .selection import selectable_segments
from .tables import ROLE_ORDER


def _rule(r: dict, beta: float) -> list[float]:
    # the paper's rule as a score: strength where consistency <= beta, pushed below every such segment otherwise;
    # thresholding it at a trace's tau cut-off gives back exactly the rule's selection
    return [s if c <= beta else s - 1.0 for s, c in zip(r["strength"], r["consistency"])]


def _random(r: dict) -> list[float]:
    rng = random.Random(f"auc:{r.get('id')}")
    return [rng.random() for _ in r["segments"]]


# name -> (record field it needs, per-segment score; larger = "more worth learning", as the training mode reads it)
SEGMENT_SCORES: dict[str, tuple[str | None, Callable[[dict, float], list[float]]]] = {
    "strength": ("strength", lambda r, beta: r["strength"]),
    "consistency": ("consistency", lambda r, beta: r["consistency"]),
    "paper rule": ("strength", _rule),
    # removing an important segment lowers log p(answer): the effect's negative is the score
    "removal effect": ("removal_effect", lambda r, beta: [0.0 if e != e else -e for e in r["removal_effect"]]),
    "perplexity": ("segment_log_perplexity", lambda r, beta: r["segment_log_perplexity"]),
    "entropy": ("segment_entropy", lambda r, beta: r["segment_entropy"]),
    "random": (None, lambda r, beta: _random(r)),
}


def auc_table(records: Sequence[dict], variant: str = "default", scores: Sequence[str] | None = None,
              beta: float = BETA, always_keep: Sequence[str] = ALWAYS_KEEP, n_resamples: int = stats.N_RESAMPLES,
              seed: int = 0) -> pd.DataFrame:
    """One row per (score, role): ``score``, ``variant`` (as given: which testbed), ``role``, ``auc``, ``ci_low``,
    ``ci_high`` (95%, traces resampled), ``n_pos``, ``n_neg``.

    ``role`` ``all`` is useful against the rest; a useful role (e.g. ``core``) is that role against every
    non-useful segment; a non-useful role (e.g. ``repeat``) is every useful segment against that role. Scores
    whose field no record has (``removal effect`` before ``add_removal_effects``) are left out; ``scores`` picks
    among ``SEGMENT_SCORES``. Records need ``segment_roles`` (the testbed).
    """
    names = list(scores or SEGMENT_SCORES)
    unknown = set(names) - set(SEGMENT_SCORES)
    if unknown:
        raise ValueError(f"unknown scores {sorted(unknown)}; choose among {list(SEGMENT_SCORES)}")
    kept = [(r, selectable_segments(r, always_keep)) for r in records]
    roles_present = [x for x in ROLE_ORDER if any(r["segment_roles"][i] == x for r, ii in kept for i in ii)]
    rows = []
    for name in names:
        field, fn = SEGMENT_SCORES[name]
        if field is not None and not all(field in r for r, _ in kept):
            continue
        per_trace = [(np.asarray(fn(r, beta), float)[ii], np.array([r["segment_roles"][i] for i in ii]))
                     for r, ii in kept if ii]
        for role in ["all"] + roles_present:
            traces = []
            for s, roles in per_trace:
                useful = np.isin(roles, list(USEFUL))
                keep = (np.ones_like(useful) if role == "all" else
                        (roles == role) | ~useful if role in USEFUL else useful | (roles == role))
                if keep.any():
                    traces.append((s[keep], useful[keep]))
            ci = stats.auc_ci(traces, n_resamples, seed)
            rows.append({"score": name, "variant": variant, "role": role, "auc": ci["auc"], "ci_low": ci["ci_low"],
                         "ci_high": ci["ci_high"], "n_pos": ci["n_pos"], "n_neg": ci["n_neg"]})
    return pd.DataFrame(rows)


def auc_summary(auc: pd.DataFrame, role: str = "all") -> pd.DataFrame:
    """``auc_table`` rows of ``role`` as a score x variant table of ``"0.62 [0.58, 0.66]"`` strings, for reading."""
    part = auc[auc.role == role]
    cells = {(r.score, r.variant): f"{r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in part.itertuples()}
    scores, variants = list(dict.fromkeys(part.score)), list(dict.fromkeys(part.variant))
    return pd.DataFrame([[cells.get((s, v), "") for v in variants] for s in scores], index=pd.Index(scores, name="score"),
                        columns=pd.Index(variants, name="variant"))
