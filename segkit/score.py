"""Stages 3 and 4 -- score and select segments.

Attribution *strength* of a segment is ``sum|a| / sqrt(n)`` normalised over the trace; its *direction
consistency* is ``|sum a| / sum|a|``. The paper's rule keeps the strongest segments until their cumulative
strength reaches ``tau`` and, among them, those with consistency at most ``beta`` (strong but mixed-sign).

    >>> select([0.5, 0.3, 0.2], [0.9, 0.4, 0.1], tau=0.7, beta=0.8)
    [1]
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .records import stage_options

TAU, BETA = 0.7, 0.8
ALWAYS_KEEP = ("first", "second_to_last", "last")  # segments the authors' training script always trains on


def strength(attributions: Sequence[Sequence[float]]) -> list[float]:
    """Per-segment ``sum|a| / sqrt(n_tokens)``, normalised to sum to 1 (all zeros stay zeros)."""
    raw = [float(np.abs(a).sum()) / math.sqrt(len(a)) if len(a) else 0.0 for a in attributions]
    total = sum(raw)
    return [r / total if total > 0 else 0.0 for r in raw]


def consistency(attributions: Sequence[Sequence[float]]) -> list[float]:
    """Per-segment ``|sum a| / sum|a|`` in [0, 1]; 0 for a segment whose attributions are all zero (or empty)."""
    out = []
    for a in attributions:
        a = np.asarray(a, dtype=float)
        mass = np.abs(a).sum()
        out.append(float(abs(a.sum()) / mass) if mass > 0 else 0.0)
    return out


def top_by_cumulative(scores: Sequence[float], tau: float) -> list[int]:
    """Indices of the highest scores, fewest first, until their cumulative share of the total reaches ``tau``.

    Ties are broken by position (earlier segment first), so the result is deterministic.
    """
    total = float(sum(scores))
    if total <= 0:
        return []
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    taken, cum = [], 0.0
    for i in order:
        taken.append(i)
        cum += scores[i] / total
        if cum >= tau - 1e-12:
            break
    return taken


def select(strengths: Sequence[float], consistencies: Sequence[float], tau: float = TAU,
           beta: float = BETA) -> list[int]:
    """The paper's rule: ``selected_spans_ids`` (sorted segment indices)."""
    return sorted(i for i in top_by_cumulative(strengths, tau) if consistencies[i] <= beta)


def always_kept(n_segments: int, keep: Sequence[str] = ALWAYS_KEEP) -> list[int]:
    """Indices of the segments trained whatever the selection (by name: first, second_to_last, last)."""
    names = {"first": 0, "second_to_last": n_segments - 2, "last": n_segments - 1}
    unknown = set(keep) - set(names)
    if unknown:
        raise ValueError(f"unknown always-kept segment names {sorted(unknown)}; use {sorted(names)}")
    return sorted({names[k] for k in keep if 0 <= names[k] < n_segments})


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """The ``k`` highest-scoring segments (sorted indices): selection by perplexity, entropy, strength, ..."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:max(k, 0)])


def random_selection(n_segments: int, k: int, seed: int | str) -> list[int]:
    """``k`` segments drawn uniformly without replacement, reproducibly from ``seed``."""
    return sorted(random.Random(str(seed)).sample(range(n_segments), min(max(k, 0), n_segments)))


_INPUT, _OUT, _ON_ERROR, _UNIQUE_IDS = stage_options("JSON Lines from `segkit attribute` (with attributions)")


@dataclass
class SelectConfig:
    input: str = _INPUT
    out: str = _OUT
    tau: float = field(default=TAU, metadata={"help": "cumulative strength to reach, 0 < tau <= 1"})
    beta: float = field(default=BETA, metadata={"help": "keep segments whose consistency is at most this, "
                                                "0 <= beta <= 1"})
    on_error: str = _ON_ERROR
    unique_ids: str = _UNIQUE_IDS

    def __post_init__(self):
        check_tau_beta(self.tau, self.beta)


def check_tau_beta(tau: float, beta: float) -> None:
    """ValueError unless ``0 < tau <= 1`` and ``0 <= beta <= 1`` (NaN fails both)."""
    if not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], got {beta}")


def select_record(rec: dict, tau: float = TAU, beta: float = BETA) -> dict:
    """``rec`` with ``selected_spans_ids`` (and the ``tau``, ``beta`` that chose them) added.

    ``strength`` and ``consistency`` are computed here from the record's ``attributions`` (and written back), not
    read from what ``attribute`` stored: this module defines them, so a change to their definition takes effect at
    the next ``select`` without attributing again."""
    check_tau_beta(tau, beta)
    s, c = strength(rec["attributions"]), consistency(rec["attributions"])
    return {**rec, "strength": s, "consistency": c, "selected_spans_ids": select(s, c, tau, beta),
            "tau": tau, "beta": beta}


def run_select(cfg: SelectConfig) -> str:
    from .records import run_stage

    n_sel, n_seg = [], []

    def fn(rec):
        out = select_record(rec, cfg.tau, cfg.beta)
        n_sel.append(len(out["selected_spans_ids"]))
        n_seg.append(len(out["strength"]))
        return out

    res = run_stage(fn, cfg.input, cfg.out, required=("attributions",), desc="select",
                    on_error=cfg.on_error, overwrite=True, dedupe_ids=cfg.unique_ids)
    ratio = sum(n_sel) / max(sum(n_seg), 1)
    return (f"{res.done} traces, {sum(n_sel)} of {sum(n_seg)} segments selected ({ratio:.0%}), "
            f"tau={cfg.tau} beta={cfg.beta} -> {cfg.out}")
