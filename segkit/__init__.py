"""segkit: segment-level attribution for selective learning of long reasoning traces.

The stages, in the paper's words: ``segment`` a trace at reflection keywords, ``attribute`` the final answer to
its tokens with Integrated Gradients, score each segment's ``strength`` and ``consistency``, ``select`` the
important ones, then train with the loss masked to them (``segkit.train``) and ``evaluate``.
"""
from .score import consistency, select, strength
from .segment import KEYWORDS, char_spans, segment, token_spans

__version__ = "0.1.0"
__all__ = ["segment", "char_spans", "token_spans", "KEYWORDS", "strength", "consistency", "select"]
