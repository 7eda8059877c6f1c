"""Selection quality: precision/recall against the planted roles, the tau x beta grid and the saved (tau, beta)
choice (notebook 02), and each selection method against the planted truth (notebook 03).

    >>> grid = grid_table(records, taus=[0.5, 0.7, 0.9], betas=[0.6, 0.8, 1.0])
    >>> save_choice(choose_tau_beta(grid), "runs/choice.json")
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import fmean
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import stats
from ..modes import segments_for_mode
from ..outputs import write_json
from ..roles import is_useful
from ..score import ALWAYS_KEEP, BETA, TAU, always_kept, select

# selection methods compared in notebook 03, by their `segkit train` mode; "selective" is the paper's IG rule
SELECTION_METHODS = ("selective", "strength-only", "random", "perplexity", "entropy")


def precision_recall(selected: Iterable[bool], useful: Iterable[bool]) -> dict:
    """Precision, recall and F1 of a selection against the planted useful segments (flat lists of booleans).

    An empty selection has precision NaN; no useful segment gives recall NaN; F1 is 0 when either is 0 or NaN.
    """
    sel, use = np.asarray(list(selected), bool), np.asarray(list(useful), bool)
    tp = int((sel & use).sum())
    p = tp / sel.sum() if sel.sum() else math.nan
    r = tp / use.sum() if use.sum() else math.nan
    f1 = 2 * p * r / (p + r) if p > 0 and r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1, "n_selected": int(sel.sum()), "n_useful": int(use.sum())}


def _selection_ratio(records: Sequence[dict], chosen: Sequence[Sequence[int]]) -> tuple[float, float]:
    """Share of segments, and of trace tokens, that ``chosen`` (one list of indices per record) selects."""
    n_seg = sum(len(r["segments"]) for r in records)
    n_tok = sum(len(a) for r in records for a in r["attributions"])
    sel_seg = sum(len(c) for c in chosen)
    sel_tok = sum(len(r["attributions"][i]) for r, c in zip(records, chosen) for i in c)
    return sel_seg / max(n_seg, 1), sel_tok / max(n_tok, 1)


def selectable_segments(record: dict, always_keep: Sequence[str] = ALWAYS_KEEP) -> list[int]:
    """Indices of the segments a selection decides on: all but the always-kept ones (first, second-to-last and last
    by default), which ``segkit train`` trains whatever is selected."""
    kept = set(always_kept(len(record["segments"]), always_keep))
    return [i for i in range(len(record["segments"])) if i not in kept]


def grid_table(records: Sequence[dict], taus: Sequence[float], betas: Sequence[float],
               always_keep: Sequence[str] = ALWAYS_KEEP) -> pd.DataFrame:
    """One row per ``(tau, beta)``: ``segment_ratio`` and ``token_ratio`` selected; where records carry
    ``removal_effect``, the paper's criterion ``confidence_gap`` = mean removal effect of unselected segments minus
    that of selected ones (pooled over segments; larger: removing the selected ones costs more confidence); where
    they carry ``segment_roles``, ``precision``, ``recall`` and ``f1`` against the useful roles.

    The gap and the scores cover the segments the selection decides on (``selectable_segments``): the always-kept
    ones are trained whatever (tau, beta) is, so they must not steer the choice (the final segment, which states the
    answer, is the strongest and most consistent of a trace and would pull beta to 1)."""
    has_effect = all("removal_effect" in r for r in records)
    has_roles = all("segment_roles" in r for r in records)
    idx = [selectable_segments(r, always_keep) for r in records]
    rows = []
    for tau in taus:
        for beta in betas:
            chosen = [select(r["strength"], r["consistency"], tau, beta) for r in records]
            seg_ratio, tok_ratio = _selection_ratio(records, chosen)
            row = {"tau": tau, "beta": beta, "segment_ratio": seg_ratio, "token_ratio": tok_ratio}
            flags = [i in set(c) for c, ii in zip(chosen, idx) for i in ii]
            if has_effect:
                eff = np.array([r["removal_effect"][i] for r, ii in zip(records, idx) for i in ii], float)
                sel, ok = np.array(flags, bool), ~np.isnan(eff)
                row["confidence_gap"] = (float(eff[~sel & ok].mean() - eff[sel & ok].mean())
                                         if (sel & ok).any() and (~sel & ok).any() else math.nan)
            if has_roles:
                useful = [is_useful(r["segment_roles"][i]) for r, ii in zip(records, idx) for i in ii]
                row.update({k: v for k, v in precision_recall(flags, useful).items() if not k.startswith("n_")})
            rows.append(row)
    return pd.DataFrame(rows)


def choose_tau_beta(grid: pd.DataFrame, by: str = "confidence_gap", min_ratio: float = 0.05) -> dict:
    """The grid cell with the largest ``by`` among those selecting at least ``min_ratio`` of the segments
    (a cell that selects almost nothing can have a large gap by chance); ties go to the smaller token ratio.
    Returns ``{"tau", "beta", "by", <that row's values>}``."""
    if by not in grid:
        raise ValueError(f"the grid has no column {by!r}; it has {list(grid.columns)}")
    ok = grid[(grid.segment_ratio >= min_ratio) & grid[by].notna()]
    if ok.empty:
        raise ValueError(f"no grid cell selects at least {min_ratio:.0%} of the segments with a value for {by!r}")
    best = ok.sort_values([by, "token_ratio"], ascending=[False, True]).iloc[0]
    return {"tau": float(best.tau), "beta": float(best.beta), "by": by, **_numbers(best)}


def confidence_gap_spread(records: Sequence[dict], taus: Sequence[float], betas: Sequence[float],
                          always_keep: Sequence[str] = ALWAYS_KEEP, n_resamples: int = 1000, seed: int = 0,
                          default: tuple[float, float] = (TAU, BETA)) -> pd.DataFrame:
    """The paper's criterion with its bootstrap spread: per ``(tau, beta)``, ``segment_ratio``, ``confidence_gap``
    (as in ``grid_table``) with ``ci_low``/``ci_high``, and ``vs_default`` = its gap minus the ``default`` cell's,
    paired within each resample, with ``vs_default_ci_low``/``_high`` (95%; traces resampled, segments pooled).
    Records need ``removal_effect``; ``default`` must be a cell of the grid."""
    idx = [selectable_segments(r, always_keep) for r in records]
    cells = [(t, b) for t in taus for b in betas]
    if tuple(default) not in cells:
        raise ValueError(f"the default (tau, beta) = {tuple(default)} is not a cell of the grid")
    # per cell and trace: sums and counts of the removal effect over selected and over unselected segments
    sums = np.zeros((len(cells), 4, len(records)))  # (cells, [sel sum, sel n, unsel sum, unsel n], traces)
    for c, (tau, beta) in enumerate(cells):
        for t, (r, ii) in enumerate(zip(records, idx)):
            chosen = set(select(r["strength"], r["consistency"], tau, beta))
            for i in ii:
                e = r["removal_effect"][i]
                if e is not None and e == e:  # None (NaN before): removing it left nothing to condition on
                    k = 0 if i in chosen else 2
                    sums[c, k, t] += e
                    sums[c, k + 1, t] += 1
    draws = np.random.default_rng(seed).multinomial(len(records), np.full(len(records), 1 / len(records)),
                                                    size=n_resamples).astype(float)          # (R, traces)
    with np.errstate(invalid="ignore", divide="ignore"):
        def gap(w):  # w: (..., traces) weights -> (..., cells)
            s = np.einsum("...t,ckt->...ck", w, sums)
            return s[..., 2] / s[..., 3] - s[..., 0] / s[..., 1]
        point, boot = gap(np.ones(len(records))), gap(draws)                                   # (cells,), (R, cells)
    d = cells.index(tuple(default))
    rows = []
    for c, (tau, beta) in enumerate(cells):
        n_sel, n_all = sums[c, 1].sum(), sums[c, 1].sum() + sums[c, 3].sum()
        lo, hi = _interval_of_defined(boot[:, c])
        vlo, vhi = _interval_of_defined(boot[:, c] - boot[:, d])
        rows.append({"tau": tau, "beta": beta, "segment_ratio": n_sel / max(n_all, 1),
                     "confidence_gap": float(point[c]), "ci_low": float(lo), "ci_high": float(hi),
                     "vs_default": float(point[c] - point[d]), "vs_default_ci_low": float(vlo),
                     "vs_default_ci_high": float(vhi)})
    return pd.DataFrame(rows)


def criterion_support(table: pd.DataFrame) -> str:
    """In how many cells of the grid (``grid_table``, or ``confidence_gap_spread`` for the intervals) the paper's
    criterion is positive, as a sentence; when it is positive in none, removing a selected segment never costs more
    confidence than removing an unselected one, and the sentence says the choice of (tau, beta) is not supported by
    the criterion."""
    gap = table["confidence_gap"]
    n, positive = int(gap.notna().sum()), int((gap > 0).sum())
    text = f"The paper's criterion (the confidence gap) is positive in {positive} of the grid's {n} cells"
    if len(table) > n:
        text += f" ({len(table) - n} more have no gap)"
    if "ci_low" in table:
        text += f", with its 95% interval above 0 in {int((table.ci_low > 0).sum())}"
    if positive:
        return text + "."
    return (text + ": in no cell does removing a selected segment cost more confidence than removing an "
            "unselected one, so the choice of (tau, beta) below is not supported by the paper's criterion.")


def _numbers(row: pd.Series) -> dict:
    """A chosen row's statistics for the choice file: one over nothing (NaN) is None, never NaN (not JSON)."""
    return {k: None if pd.isna(v) else float(v) for k, v in row.items() if k not in ("tau", "beta")}


def _interval(x: float, lo: float, hi: float, sign: str = "") -> str:
    """``"0.12 [0.05, 0.2]"``, or ``"missing"`` for a statistic over nothing."""
    if pd.isna(x) or pd.isna(lo) or pd.isna(hi):
        return "missing"
    return f"{x:{sign}.3g} [{lo:{sign}.3g}, {hi:{sign}.3g}]"


def _interval_of_defined(estimates: np.ndarray) -> tuple[float, float]:
    """``stats.percentile_interval`` of the resamples that have a value (NaN: a gap over nothing); NaN if none."""
    defined = estimates[~np.isnan(estimates)]
    return stats.percentile_interval(defined) if defined.size else (math.nan, math.nan)


def choose_tau_beta_on_signal(spread: pd.DataFrame, min_ratio: float = 0.05,
                              default: tuple[float, float] = (TAU, BETA)) -> dict:
    """From ``confidence_gap_spread``: the cell with the largest gap (among those selecting at least
    ``min_ratio`` of the segments) if it beats the ``default`` cell beyond the bootstrap spread (its
    ``vs_default`` interval above 0); else the paper's ``default``. ``{"tau", "beta", "by", "reason", ...}``.

    When the comparison is over nothing (traces too short to leave the rule a segment to decide, so the default
    cell has no selected or no unselected segment), the default is kept, the reason says the comparison is
    missing and why, and the missing statistics are None, never NaN."""
    ok = spread[(spread.segment_ratio >= min_ratio) & spread.confidence_gap.notna()]
    if ok.empty:
        raise ValueError(f"no grid cell selects at least {min_ratio:.0%} of the segments")
    best = ok.sort_values("confidence_gap", ascending=False).iloc[0]
    paper = spread[(spread.tau == default[0]) & (spread.beta == default[1])].iloc[0]
    beyond = bool(best.vs_default_ci_low > 0)  # False when the interval is missing
    pick = best if beyond else paper
    against = f"against the paper's ({default[0]:g}, {default[1]:g})"
    if pd.isna(paper.confidence_gap) or pd.isna(best.vs_default_ci_low):
        why = ("the paper's cell has no confidence gap: in these traces it leaves no decided segment selected, or "
               "none unselected" if pd.isna(paper.confidence_gap) else "no bootstrap resample had both a selected "
               "and an unselected decided segment in both cells")
        verdict = f"the comparison {against} is missing ({why}), so the paper's values are kept."
    else:
        verdict = (f"{_interval(best.vs_default, best.vs_default_ci_low, best.vs_default_ci_high, '+')} {against}: "
                   + ("chosen." if beyond else "not better beyond the bootstrap spread, so the paper's values are "
                                               "kept."))
    reason = (f"(tau, beta) = ({best.tau:g}, {best.beta:g}) has the largest confidence gap, "
              f"{_interval(best.confidence_gap, best.ci_low, best.ci_high)}; {verdict}")
    return {"tau": float(pick.tau), "beta": float(pick.beta), "by": "confidence_gap", "reason": reason,
            **_numbers(pick)}


def save_choice(choice: dict, path) -> Path:
    """Write the chosen ``(tau, beta)`` (and whatever else ``choice`` holds) as strict JSON for the next notebook
    (a statistic over nothing is null, never NaN)."""
    return write_json(choice, path)


def load_choice(path, default: tuple[float, float] = (TAU, BETA)) -> dict:
    """The choice written by ``save_choice``; the paper's ``(tau, beta)`` if the file does not exist (notebook 03
    run on its own)."""
    path = Path(path)
    if not path.exists():
        return {"tau": default[0], "beta": default[1], "by": "paper default (no choice file found)"}
    return json.loads(path.read_text())


def precision_recall_by_method(records: Sequence[dict], methods: Sequence[str] = SELECTION_METHODS, tau: float = TAU,
                               beta: float = BETA, seeds: Sequence[int] = (0,),
                               always_keep: Sequence[str] = ALWAYS_KEEP) -> pd.DataFrame:
    """Precision, recall and F1 of each selection method against the planted useful roles, one row per
    ``(method, seed)`` (the seed matters for ``random`` only), over the segments a selection decides on
    (``selectable_segments``: the always-kept ones are left out). Methods are ``segkit train`` modes: the segments
    a mode trains (before the always-kept ones are added) are its selection; ``selective`` is the IG rule at
    ``(tau, beta)``, and ``random``/``perplexity``/``entropy`` take as many segments per trace as it does."""
    recs = [{**r, "selected_spans_ids": select(r["strength"], r["consistency"], tau, beta)} for r in records]
    idx = [selectable_segments(r, always_keep) for r in recs]
    useful = [is_useful(r["segment_roles"][i]) for r, ii in zip(recs, idx) for i in ii]
    rows = []
    for method in methods:
        for seed in (seeds if method == "random" else seeds[:1]):
            flags = []
            for r, ii in zip(recs, idx):
                chosen = set(segments_for_mode(r, method, seed=seed, tau=tau))
                flags += [i in chosen for i in ii]
            rows.append({"method": method, "seed": seed, **precision_recall(flags, useful),
                         "segment_ratio": fmean(flags) if flags else math.nan})
    return pd.DataFrame(rows)
