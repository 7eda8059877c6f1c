"""Model-free segment scores: what a segment's surface alone (its length, place and words) says about its role.

A model's score of segments is worth something only where it beats these: on the worded testbed, a segment's length
already ranks the planted useful segments above the rest. Each score has the call shape of
``segkit.analysis.auc.SEGMENT_SCORES`` (name -> (record field it needs, ``fn(record, beta)`` -> one score per
segment)), which holds ``MODEL_FREE_SCORES`` (``auc_table``'s kind "model-free"); ``surface_summary`` measures a
testbed's surface directly (per-role lengths and the ROC-AUC of length and position, by scikit-learn).

    >>> MODEL_FREE_SCORES["length"][1]({"segments": ["a b c", "d"]}, 0.8)
    [3.0, 1.0]
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from ..roles import is_useful
from ..score import strength
from ..segment import segment
from .selection import selectable_segments

WORD = re.compile(r"\w+")


def segment_lengths(record: dict, tokenizer=None) -> list[int]:
    """Tokens per segment: the attributor's (one attribution per token) where the record has ``attributions``,
    else ``tokenizer``'s where one is given, else words (whitespace-separated)."""
    if "attributions" in record:
        return [len(a) for a in record["attributions"]]
    if tokenizer is not None:
        return [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in record["segments"]]
    return [len(s.split()) for s in record["segments"]]


def relative_position(record: dict) -> list[float]:
    """Where each segment sits in its trace: 0 for the first, 1 for the last."""
    n = len(record["segments"])
    return [i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def constant_strength(record: dict) -> list[float]:
    """The paper's strength formula fed the same attribution for every token: what strength says about a segment
    before any model is asked: ``sqrt(n)`` normalised over the trace, so the length again, and about one over the
    trace's number of segments, which an AUC pooled over traces reads too (short traces hold more useful segments)."""
    return strength([[1.0] * n for n in segment_lengths(record)])


def question_overlap(record: dict) -> list[float]:
    """Share of a segment's words (letters and digits, case folded) that also occur in the question."""
    asked = set(WORD.findall(record["question"].lower()))
    words = [WORD.findall(s.lower()) for s in record["segments"]]
    return [sum(w in asked for w in ws) / len(ws) if ws else 0.0 for ws in words]


# name -> (record field it needs, per-segment score), as analysis.auc.SEGMENT_SCORES, which includes these
MODEL_FREE_SCORES: dict[str, tuple[str | None, Callable[[dict, float], list[float]]]] = {
    "length": (None, lambda r, beta: [float(n) for n in segment_lengths(r)]),
    "position": (None, lambda r, beta: relative_position(r)),
    "constant strength": (None, lambda r, beta: constant_strength(r)),
    "question overlap": ("question", lambda r, beta: question_overlap(r)),
}


def surface_summary(records: Sequence[dict], tokenizer=None, always_keep: Sequence[str] = ()) -> dict:
    """A testbed's surface: ``{"mean_words": {role: mean}, "mean_tokens": ... (with a tokenizer), "auc": {score:
    ROC-AUC}, "n_useful", "n_redundant"}``. AUCs are of useful against redundant segments
    (``sklearn.metrics.roc_auc_score``) for ``length_words``, ``length_tokens`` (with a tokenizer) and every
    ``MODEL_FREE_SCORES`` score, NaN where one class is empty. Scored: every segment but the final one and those
    named in ``always_keep`` (``segkit.score.ALWAYS_KEEP`` leaves out what ``auc_table`` leaves out). Records need
    ``question`` and ``segment_roles``; their ``segments`` are cut from ``solution`` where missing."""
    columns: dict[str, list] = {"role": []}
    for rec in records:
        r = {**rec, "segments": rec.get("segments") or segment(rec["solution"])}
        scores = {"length_words": segment_lengths({"segments": r["segments"]})}
        if tokenizer is not None:
            scores["length_tokens"] = segment_lengths({"segments": r["segments"]}, tokenizer)
        scores |= {name: fn(r, 0.0) for name, (_, fn) in MODEL_FREE_SCORES.items()}
        for i in selectable_segments(r, always_keep):
            if rec["segment_roles"][i] != "final":
                for name, values in [("role", rec["segment_roles"]), *scores.items()]:
                    columns.setdefault(name, []).append(values[i])
    if not columns["role"]:
        raise ValueError("no segment to score (every segment is final or always kept)")
    roles = np.array(columns.pop("role"))
    useful = np.array([is_useful(x) for x in roles])
    both = 0 < useful.sum() < len(useful)
    means = {f"mean_{unit}": {x: float(np.mean(np.array(columns[f"length_{unit}"])[roles == x]))
                              for x in dict.fromkeys(roles)}
             for unit in ("words", "tokens") if f"length_{unit}" in columns}
    auc = {name: float(roc_auc_score(useful, v)) if both else float("nan") for name, v in columns.items()}
    return {**means, "auc": auc, "n_useful": int(useful.sum()), "n_redundant": int((~useful).sum())}
