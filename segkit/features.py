"""Per-token surprise of a trace and its per-segment means: the log-perplexity and entropy segment scores.

Not part of IG: they are the baselines the paper compares against (low-perplexity / low-entropy segments) and the
Fig. 3 statistics. One forward pass over prompt + trace gives both.

    >>> segment_means(torch.tensor([1.0, 3.0, 5.0]), [(10, 12), (12, 13), (13, 13)], start=10)
    [2.0, 5.0, 0.0]
"""
from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def token_surprise(model, input_ids: torch.Tensor, trace: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For the trace tokens ``input_ids[trace[0]:trace[1]]`` (``input_ids``: ``(T,)``), each one's negative
    log-probability given what precedes it and the entropy of the model's prediction there, in nats: two
    ``(trace[1] - trace[0],)`` tensors on the CPU."""
    ids = input_ids[:trace[1]][None].to(model.device)  # logits only where a trace token is predicted
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=trace[1] - trace[0] + 1).logits[0, :-1]  # (n, V)
    logp = torch.log_softmax(logits.float(), -1)
    nll = -logp.gather(-1, input_ids[trace[0]:trace[1], None].to(logp.device))[:, 0]                     # (n,)
    entropy = -(logp.exp() * logp).sum(-1)                                                              # (n,)
    return nll.cpu(), entropy.cpu()


def segment_means(values: torch.Tensor, segments: Sequence[tuple[int, int]], start: int) -> list[float]:
    """Mean of per-token ``values`` ``(n,)`` over each segment's absolute token range; ``values[0]`` is the token
    at absolute position ``start``. An empty segment gets 0."""
    return [float(values[s - start:e - start].mean()) if e > s else 0.0 for s, e in segments]
