"""An interactive view of the selection rule for JupyterLab: pick a trace, move tau and beta, see what is selected.

The view is the token heat map (``render_heatmap``) under a one-line summary of the paper's rule (``select``) at
the sliders' values: which segments are kept, how many of the trace's, their share of its tokens and (on the
planted-role testbed) their roles.

    >>> view = explore(load("runs/default/attributed.jsonl"))   # doctest: +SKIP
    >>> view                                                     # last line of a cell: shows it
"""
from __future__ import annotations

import html as _html
from typing import Sequence

from ..score import BETA, TAU, select
from .heatmap import render_heatmap


def selection_summary(record: dict, tau: float = TAU, beta: float = BETA) -> str:
    """One line: the segments ``select`` keeps at ``tau``/``beta``, k of n, their share of the trace's tokens,
    and their roles when the record has ``segment_roles``.

    >>> r = {"strength": [0.6, 0.4], "consistency": [0.5, 0.9], "tokens": [["a", "b"], ["c"]]}
    >>> selection_summary(r, tau=0.5, beta=0.8)
    'selected [0]: 1 of 2 segments, 67% of tokens'
    """
    chosen = select(record["strength"], record["consistency"], tau, beta)
    sizes = [len(t) for t in record["tokens"]]
    share = sum(sizes[i] for i in chosen) / max(sum(sizes), 1)
    line = f"selected {chosen}: {len(chosen)} of {len(sizes)} segments, {share:.0%} of tokens"
    roles = record.get("segment_roles")
    return line + (f"; roles {', '.join(roles[i] for i in chosen) or 'none'}" if roles else "")


def explore(records: Sequence[dict], tau: float = TAU, beta: float = BETA):
    """An ipywidgets box: a trace picker, sliders for ``tau`` (0.05..1) and ``beta`` (0..1), and an HTML widget
    with ``selection_summary`` above ``render_heatmap`` for the chosen trace at the sliders' values; moving a
    slider or picking another trace redraws it. ``records``: attributed records (``segkit attribute``'s output:
    ``tokens``, ``attributions``, ``strength``, ``consistency``). The widgets are ``view.children``: trace,
    tau, beta, html.

    >>> view = explore(records, tau=0.7, beta=0.8)   # doctest: +SKIP
    >>> view.children[1].value = 0.5                  # as moving the tau slider: the HTML follows
    """
    import ipywidgets as w

    if not records:
        raise ValueError("explore: no records to show")
    trace = w.Dropdown(options=[(f"{i}: {r.get('id', i)}", i) for i, r in enumerate(records)], value=0,
                       description="trace")
    tau_s = w.FloatSlider(value=tau, min=0.05, max=1.0, step=0.05, description="tau", continuous_update=False)
    beta_s = w.FloatSlider(value=beta, min=0.0, max=1.0, step=0.05, description="beta", continuous_update=False)
    out = w.HTML()

    def redraw(_=None):
        record = records[trace.value]
        out.value = (f"<div style='font-family: sans-serif; margin: 4px 0'>"
                     f"{_html.escape(selection_summary(record, tau_s.value, beta_s.value))}</div>"
                     + render_heatmap(record, tau_s.value, beta_s.value))

    for widget in (trace, tau_s, beta_s):
        widget.observe(redraw, names="value")
    redraw()
    return w.VBox([trace, tau_s, beta_s, out])
