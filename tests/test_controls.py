"""Model-free segment scores on records small enough to check by hand, and the surface summary on the testbeds."""
import math

import numpy as np
import pytest

from segkit.analysis.auc import SEGMENT_SCORES
from segkit.analysis.controls import (MODEL_FREE_SCORES, question_overlap, relative_position, segment_lengths,
                                     surface_summary)
from segkit.score import strength
from segkit.synth import SynthConfig, make_records
from segkit.testbed_model import build_tokenizer

RECORD = {"question": "Let b = 2. Step 1: d = b + 3. What is d?",
          "segments": ["d = b + 3 = 5", "\n\nWait, so d is 5", "\n\nHmm, nothing here"],
          "segment_roles": ["core", "repeat", "truncated"]}


def score(name, record):
    field, fn = MODEL_FREE_SCORES[name]
    assert field is None or field in record
    return fn(record, 0.8)


def test_scores_by_hand():
    assert score("length", RECORD) == [7.0, 5.0, 3.0]                     # words
    assert score("position", RECORD) == [0.0, 0.5, 1.0]
    assert relative_position({"segments": ["only"]}) == [0.0]
    total = math.sqrt(7) + math.sqrt(5) + math.sqrt(3)
    assert score("constant strength", RECORD) == pytest.approx([math.sqrt(n) / total for n in (7, 5, 3)])
    # words (case folded): {d, b, 3, 5} in the question but 5; {wait, so, d, is, 5} has d and is; none of the last
    assert question_overlap(RECORD) == pytest.approx([3 / 4, 2 / 5, 0.0])


def test_length_counts_the_attributors_tokens_where_there_are_attributions():
    attributed = {**RECORD, "attributions": [[0.1] * 9, [0.2] * 2, [0.0] * 4]}
    assert score("length", attributed) == [9.0, 2.0, 4.0]
    assert score("constant strength", attributed) == pytest.approx(strength([[1.0] * 9, [1.0] * 2, [1.0] * 4]))
    tok = build_tokenizer([s for s in RECORD["segments"]] * 3)
    assert segment_lengths(RECORD, tok) == [len(tok(s, add_special_tokens=False)["input_ids"])
                                           for s in RECORD["segments"]]


def test_same_call_shape_as_the_model_scores_and_read_beside_them():
    assert all(SEGMENT_SCORES[name] is MODEL_FREE_SCORES[name] for name in MODEL_FREE_SCORES)  # in auc_table
    for name, (field, fn) in MODEL_FREE_SCORES.items():
        assert len(fn(RECORD, 0.8)) == len(RECORD["segments"]), name


def test_surface_summary_on_both_testbeds():
    worded = make_records(SynthConfig(out="", n=150, seed=9))
    tok = build_tokenizer([r["solution"] for r in worded])
    out = surface_summary(worded, tokenizer=tok)
    assert out["auc"]["length_words"] > 0.9 and out["auc"]["length_tokens"] > 0.9  # worded roles show in length
    assert out["mean_words"]["core"] > 2 * out["mean_words"]["repeat"]
    assert out["n_useful"] + out["n_redundant"] == sum(len(r["segment_roles"]) - 1 for r in worded)
    concise = make_records(SynthConfig(out="", n=20, style="concise", correction_rate=0))
    assert np.isnan(surface_summary(concise)["auc"]["position"])  # nothing redundant to compare with
    with pytest.raises(ValueError, match="no segment"):
        surface_summary(concise, always_keep=("first", "second_to_last", "last"))
