"""Removing a segment: the change in the IG target F (log p of the answer) when one segment is left out (paper
Fig. 2). The only part of ``segkit.analysis`` that needs a model.

    >>> records = add_removal_effects(model, tokenizer, records)   # + removal_effect per segment
    >>> removal_by_group(segment_table(records))                    # Fig. 2 in numbers
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .. import prompt
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
