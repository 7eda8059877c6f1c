"""The interactive tau/beta view: its HTML follows the sliders and the trace picker, and shows what `select` keeps."""
import re

import pytest

from segkit.analysis import explore, render_heatmap, selection_summary
from segkit.score import consistency, select, strength


def attributed(rid, attributions, roles=None):
    """A record as `segkit attribute` writes it: tokens, attributions, and the strength/consistency they give."""
    r = {"id": rid, "question": "q", "answer": "1", "segments": [f"s{i} " for i in range(len(attributions))],
         "tokens": [[f"{rid}{i}_{k}" for k in range(len(a))] for i, a in enumerate(attributions)],
         "attributions": attributions, "strength": strength(attributions), "consistency": consistency(attributions)}
    if roles:
        r["segment_roles"] = roles
    return r


# strengths ~0.64, 0.24, 0.12 and consistencies 0.33, 0.71, 1.0: at tau 0.7 segments 0 and 1 are kept, at tau 0.5
# only 0; beta 0.5 drops 1; segment 2 (all positive) only with tau 1 and beta 1
A = attributed("a", [[1.0, -0.5], [0.3, 0.3, -0.1], [0.1] * 4], roles=["core", "repeat", "verify"])
B = attributed("b", [[0.2], [0.9, -0.8], [0.4, 0.4]])


def shown(view) -> list[int]:
    """The segments the HTML widget marks as selected."""
    return [int(i) for i in re.findall(r"\[(\d+)[^\[\]]* selected\]", view.children[3].value)]


def test_sliders_and_trace_picker_update_the_view():
    view = explore([A, B], tau=0.7, beta=0.8)
    trace, tau, beta, out = view.children
    assert shown(view) == select(A["strength"], A["consistency"], 0.7, 0.8) == [0, 1]
    assert "selected [0, 1]: 2 of 3 segments, 56% of tokens; roles core, repeat" in out.value
    assert render_heatmap(A, 0.7, 0.8) in out.value

    tau.value = 0.5  # lowering tau drops segment 1
    assert shown(view) == select(A["strength"], A["consistency"], 0.5, 0.8) == [0]
    assert "selected [0]: 1 of 3 segments, 22% of tokens; roles core" in out.value and "tau=0.5," in out.value

    tau.value, beta.value = 1.0, 0.5  # all segments reach tau, but beta 0.5 keeps only the mixed-sign one
    assert shown(view) == select(A["strength"], A["consistency"], 1.0, 0.5) == [0]
    beta.value = 1.0
    assert shown(view) == [0, 1, 2] and "3 of 3 segments, 100% of tokens" in out.value

    trace.value = 1  # another trace: its own tokens and selection, no roles line
    assert "trace b" in out.value and "b1_0" in out.value and "a0_0" not in out.value
    assert shown(view) == select(B["strength"], B["consistency"], 1.0, 1.0)
    tau.value, beta.value = 0.5, 0.2
    expected = select(B["strength"], B["consistency"], 0.5, 0.2)
    assert shown(view) == expected and selection_summary(B, 0.5, 0.2) in out.value and "roles" not in \
        selection_summary(B, 0.5, 0.2)


def test_summary_counts_tokens_and_an_empty_selection():
    assert selection_summary(A, tau=0.7, beta=0.1) == "selected []: 0 of 3 segments, 0% of tokens; roles none"
    with pytest.raises(ValueError, match="no records"):
        explore([])
