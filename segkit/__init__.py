"""segkit: segment-level attribution for selective learning of long reasoning traces.

The stages, in the paper's words: ``segment`` a trace at reflection keywords, ``attribute`` the final answer to
its tokens with Integrated Gradients, score each segment's ``strength`` and ``consistency``, ``select`` the
important ones, then train with the loss masked to them (``segkit.train``) and ``evaluate``.

Importing ``segkit`` loads nothing heavy (no numpy, torch or pandas), so the command line starts fast: the
scoring functions come from ``segkit.score`` on first use.
"""
from __future__ import annotations

import importlib

from .segment import KEYWORDS, char_spans, segment, token_spans

__version__ = "0.1.0"
_FROM_SCORE = ("strength", "consistency", "select")
__all__ = ["segment", "char_spans", "token_spans", "KEYWORDS", *_FROM_SCORE]


def __getattr__(name: str):
    if name in _FROM_SCORE:
        return getattr(importlib.import_module(".score", __name__), name)
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")
