"""segkit.pipeline (and the testbed, steps and jobs behind it) on tiny runs: cache keys that know options, inputs
and code; resume of a half-written attribution; sources resolved only when a step needs them; compare_modes; the
real-data path (train_data, base_model and benchmarks given as files)."""
import json
from pathlib import Path

import pytest

from segkit import cache
from segkit import pipeline
from segkit import steps, testbed
from segkit.records import load

TINY = dict(n_train=8, n_test=4, n_attribute=4, n_base=16,
            base_train={"size": "tiny", "epochs": 1.0, "batch_size": 4},
            attribute={"steps": 4, "method": "gausslegendre"}, train={"epochs": 1.0, "batch_size": 4},
            modes=["selective"], n_eval=2, generate={"max_new_tokens": 24, "batch_size": 4}, threads=1,
            device="cpu")


def tiny(workdir, **kw) -> pipeline.PipelineConfig:
    return pipeline.config_from({"workdir": str(workdir), **TINY, **kw})


@pytest.fixture(scope="module")
def testbed_run(tmp_path_factory):
    """One tiny testbed run: base model trained, 4 traces attributed and selected, one mode fine-tuned and
    evaluated (shared by the tests below, which only read it or work on copies)."""
    cfg = tiny(tmp_path_factory.mktemp("testbed"))
    table = pipeline.compare_modes(cfg)
    return cfg, table


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_config_names_are_checked():
    with pytest.raises(ValueError, match="unknown pipeline parameter"):
        pipeline.config_from({"n_atribute": 3})
    with pytest.raises(ValueError, match=r"train: \['epoch'\] are not TrainConfig options"):
        pipeline.config_from({"train": {"epoch": 1}})
    with pytest.raises(ValueError, match=r"'out'"):  # the pipeline names the outputs itself
        pipeline.config_from({"generate": {"out": "x.jsonl"}})


def test_code_hash_follows_the_imports_of_a_stage(monkeypatch):
    attribute, train = cache.segkit_imports("segkit.attribute"), cache.segkit_imports("segkit.train")
    assert "segkit.score" in attribute and "segkit.models" in attribute  # imported by attribute, directly or not
    assert "segkit.train" not in attribute and "segkit.evaluate" not in train
    before = {m: cache.code_hash(m) for m in ("segkit.attribute", "segkit.train", "segkit.evaluate")}
    real = cache.module_hash
    monkeypatch.setattr(cache, "module_hash", lambda m: "edited" if m == "segkit.score" else real(m))
    after = {m: cache.code_hash(m) for m in before}
    assert after["segkit.attribute"] != before["segkit.attribute"]  # score is read by attribute and train...
    assert after["segkit.train"] != before["segkit.train"]
    assert after["segkit.evaluate"] == before["segkit.evaluate"]  # ...not by evaluate


@pytest.mark.slow
def test_a_code_change_recomputes_exactly_the_steps_that_run_it(testbed_run, monkeypatch):
    cfg, table = testbed_run
    work = Path(cfg.workdir)
    model = Path(table[table["mode"] == "selective"]["model"].iloc[0])
    before = mtimes(work)
    again = pipeline.compare_modes(cfg)  # unchanged: everything reused, nothing rewritten
    assert again.drop(columns="train_seconds").equals(table.drop(columns="train_seconds"))
    assert mtimes(work) == before

    real = cache.module_hash
    monkeypatch.setattr(cache, "module_hash", lambda m: "edited" if m == "segkit.evaluate" else real(m))
    pipeline.compare_modes(cfg)
    after = mtimes(work)
    changed = {f for f in after if after[f] != before.get(f)}
    assert changed and all(f.startswith("eval/") for f in changed)  # every model evaluated again, in new files...
    assert len([f for f in changed if f.endswith(".summary.json")]) == 2  # base and selective, one benchmark
    assert all(after[f] == t for f, t in before.items())  # ...and nothing else touched: training, attribution
    assert (model / "train_summary.json").exists()

    # the generator of the testbed changed: a new testbed, so everything downstream is new too
    old_split = pipeline.build_testbed(cfg)["train"]
    monkeypatch.setattr(cache, "module_hash", lambda m: "edited" if m == "segkit.synth" else real(m))
    assert pipeline.build_testbed(cfg)["train"].parent != old_split.parent


@pytest.mark.slow
def test_a_half_written_attribution_resumes(testbed_run, tmp_path):
    cfg, _ = testbed_run
    # the same traces, attributed by the same model (a folder outside this work folder) in a new work folder
    cfg2 = pipeline.config_from({**{k: getattr(cfg, k) for k in TINY}, "workdir": str(tmp_path),
                          "attributor": pipeline.Sources(cfg).attributor})
    out = pipeline.attribute_traces(cfg2)
    assert not list(tmp_path.rglob("base-seed*"))  # the attributor is given: no base model was trained for it
    full = out.read_text().splitlines(keepends=True)
    assert len(full) == cfg.n_attribute
    out.write_text("".join(full[:2]) + full[2][:40])  # interrupted after two records, mid-way the third
    assert pipeline.attribute_traces(cfg2) == out
    resumed = out.read_text().splitlines(keepends=True)
    assert resumed[:2] == full[:2]  # the finished records kept as written (their timings too): not recomputed
    assert [json.loads(x)["id"] for x in resumed] == [json.loads(x)["id"] for x in full]  # complete, no duplicate
    assert json.loads(resumed[2])["strength"] == pytest.approx(json.loads(full[2])["strength"], abs=1e-6)


@pytest.mark.slow
def test_compare_modes_on_a_tiny_testbed_run(testbed_run):
    cfg, table = testbed_run
    assert list(table["mode"]) == ["base", "selective"] and set(table["benchmark"]) == {"test"}
    assert table.attrs["skipped"] == {}
    base, sel = table.iloc[0], table.iloc[1]
    assert base["model"] == pipeline.Sources(cfg).base_model and base["trained_token_fraction"] == 0.0
    summary = json.loads((Path(sel["model"]) / "train_summary.json").read_text())
    assert summary["mode"] == "selective" and summary["n_examples"] == cfg.n_attribute
    assert summary["config"]["init"] == pipeline.Sources(cfg).base_model  # every mode fine-tunes the base model
    assert 0 < sel["trained_token_fraction"] < 1  # the selection leaves segments out
    assert all(0 <= a <= 1 for a in table["accuracy"])
    # the evaluation saw the first n_eval problems of the benchmark, greedily
    evals = list((Path(cfg.workdir) / "eval").glob(f"test-{Path(sel['model']).name}-*.jsonl"))
    assert evals and all(len(load(f)) == cfg.n_eval for f in evals)
    # the testbed has planted roles: oracle can run
    assert steps.runnable_modes(["oracle"], pipeline.select_traces(cfg)) == (["oracle"], {})


@pytest.mark.slow
def test_the_real_data_path_takes_every_source_from_files(testbed_run, tmp_path, monkeypatch):
    """train_data, base_model and benchmarks given: no testbed is built, the data's own held-out traces score the
    attributor, oracle (which needs planted roles) is skipped and said so."""
    from segkit.params import make_data

    cfg, _ = testbed_run
    monkeypatch.chdir(tmp_path)
    make_data({"make_data": {"data/train.jsonl": {"n": 7, "seed": 3},
                             "data/bench.jsonl": {"n": 3, "split": "test", "seed": 3}}})
    assert not any("segment_roles" in r for r in load("data/train.jsonl"))  # as a user's file: LIMO's fields
    real = pipeline.config_from({**TINY, "workdir": "work", "train_data": "data/train.jsonl",
                          "benchmarks": ["data/bench.jsonl"], "base_model": pipeline.Sources(cfg).base_model,
                          "modes": ["selective", "oracle"], "n_removal": 2})
    assert pipeline.Sources(real).attributor == pipeline.Sources(cfg).base_model  # the attributor defaults to the base model
    table = pipeline.compare_modes(real)
    assert list(table["mode"]) == ["base", "selective"] and set(table["benchmark"]) == {"bench"}
    assert "planted" in table.attrs["skipped"]["oracle"]
    assert not list(Path("work").glob("testbed-*"))  # nothing synthetic was made
    quality = pipeline.attributor_quality(real)
    assert quality["n_problems"] == 2  # the traces after the first n_attribute, up to n_eval
    every = pipeline.config_from({**TINY, "workdir": "work", "train_data": "data/train.jsonl", "n_attribute": 0,
                           "base_model": pipeline.Sources(cfg).base_model})
    assert pipeline.attributor_quality(every) == {"n_problems": 0}  # every trace attributed: none held out
    removed = load(pipeline.removal_effects(real))
    assert len(removed) == 2 and all(len(r["removal_effect"]) == len(r["segments"]) for r in removed)
    assert not pipeline.has_planted_roles(pipeline.select_traces(real))
    with pytest.raises(ValueError, match="base_model"):  # no testbed base model for real data
        pipeline.config_from({"workdir": "work", "train_data": "data/train.jsonl"})


@pytest.mark.slow
def test_several_base_models_in_parallel_give_the_same_bytes_as_one_process(tmp_path):
    """Two base models, each attributing the traces itself and fine-tuned on its own selection; the runs spread
    over two `segkit` processes (each attribution in two shares, the evaluations one process each) write the same
    models, selections and evaluations, byte for byte, as one process running them in turn."""
    kw = dict(base_seeds=[0, 1], n_base=8)
    one = tiny(tmp_path / "one", workers=1, **kw)
    two = tiny(tmp_path / "two", workers=2, **kw)
    table = pipeline.compare_modes(one)
    assert pipeline.compare_modes(two)[["base_seed", "mode", "accuracy", "mean_length"]].equals(
        table[["base_seed", "mode", "accuracy", "mean_length"]])
    assert list(zip(table["base_seed"], table["mode"])) == [(0, "base"), (1, "base"), (0, "selective"),
                                                            (1, "selective")]
    bases = pipeline.Sources(one).base_models
    assert len(set(bases.values())) == 2 and pipeline.Sources(one).attributor == bases[0]  # other seeds, other models
    configs = [json.loads((Path(m) / "train_summary.json").read_text())["config"]
               for m, mode in zip(table["model"], table["mode"]) if mode != "base"]
    assert {c["init"] for c in configs} == set(bases.values())  # each base model fine-tuned
    own = pipeline.selections(one)  # ...on the selection it attributed itself, not on the first one's
    assert [Path(c["data"]) for c in configs] == [own[0], own[1]] and own[0] != own[1]
    assert own[0] == pipeline.select_traces(one) and bases[1].split("/")[-1] in own[1].name
    assert [r["id"] for r in load(own[0])] == [r["id"] for r in load(own[1])]  # the same traces, two attributors
    assert [r["strength"] for r in load(own[0])] != [r["strength"] for r in load(own[1])]
    assert not list((tmp_path / "two").rglob("*.rank*"))  # the attribution's shares merged and gone
    for f in sorted((tmp_path / "one").rglob("*")):
        twin = tmp_path / "two" / f.relative_to(tmp_path / "one")
        if f.suffix in (".safetensors",) or (f.suffix == ".jsonl" and "attributed" not in f.name):
            assert twin.read_bytes() == f.read_bytes(), f
        elif f.suffix == ".jsonl":  # attributions: equal but for the seconds they took
            strip = lambda p: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in load(p)]  # noqa: E731
            assert strip(twin) == strip(f), f


def test_base_traces_are_concise_and_new_problems(tmp_path):
    cfg = tiny(tmp_path, n_base=30, base_synth={"style": "concise", "restate_answer": 0.5})
    paths = pipeline.build_testbed(cfg)
    base = load(testbed.base_traces(cfg, paths))
    taken = {r["question"] for p in paths.values() for r in load(p)}
    assert len(base) == 30 and not taken & {r["question"] for r in base}
    assert not any(set(r["segment_roles"]) & {"repeat", "truncated", "distractor", "verify"} for r in base)
    restated = sum("boxed" in r["solution"] for r in base)
    assert 0 < restated < 30  # restate_answer 0.5: both endings
    v = pipeline.variant(pipeline.config_from({**TINY, "workdir": str(tmp_path), "base_model": "scratch",
                                 "variants": {"no restate": {"restate_answer": 0}}}), "no restate")
    assert v.attributor == "scratch" and v.synth == {"restate_answer": 0}
    assert not any("boxed" in r["solution"] for r in load(pipeline.build_testbed(v)["train"]))
    with pytest.raises(ValueError, match="no testbed variant"):
        pipeline.variant(cfg, "other")
