"""Controls before claims in the ROC-AUC table: model-free rows per variant, the within-trace AUC, IG against the
best model-free score (paired), and the random-weight attributor of the pipeline."""
import dataclasses
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from segkit import pipeline, testbed
from segkit.analysis import auc_table, describe_versus, versus_model_free, with_random_weights, within_trace_auc
from segkit.analysis.controls import MODEL_FREE_SCORES
from segkit.models import load_model
from segkit.records import load


def length_decides(n_traces=30, seed=0):
    """Traces whose useful segments are long (8 words) and the rest short (2), with a strength that is noise."""
    rng = random.Random(seed)
    out = []
    for t in range(n_traces):
        roles = ["core"] + [rng.choice(["core", "repeat", "truncated"]) for _ in range(5)] + ["final"]
        out.append({"id": f"t{t}", "question": "what is x", "answer": "1", "segment_roles": roles,
                    "segments": [" ".join(["w"] * (8 if r == "core" else 2)) for r in roles],
                    "strength": [rng.random() for _ in roles], "consistency": [0.5] * len(roles)})
    return out


def test_model_free_rows_appear_for_every_variant_and_say_their_kind():
    records = length_decides()
    table = pd.concat([auc_table(records, variant=v, n_resamples=50) for v in ("a", "b")], ignore_index=True)
    for v in ("a", "b"):
        rows = table[(table.variant == v) & (table.role == "all")].set_index("score")
        assert set(MODEL_FREE_SCORES) <= set(rows.index)
        assert set(rows.loc[list(MODEL_FREE_SCORES), "kind"]) == {"model-free"}
        assert rows.loc["strength", "kind"] == "model" and rows.loc["random", "kind"] == "random"
        assert rows.loc["length", "auc"] == 1.0 and rows.loc["length", "within_auc"] == 1.0


def test_ig_minus_best_model_free_is_negative_where_length_decides():
    vs = versus_model_free(length_decides(), variant="v", n_resamples=200)
    assert vs["best_auc"] == 1.0 and vs["best"] in MODEL_FREE_SCORES
    assert vs["diff"] == pytest.approx(vs["auc"] - 1.0) and vs["diff"] < 0
    assert vs["ci_low"] <= vs["diff"] <= vs["ci_high"] < 0 and vs["verdict"] == "lower"
    assert "does not beat" in describe_versus(vs)
    # where strength is the length itself, strength ties the best: an interval at 0, nothing detected
    same = [{**r, "strength": [len(s.split()) for s in r["segments"]]} for r in length_decides()]
    tie = versus_model_free(same, n_resamples=200)
    assert tie["diff"] == 0.0 and tie["verdict"] == "not detected"


def test_within_trace_auc_by_hand():
    traces = [([0.9, 0.1, 0.5], [True, False, True]),    # 1.0
              ([0.2, 0.8, 0.5], [True, False, False]),   # 0.0
              ([0.3, 0.4], [True, True])]                # one class: left out
    out = within_trace_auc(traces, n_resamples=50)
    assert (out["within_auc"], out["n_within"]) == (0.5, 2) and 0 <= out["within_ci_low"] <= out["within_ci_high"] <= 1
    # pooled over traces, a trace with few segments weighs in; within a trace only the ranking counts
    a = {"id": "a", "question": "q", "segments": ["x", "y"], "segment_roles": ["core", "repeat"],
         "strength": [0.6, 0.4], "consistency": [0.5, 0.5]}
    b = {"id": "b", "question": "q", "segments": ["x", "y", "z"], "segment_roles": ["core", "repeat", "repeat"],
         "strength": [0.2, 0.1, 0.1], "consistency": [0.5] * 3}
    row = auc_table([a, b], scores=["strength"], always_keep=(), n_resamples=50).set_index("role").loc["all"]
    assert row.auc == pytest.approx(5 / 6) and row.within_auc == 1.0 and row.n_within == 2


def test_random_weight_strength_is_read_on_the_traces_it_covers():
    records = length_decides(10)
    shuffled = [{**r, "strength": r["strength"][::-1]} for r in records[:4]]
    table = auc_table(with_random_weights(records, shuffled), n_resamples=20)
    row = table[(table.score == "strength (random weights)") & (table.role == "all")].iloc[0]
    assert row.kind == "random" and row.n_traces == 4
    assert set(table[table.score == "strength"].n_traces) == {10}


def shapes(model):
    return {name: tuple(w.shape) for name, w in model.state_dict().items()}


def test_the_sanity_step_attributes_with_weights_that_differ_from_the_attributors(tmp_path):
    cfg = pipeline.config_from({"workdir": str(tmp_path), "n_train": 4, "n_test": 2, "n_attribute": 3, "n_base": 16,
                                "n_sanity": 2, "base_train": {"size": "tiny", "epochs": 1.0, "batch_size": 4},
                                "attribute": {"steps": 4, "method": "gausslegendre"}, "threads": 1, "device": "cpu"})
    attributor = pipeline.Sources(cfg).attributor
    sane = load(pipeline.sanity_attributions(cfg))
    trained = load(pipeline.attribute_traces(cfg))
    assert [r["id"] for r in sane] == [r["id"] for r in trained[:2]]
    random_model = testbed.random_weights(cfg, attributor)
    assert "init-seed" in random_model  # on the testbed: the base model's own initialisation
    a, _ = load_model(attributor, device="cpu", dtype="float32")
    b, _ = load_model(random_model, device="cpu", dtype="float32")
    assert shapes(a) == shapes(b)  # the same architecture
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert any(not np.allclose(x["strength"], y["strength"]) for x, y in zip(sane, trained))
    assert pipeline.sanity_attributions(dataclasses.replace(cfg, n_sanity=0)) is None
    # any other attributor: its config initialised afresh, saved once in the work dir
    other = shutil.copytree(attributor, tmp_path / "other")
    fresh = testbed.random_weights(cfg, str(other))
    assert fresh.startswith(str(tmp_path / "random-weights-other-"))
    assert testbed.random_weights(cfg, str(other)) == fresh  # cached
    c, _ = load_model(fresh, device="cpu", dtype="float32")
    assert shapes(c) == shapes(a) and not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_the_papers_criterion_is_counted_and_an_unsupported_choice_said_so():
    from segkit.analysis import criterion_support

    none = criterion_support(pd.DataFrame({"confidence_gap": [-0.1, -0.2, float("nan")]}))
    assert "positive in 0 of the grid's 2 cells (1 more have no gap)" in none and "not supported" in none
    some = criterion_support(pd.DataFrame({"confidence_gap": [0.1, -0.1, 0.2], "ci_low": [0.05, -0.2, -0.1]}))
    assert some == ("The paper's criterion (the confidence gap) is positive in 2 of the grid's 3 cells, with its "
                    "95% interval above 0 in 1.")


def test_the_headline_carries_the_converged_share_and_ig_against_the_surface():
    from segkit import headline

    records = [{**r, "completeness_error": e} for r, e in zip(length_decides(4), [0.01, 0.05, 0.2, 0.049])]
    vs = versus_model_free(length_decides(), variant="v", n_resamples=50)
    out = headline.attribution("m", records, {"n_problems": 0}, {}, auc_table(records, n_resamples=20), [vs])
    assert out["converged_share"] == 0.75  # 0.05 is converged, 0.2 is not
    assert out["versus_model_free"][0]["sentence"] == describe_versus(vs) and out["versus_model_free"][0]["best"]
    assert {"length", "position"} <= {a["score"] for a in out["auc"] if a["role"] == "all"}


def test_the_index_states_ig_against_the_surface():
    from segkit.index import headline_html

    row = {"score": "length", "kind": "model-free", "variant": "v", "role": "all", "auc": 1.0, "ci_low": 1.0,
           "ci_high": 1.0}
    page = headline_html({"auc": [row], "versus_model_free": [{"sentence": "v: IG strength <lower>"}]})
    assert "<td>length</td>" in page and "v: IG strength &lt;lower&gt;" in page
