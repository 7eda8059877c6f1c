"""Tables over attributed records: one row per segment, the strength CDF (paper Fig. 1), BLEU overlap, convergence.

    >>> table = segment_table(records, tau=0.7, beta=0.8)     # one row per segment
    >>> segments_needed(strength_cdf(records))                 # share of segments holding 50/70/90% of strength
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..score import BETA, TAU, select, top_by_cumulative
from ..roles import is_useful

GROUPS = ("high strength, moderate consistency", "high strength, high consistency",
          "low strength, moderate consistency", "low strength, high consistency")  # paper Fig. 2


def importance_labels(record: dict, tau: float = TAU, beta: float = BETA) -> list[bool]:
    """Per segment, whether the paper's rule selects it (``important``) at ``(tau, beta)``."""
    chosen = set(select(record["strength"], record["consistency"], tau, beta))
    return [i in chosen for i in range(len(record["strength"]))]


def strength_group(record: dict, tau: float = TAU, beta: float = BETA) -> list[str]:
    """Per segment, its paper Fig. 2 group: high strength = among the strongest segments holding ``tau`` of the
    trace's strength; moderate consistency = consistency at most ``beta`` (the selected group is the first)."""
    high = set(top_by_cumulative(record["strength"], tau))
    return [f"{'high' if i in high else 'low'} strength, {'moderate' if c <= beta else 'high'} consistency"
            for i, c in enumerate(record["consistency"])]


def segment_table(records: Iterable[dict], tau: float = TAU, beta: float = BETA) -> pd.DataFrame:
    """One row per segment: ``trace``, ``segment`` (index), ``n_segments``, ``n_tokens``, ``strength``,
    ``consistency``, ``important`` (selected at ``tau``/``beta``), ``group`` (Fig. 2), ``log_perplexity``,
    ``entropy``, ``bleu_overlap``, and where the record has them ``role``, ``useful`` and ``removal_effect``."""
    rows = []
    for rec in records:
        n = len(rec["segments"])
        important, group = importance_labels(rec, tau, beta), strength_group(rec, tau, beta)
        bleu = bleu_overlap(rec["segments"])
        for i in range(n):
            row = {"trace": rec.get("id"), "segment": i, "n_segments": n, "n_tokens": len(rec["attributions"][i]),
                   "strength": rec["strength"][i], "consistency": rec["consistency"][i],
                   "important": important[i], "group": group[i], "bleu_overlap": bleu[i]}
            for col, key in (("log_perplexity", "segment_log_perplexity"), ("entropy", "segment_entropy"),
                             ("removal_effect", "removal_effect")):
                if key in rec:
                    row[col] = rec[key][i]
            if "segment_roles" in rec:
                row["role"] = rec["segment_roles"][i]
                row["useful"] = is_useful(rec["segment_roles"][i])
            rows.append(row)
    return pd.DataFrame(rows)


def strength_cdf(records: Iterable[dict]) -> pd.DataFrame:
    """Paper Fig. 1: per trace, segments sorted by strength (strongest first) with the cumulative strength.

    Columns ``trace``, ``rank`` (1 = strongest), ``segment_fraction`` (rank / n_segments) and
    ``cumulative_strength`` (share of the trace's total strength held by the ``rank`` strongest segments).
    """
    rows = []
    for rec in records:
        s = np.sort(np.asarray(rec["strength"], dtype=float))[::-1]
        total = s.sum()
        cum = np.cumsum(s) / total if total > 0 else np.zeros_like(s)
        for k, c in enumerate(cum, 1):
            rows.append({"trace": rec.get("id"), "rank": k, "segment_fraction": k / len(s),
                         "cumulative_strength": float(c)})
    return pd.DataFrame(rows)


def segments_needed(cdf: pd.DataFrame, shares: Sequence[float] = (0.5, 0.7, 0.9)) -> pd.DataFrame:
    """From ``strength_cdf``: per share, the mean (over traces) fraction of segments needed to hold that much
    strength. Columns ``share``, ``segment_fraction`` (mean), ``std``."""
    rows = []
    for share in shares:
        need = cdf[cdf.cumulative_strength >= share - 1e-12].groupby("trace").segment_fraction.min()
        rows.append({"share": share, "segment_fraction": float(need.mean()), "std": float(need.std(ddof=0))})
    return pd.DataFrame(rows)


def bleu_overlap(segments: Sequence[str]) -> list[float]:
    """Per segment, sentence BLEU (sacrebleu, 0..1) of the segment against every earlier segment as references.

    Multi-reference BLEU credits an n-gram found in any earlier segment, so a segment that restates earlier work
    scores high and one that says something new scores low. The first segment has nothing before it: NaN.
    """
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)  # sentence level: short segments would otherwise score 0 on 4-grams
    out = [math.nan]
    for i in range(1, len(segments)):
        earlier = [s for s in segments[:i] if s.strip()]
        hyp = segments[i].strip()
        out.append(bleu.sentence_score(hyp, earlier).score / 100 if earlier and hyp else 0.0)
    return out[:len(segments)]


def completeness_table(records: Iterable[dict]) -> pd.DataFrame:
    """The convergence check: per trace ``completeness_error`` (|sum IG - (F(x) - F(x0))| / |F(x) - F(x0)|),
    ``ig_steps``, ``n_tokens``, ``f_input``, ``f_baseline``, ``attribution_sum`` and ``attribution_seconds``."""
    keys = ("completeness_error", "ig_steps", "n_tokens", "f_input", "f_baseline", "attribution_sum",
            "attribution_seconds")
    return pd.DataFrame([{"trace": r.get("id"), **{k: r.get(k) for k in keys}} for r in records])
