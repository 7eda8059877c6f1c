"""Removing a segment: the change in the IG target F (log p of the answer) when one segment is left out (paper
Fig. 2). The only part of ``segkit.analysis`` that needs a model.

    >>> records = add_removal_effects(model, tokenizer, records)   # + removal_effect per segment
    >>> removal_by_group(segment_table(records))                    # Fig. 2 in numbers
    >>> fig2_ordering(segment_table(records))                       # does this run show the paper's ordering?
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import prompt, stats
from .tables import GROUPS


def answer_log_prob(model, tokenizer, question: str, segments: Sequence[str], answer: str,
                    answer_template: str = prompt.ANSWER_TEMPLATE) -> float:
    """F, the IG target: summed log-probability of the answer tokens after ``prompt + "".join(segments)``."""
    import torch

    from ..ig import AnswerLogProb
    from ..prompt import assemble

    a = assemble(tokenizer, question, segments, answer, answer_template)
    ids = a.input_ids.to(model.device)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)[None]  # (1, T, H)
        return float(AnswerLogProb(model, ids, a.targets.to(model.device))(embeds)[0])


def segment_removal_effect(model, tokenizer, record: dict,
                           answer_template: str = prompt.ANSWER_TEMPLATE) -> list[float | None]:
    """Per segment i, the change in F when segment i is removed: ``F(segments without i) - F(all segments)``.

    Negative: the model is less sure of the correct answer without the segment (it mattered). None (missing; not
    NaN, which is not JSON) where removing the segment leaves an empty trace. One forward pass per segment.
    """
    segs, q, ans = list(record["segments"]), record["question"], str(record["answer"])
    full = answer_log_prob(model, tokenizer, q, segs, ans, answer_template)
    out = []
    for i in range(len(segs)):
        rest = segs[:i] + segs[i + 1:]
        if not "".join(rest).strip():
            out.append(None)  # missing, not NaN: records are strict JSON
            continue
        out.append(answer_log_prob(model, tokenizer, q, rest, ans, answer_template) - full)
    return out


def add_removal_effects(model, tokenizer, records: Sequence[dict], progress: bool = True) -> list[dict]:
    """The records with a ``removal_effect`` field (``segment_removal_effect``) added; the inputs are not changed."""
    from tqdm.auto import tqdm

    return [{**r, "removal_effect": segment_removal_effect(model, tokenizer, r)}
            for r in tqdm(records, desc="remove segments", unit="trace", disable=not progress)]


def removal_by_group(table: pd.DataFrame) -> pd.DataFrame:
    """Paper Fig. 2 in numbers: per ``group``, the count and mean/std/median of ``removal_effect``."""
    g = table.dropna(subset=["removal_effect"]).groupby("group").removal_effect
    out = g.agg(["count", "mean", "std", "median"]).reindex([x for x in GROUPS if x in g.groups])
    return out.reset_index()


def fig2_ordering(table: pd.DataFrame, n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> str:
    """Whether this run shows the paper's Fig. 2 ordering, as a sentence: the mean removal effect of high-strength,
    moderate-consistency segments minus that of high-strength, high-consistency ones (``segment_table`` rows), with
    a 95% interval from resampling traces. The paper's ordering (the first cost more confidence) is claimed only when
    the interval lies below 0, the reverse only when it lies above."""
    moderate, high = GROUPS[:2]
    t = table.dropna(subset=["removal_effect"])
    per_trace = t.pivot_table(index="trace", columns="group", values="removal_effect", aggfunc=["sum", "count"],
                              fill_value=0)
    if any(g not in per_trace["count"] or per_trace["count"][g].sum() == 0 for g in (moderate, high)):
        return f"Fig. 2's ordering cannot be checked: no removal effect of {moderate} or of {high} segments."
    s_m, c_m, s_h, c_h = (per_trace[k][g].to_numpy(float) for g in (moderate, high) for k in ("sum", "count"))
    idx = np.random.default_rng(seed).integers(0, len(per_trace), size=(n_resamples, len(per_trace)))  # traces
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without one group gives NaN, left out
        diffs = s_m[idx].sum(1) / c_m[idx].sum(1) - s_h[idx].sum(1) / c_h[idx].sum(1)
    diff = s_m.sum() / c_m.sum() - s_h.sum() / c_h.sum()
    low, high_ci = stats.percentile_interval(diffs[~np.isnan(diffs)])
    reading = {"lower": "the paper's ordering", "higher": "the reverse of the paper's ordering",
               "not detected": "an ordering is not detected"}[stats.verdict_word(low, high_ci)]
    return (f"Removal effect of {moderate} ({c_m.sum():.0f} segments) minus {high} ({c_h.sum():.0f}): "
            f"{diff:+.3f} [{low:+.3f}, {high_ci:+.3f}] (95%, traces resampled): {reading}.")
