"""The token heat map: an inseq-like HTML view of one attributed trace, tokens coloured by their IG score.

    >>> IPython.display.HTML(render_heatmap(records[0]))
"""
from __future__ import annotations

import html as _html

import numpy as np

from ..score import BETA, TAU, select


def _colour(score: float, scale: float) -> str:
    """Red for positive IG, blue for negative, opacity by size relative to ``scale``."""
    a = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    rgb = "214, 39, 40" if score >= 0 else "31, 119, 180"
    return f"rgba({rgb}, {a:.3f})"


def render_heatmap(record: dict, tau: float | None = None, beta: float | None = None, title: str | None = None,
                   scale_quantile: float = 0.95) -> str:
    """An inseq-like HTML view of one attributed trace: every trace token on a background coloured by its IG score
    (red positive, blue negative; full colour at the ``scale_quantile`` quantile of |score|, so that one outlier
    token does not wash out the rest; the score shows on hover), each segment opened by a label with its index,
    strength, consistency, role (testbed) and whether it is selected.

    ``tau``/``beta`` default to the record's own (from ``select``), else the paper's. Returns a self-contained
    ``<div>``; in a notebook show it with ``IPython.display.HTML``.
    """
    tau = record.get("tau", TAU) if tau is None else tau
    beta = record.get("beta", BETA) if beta is None else beta
    chosen = set(select(record["strength"], record["consistency"], tau, beta))
    magnitudes = np.abs([x for seg in record["attributions"] for x in seg])
    scale = float(np.quantile(magnitudes, scale_quantile)) if magnitudes.size else 0.0
    roles = record.get("segment_roles")
    esc = _html.escape
    parts = [f"<div class='segkit-heatmap' style='font-family: monospace; font-size: 13px; line-height: 1.9; "
             f"white-space: pre-wrap; border: 1px solid #ccc; padding: 8px'>"]
    head = title or f"trace {record.get('id', '')}"
    parts.append(f"<div style='font-family: sans-serif; margin-bottom: 6px'><b>{esc(str(head))}</b> &middot; "
                 f"answer {esc(str(record.get('answer', '')))} &middot; tau={tau:g}, beta={beta:g} &middot; "
                 f"<span style='background: {_colour(1, 1)}'>&nbsp;positive IG&nbsp;</span> "
                 f"<span style='background: {_colour(-1, 1)}'>&nbsp;negative IG&nbsp;</span> &middot; "
                 f"<span style='border-left: 3px solid #2ca02c'>&nbsp;selected segment</span> &middot; "
                 f"&#8629; newline</div>")
    for i, (pieces, scores) in enumerate(zip(record["tokens"], record["attributions"])):
        sel = i in chosen
        label = f"[{i}{' ' + roles[i] if roles else ''} s={record['strength'][i]:.2f} c={record['consistency'][i]:.2f}"
        label += " selected]" if sel else "]"
        # one block per segment, opened by its label; newlines show as a visible mark (they carry attribution
        # too), and break the line only inside a segment
        parts.append(f"<div style='border-left: 3px solid {'#2ca02c' if sel else '#bbb'}; padding-left: 6px; "
                     f"margin: 3px 0'><span style='font-family: sans-serif; font-size: 10px; "
                     f"color: {'#2ca02c' if sel else '#666'}; font-weight: {'bold' if sel else 'normal'}'>"
                     f"{esc(label)}</span> ")
        started = False
        for piece, score in zip(pieces, scores):
            text = esc(piece).replace("\n", "&#8629;\n" if started else "&#8629;")
            started = started or bool(piece.strip())
            parts.append(f"<span title='{score:+.4f}' style='background: {_colour(score, scale)}'>{text}</span>")
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)
