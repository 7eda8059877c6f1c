"""The report runner on tiny notebooks (papermill, nbconvert, index.html, failure, reuse), and the shipped notebooks
are clean: no outputs, exactly one `parameters` cell, and the default parameter file names only what they declare."""
import dataclasses
import json
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from segkit import cache
from segkit.config import TESTBED
from segkit.cli import main
from segkit.headline import MIN_PROBLEMS, MIN_TRACES
from segkit.index import write_index
from segkit.outputs import missing_as_null
from segkit.params import CheckError
from segkit.pipeline import PipelineConfig
from segkit.records import OutputError
from segkit.report import DEFAULT_PARAMS, NOTEBOOKS, ReportConfig, ReportError, load_params, run_report

SHIPPED = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_three_notebooks_are_there_in_order():
    assert [p.name for p in SHIPPED] == ["01_attribution_analysis.ipynb", "02_hyperparameter_search.ipynb",
                                         "03_selective_finetuning.ipynb"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_notebook_is_clean_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_notebook_takes_the_pipeline_as_one_mapping_and_only_its_own_knobs(path):
    """The pipeline's values arrive as one mapping, turned into the config by one segkit call; the parameters cell
    holds the notebook's own knobs only (issue 17: not 40 lines restating PipelineConfig)."""
    import papermill

    declared = set(papermill.inspect_notebook(str(path)))
    assert {"pipeline_params", "workdir"} <= declared
    assert not declared & ({f.name for f in dataclasses.fields(PipelineConfig)} - {"workdir"})
    cells = nbformat.read(path, as_version=4).cells
    (params,) = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params.source.splitlines()) <= 15
    source = "".join(c.source for c in cells)
    assert source.count("notebook_config(pipeline_params, workdir)") == 1 and "globals()" not in source
    assert "PipelineConfig(" not in source and " as P\n" not in source and " as A\n" not in source


@pytest.mark.parametrize("name", ["default", "powered", "smollm2", "paper"])
def test_shipped_parameter_files_fit_the_notebooks(name):
    spec, runs = load_params(DEFAULT_PARAMS.with_name(f"{name}.yaml"), NOTEBOOKS, workdir=Path("/tmp/w"))
    assert [r.notebook.name for r in runs][0].startswith("01") and len({r.name for r in runs}) == len(runs)
    for r in runs:  # every run is a valid pipeline configuration (stage options included)
        r.config()
    # a real LM in every file but the testbed's (default and powered: whose headlines need >= 20 traces, which
    # SmolLM2 on 2 CPU cores cannot attribute within their budgets) and paper.yaml's DeepSeek
    given = [r.parameters["pipeline_params"] for r in runs]
    assert any("smollm2-135m-instruct" in (g["attributor"], g["base_model"]) for g in given) or name in (
        "default", "powered", "paper")
    # paths go in relative to the notebook's folder (the kernel's working folder)
    assert all((r.notebook.parent / r.parameters["workdir"]).resolve() == Path("/tmp/w").resolve() for r in runs)


def test_a_name_the_file_leaves_out_takes_the_pipeline_default_not_the_notebooks(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"parameters": {"n_test": 7}, "runs": ["01_attribution_analysis.ipynb"]}))
    _, (run,) = load_params(params, NOTEBOOKS, workdir=tmp_path)
    given = run.parameters["pipeline_params"]
    assert given["n_test"] == 7 and given["n_train"] == PipelineConfig.n_train != TESTBED["n_train"]


def test_paper_parameters_check_names_what_is_missing_and_how_to_bring_it(capsys):
    """paper.yaml checks here except for its data files and the DeepSeek model, each named with how to bring it,
    and the work is estimated; the command exits 2."""
    path = DEFAULT_PARAMS.with_name("paper.yaml")
    with pytest.raises(CheckError) as err:
        run_report(ReportConfig(params=str(path), check=True))
    msg = str(err.value)
    for f in ("limo.jsonl", "math500.jsonl", "aime24.jsonl", "amc23.jsonl", "minerva.jsonl", "gpqa_diamond.jsonl",
              "olympiadbench.jsonl"):
        assert f"data/{f} is missing: see data/README.md" in msg
    assert "'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B' is not in the local Hugging Face cache" in msg
    assert "hf download deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" in msg
    # the estimate says what it can without the files: the paper's IG points, the samples and budget per problem
    assert "attribution: all traces x ? (file missing) tokens x 50 IG points" in msg
    assert "aime24: ? problems x 32 x 32768" in msg and "math500: ? problems x 6 x 32768" in msg
    assert main(["report", "--params", str(path), "--check"]) == 2
    assert "limo.jsonl" in capsys.readouterr().err


def test_check_passes_a_complete_file_and_estimates_the_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"make_data": {"data/t.jsonl": {"n": 12}, "data/b.jsonl": {"n": 5, "split": "test"}},
            "parameters": {"train_data": "data/t.jsonl", "benchmarks": ["data/b.jsonl"],
                           "base_model": "smollm2-135m-instruct", "n_attribute": 10, "n_eval": 4,
                           "modes": ["full", "selective"], "generate": {"max_new_tokens": 100, "n": 2},
                           "samples": {"b": 3}},
            "runs": [{"notebook": "01_attribution_analysis.ipynb"}, {"notebook": "03_selective_finetuning.ipynb"}]}
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(spec))
    out = run_report(ReportConfig(params=str(params), check=True, notebooks=str(NOTEBOOKS)))
    assert "every parameter, file and model is in place" in out
    assert "attribution: 10 traces" in out
    assert "generation: 3 models x <= 1,200 tokens" in out  # 4 problems x 3 samples (b's own n) x 100 tokens
    assert not (tmp_path / "data").exists()  # checking makes nothing
    assert "other base models" not in out  # one given base model: one attribution
    testbed = {"parameters": {"n_train": 12, "n_attribute": 10, "base_seeds": [0, 1, 2]},
               "runs": [{"notebook": "01_attribution_analysis.ipynb"}, {"notebook": "03_selective_finetuning.ipynb"}]}
    params.write_text(yaml.safe_dump(testbed))
    out = run_report(ReportConfig(params=str(params), check=True, notebooks=str(NOTEBOOKS)))
    assert "attribution by the other base models: 2 x 10 traces" in out  # each base model attributes its own
    spec["parameters"]["train"] = {"epoch": 2}
    params.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="epoch"):
        run_report(ReportConfig(params=str(params), check=True, notebooks=str(NOTEBOOKS)))


def notebook(path: Path, *cells: str, params: str = 'greeting = "hello"\nmarker = ""'):
    """A tiny notebook: a parameters cell, a markdown cell, then ``cells``."""
    first = new_code_cell(params, metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[first, new_markdown_cell("# A tiny report"), *map(new_code_cell, cells)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return path


# each execution appends a line to `marker`, so the tests can count executions
COUNT = 'from pathlib import Path\nwith open(marker, "a") as f:\n    f.write("run\\n")'
SHOW = 'from IPython.display import Markdown\nMarkdown(f"**{greeting}** from the tiny notebook")'


@pytest.fixture
def project(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    notebook(nbs / "01_tiny.ipynb", COUNT, SHOW)
    notebook(nbs / "02_fails.ipynb", 'x = 1', 'raise RuntimeError(f"boom {greeting}")', 'y = 2')
    marker = tmp_path / "executions.txt"
    spec = {"parameters": {"greeting": "hi", "marker": str(marker)},
            "runs": [{"notebook": "01_tiny.ipynb", "title": "Tiny"}]}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(spec))

    def cfg(**kw):
        return ReportConfig(params=str(params), out=str(tmp_path / "reports"), workdir=str(tmp_path / "runs"),
                            notebooks=str(nbs), **kw)

    return {"dir": tmp_path, "params": params, "spec": spec, "cfg": cfg, "marker": marker}


def executions(project) -> int:
    return len(project["marker"].read_text().splitlines()) if project["marker"].exists() else 0


def test_runs_the_notebook_writes_html_and_index_then_reuses(project):
    summary = run_report(project["cfg"]())
    reports = project["dir"] / "reports"
    assert "1 notebooks run" in summary and executions(project) == 1
    nb = nbformat.read(reports / "01_tiny.ipynb", as_version=4)
    assert nb.metadata.segkit_report["status"] == "ok"
    assert any("greeting = \"hi\"" in c.source for c in nb.cells)  # papermill injected the YAML's value
    page = (reports / "01_tiny.html").read_text()
    assert "<strong>hi</strong> from the tiny notebook" in page  # the output is there...
    assert "with open(marker" not in page  # ...the code is not (no-input rendering)
    index = (reports / "index.html").read_text()
    assert "href='01_tiny.html'" in index and "href='01_tiny.ipynb'" in index and ">Tiny</a>" in index
    assert "greeting: hi" in index and "papermill" in index and "torch" in index  # parameters and versions

    # a rerun without --fresh reuses the executed notebook; --fresh and --rerun execute it again
    assert "1 reused" in run_report(project["cfg"]()) and executions(project) == 1
    run_report(project["cfg"](fresh=True))
    assert executions(project) == 2
    run_report(project["cfg"](rerun=True))
    assert executions(project) == 3
    # so does a change of parameters
    project["params"].write_text(yaml.safe_dump({**project["spec"],
                                                 "parameters": {**project["spec"]["parameters"], "greeting": "yo"}}))
    run_report(project["cfg"]())
    assert executions(project) == 4
    assert "<strong>yo</strong>" in (reports / "01_tiny.html").read_text()


def test_a_fresh_clone_runs_every_notebook_despite_committed_reports(project):
    """Committed reports with matching fingerprints are reused only where the workdir existed before this run: the
    first notebook creating it must not make the next ones look reusable (a fresh clone reused 3 of 4)."""
    spec = {**project["spec"], "runs": [{"notebook": "01_tiny.ipynb", "title": "Tiny"},
                                        {"notebook": "01_tiny.ipynb", "name": "again", "title": "Tiny again"}]}
    project["params"].write_text(yaml.safe_dump(spec))
    assert "2 notebooks run" in run_report(project["cfg"]()) and executions(project) == 2
    shutil.rmtree(project["dir"] / "runs")  # a fresh clone: the reports are committed, the workdir is not
    assert "2 notebooks run, 0 reused" in run_report(project["cfg"]()) and executions(project) == 4
    assert "0 notebooks run, 2 reused" in run_report(project["cfg"]()) and executions(project) == 4


def test_a_failing_cell_stops_the_run_and_keeps_the_partial_notebook(project):
    spec = {**project["spec"], "runs": [{"notebook": "02_fails.ipynb"}, {"notebook": "01_tiny.ipynb"}]}
    project["params"].write_text(yaml.safe_dump(spec))
    with pytest.raises(ReportError, match="RuntimeError: boom hi") as err:
        run_report(project["cfg"]())
    assert "02_fails.ipynb" in str(err.value) and "partial notebook saved" in str(err.value)
    reports = project["dir"] / "reports"
    nb = nbformat.read(reports / "02_fails.ipynb", as_version=4)
    assert nb.metadata.segkit_report["status"] == "failed"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].evalue == "boom hi"
    assert (reports / "02_fails.html").exists()
    assert executions(project) == 0  # the notebook after the failure did not run
    index = (reports / "index.html").read_text()
    assert "class='failed'" in index and "class='not-run'" in index
    # the command line fails too, naming the cell's error (printed by cli.main once it catches ReportError,
    # raised through it before)
    argv = ["report", "--params", project["params"], "--out", reports, "--workdir", project["dir"] / "runs",
            "--notebooks", project["dir"] / "notebooks"]
    assert main([str(a) for a in argv]) == 2


def test_unknown_parameters_are_named(project):
    spec = {**project["spec"], "runs": [{"notebook": "01_tiny.ipynb", "parameters": {"greting": "typo"}}]}
    project["params"].write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"run '01_tiny': parameters: unknown name 'greting' \(did you mean 'greeting'"):
        run_report(project["cfg"]())


def test_a_code_change_executes_the_notebooks_again(project, monkeypatch):
    """The fingerprint covers segkit's code: after a change, the notebooks run again (without --rerun)."""
    run_report(project["cfg"]())
    assert "1 reused" in run_report(project["cfg"]()) and executions(project) == 1
    real = cache.module_hash
    monkeypatch.setattr(cache, "module_hash", lambda m: "edited" if m == "segkit.score" else real(m))
    assert "1 notebooks run" in run_report(project["cfg"]()) and executions(project) == 2


def test_the_output_folder_must_not_hold_the_notebooks(project):
    with pytest.raises(OutputError):
        run_report(dataclasses.replace(project["cfg"](), out=str(project["dir"] / "notebooks")))
    assert executions(project) == 0
    with pytest.raises(FileNotFoundError, match="not installed with the package"):
        run_report(dataclasses.replace(project["cfg"](), notebooks=str(project["dir"] / "nowhere")))


def test_a_data_file_changed_in_place_executes_the_notebook_again(project):
    nbs = project["dir"] / "notebooks"
    notebook(nbs / "03_data.ipynb", COUNT, params='greeting = "hello"\nmarker = ""\ntrain_data = None')
    data = project["dir"] / "traces.jsonl"
    data.write_text('{"question": "q", "solution": "s", "answer": "1"}\n')
    spec = {**project["spec"], "runs": [{"notebook": "03_data.ipynb"}]}
    spec["parameters"] = {**spec["parameters"], "train_data": str(data), "base_model": "scratch"}
    project["params"].write_text(yaml.safe_dump(spec))
    run_report(project["cfg"]())
    assert "1 reused" in run_report(project["cfg"]()) and executions(project) == 1
    data.write_text('{"question": "q", "solution": "s", "answer": "2"}\n')  # same path, new content
    assert "1 notebooks run" in run_report(project["cfg"]()) and executions(project) == 2


def test_fresh_deletes_only_a_work_folder_the_runner_made(project, tmp_path):
    """``--fresh`` removes WORKDIR/<params stem> only when the runner made it (its mark is inside): a user's folder
    of the same name, or one holding the parameter file, is left alone with a one-line error."""
    from segkit.records import OutputError

    mine = tmp_path / "runs" / "params"
    mine.mkdir(parents=True)
    (mine / "keep.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="was not made by segkit report"):
        run_report(project["cfg"](fresh=True))
    assert (mine / "keep.txt").read_text() == "a user's file"
    inside = tmp_path / "exp" / "exp.yaml"  # WORKDIR/<stem> would be the folder that holds the parameter file
    inside.parent.mkdir()
    inside.write_text(project["params"].read_text())
    (inside.parent / ".segkit-workdir").touch()
    with pytest.raises(OutputError):
        run_report(ReportConfig(params=str(inside), out=str(tmp_path / "reports"), workdir=str(tmp_path),
                                notebooks=str(project["dir"] / "notebooks"), fresh=True))
    assert inside.exists()
    (mine / "keep.txt").unlink()
    mine.rmdir()
    run_report(project["cfg"]())  # the runner's own folder carries the mark, so --fresh may start it over
    run_report(project["cfg"](fresh=True))
    assert executions(project) == 2


# a notebook writing its headline numbers where the runner says (as 03 does with segkit.headline.finetuning)
HEADLINE = ('from segkit.records import write_json\n'
            'write_json({"modes": [{"mode": "full", "accuracy": 0.5, "mean_length": 12.0}], "differences": [],\n'
            '            "verdict": f"{greeting} says full"}, headline_file)')


def headline_project(project):
    nbs = project["dir"] / "notebooks"
    notebook(nbs / "04_headline.ipynb", COUNT, HEADLINE,
             params='greeting = "hello"\nmarker = ""\nheadline_file = "../runs/notebooks/04_headline.json"')
    spec = {**project["spec"], "runs": [{"notebook": "04_headline.ipynb", "name": "head", "title": "Head"},
                                        {"notebook": "01_tiny.ipynb", "title": "Tiny"}]}
    project["params"].write_text(yaml.safe_dump(spec))
    return spec


def test_headline_file_is_injected_relative_to_the_notebook_unless_the_run_sets_it(project):
    spec = headline_project(project)
    nbs, reports = project["dir"] / "notebooks", project["dir"] / "reports"
    _, (head, tiny) = load_params(project["params"], nbs, workdir=project["dir"] / "runs", out=reports)
    assert head.parameters["headline_file"] == "../reports/head.json"  # the run's name, the report folder
    assert "headline_file" not in tiny.parameters  # 01_tiny does not declare it
    _, (head, _) = load_params(project["params"], nbs, workdir=project["dir"] / "runs")
    assert "headline_file" not in head.parameters  # no output folder given (check): the notebook's default
    spec["runs"][0]["parameters"] = {"headline_file": "mine.json"}  # where a run writes is the runner's to say
    project["params"].write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="'headline_file' is set by segkit report"):
        load_params(project["params"], nbs, workdir=project["dir"] / "runs", out=reports)


def test_the_runner_stamps_the_headline_json_and_the_index_shows_it(project):
    headline_project(project)
    reports = project["dir"] / "reports"
    run_report(project["cfg"]())
    data = json.loads((reports / "head.json").read_text())
    assert data["verdict"] == "hi says full" and data["modes"][0]["accuracy"] == 0.5  # what the notebook wrote
    meta = nbformat.read(reports / "head.ipynb", as_version=4).metadata.segkit_report
    assert data["run"] == "head" and data["title"] == "Head" and data["params"] == "params.yaml"
    assert data["seconds"] == meta["seconds"] > 0 and "papermill" in data["versions"]
    assert not (reports / "01_tiny.json").exists()
    index = (reports / "index.html").read_text()
    assert index.index("<h2>Headline</h2>") < index.index("<h2>Notebooks</h2>")
    assert "<td>full</td><td>0.500</td><td>12.0</td>" in index and "hi says full" in index

    # a reused notebook keeps its JSON; --fresh deletes it with the notebook (here the other run is rerun alone)
    assert "2 reused" in run_report(project["cfg"]()) and json.loads((reports / "head.json").read_text()) == data
    run_report(project["cfg"](fresh=True, only=["01_tiny"]))
    assert not (reports / "head.json").exists() and not (reports / "head.ipynb").exists()
    assert "Head: no headline numbers (head.json is missing)" in (reports / "index.html").read_text()


def test_a_failed_run_leaves_no_earlier_headline(project):
    headline_project(project)
    reports = project["dir"] / "reports"
    run_report(project["cfg"]())
    assert (reports / "head.json").exists()
    nbs = project["dir"] / "notebooks"
    notebook(nbs / "04_headline.ipynb", 'raise RuntimeError("boom")', HEADLINE,
             params='greeting = "hello"\nmarker = ""\nheadline_file = "x.json"')
    with pytest.raises(ReportError, match="boom"):
        run_report(project["cfg"]())
    assert not (reports / "head.json").exists()


def index_rows(*names):
    return [{"name": n, "title": f"Title {n}", "notebook": f"{n}.ipynb", "status": "ok", "seconds": 1.0,
             "parameters": {"headline_file": f"../reports/{n}.json"}} for n in names]


def test_index_headline_tables_from_hand_written_json(tmp_path):
    params = tmp_path / "default.yaml"
    params.write_text("runs: [a.ipynb]\n")
    ft = {"modes": [{"mode": "full", "accuracy": 0.41234, "accuracy_ci_low": 0.38, "accuracy_ci_high": 0.4449,
                     "mean_length": 1234.54, "mean_length_ci_low": 1200, "mean_length_ci_high": 1270.26,
                     "n_problems": 50, "n_base_seeds": 2, "n_ft_seeds": 3, "trained_token_fraction": 1.0},
                    {"mode": "selective", "accuracy": 0.46, "accuracy_ci_low": 0.43, "accuracy_ci_high": 0.49,
                     "mean_length": 1100.0, "mean_length_ci_low": 1050.0, "mean_length_ci_high": 1150.0,
                     "n_problems": 50, "n_base_seeds": 2, "n_ft_seeds": 3, "trained_token_fraction": 0.3456}],
          "differences": [{"mode": "selective", "vs": "full", "metric": "accuracy", "diff": 0.0477,
                           "ci_low": 0.011, "ci_high": 0.09},
                          {"mode": "selective", "vs": "full", "metric": "mean_length", "diff": -134.54,
                           "ci_low": -170.0, "ci_high": -99.96}],
          "family": [{"mode": "selective", "vs": "full", "metric": "accuracy", "diff": 0.0477, "ci_low": 0.01,
                      "ci_high": 0.09, "p_holm": 0.02, "n_base": 2, "verdict": "higher"},
                     {"mode": "selective", "vs": "full", "metric": "mean_length", "diff": -134.54, "ci_low": -180.0,
                      "ci_high": -90.0, "p_holm": 0.01, "n_base": 2, "verdict": "lower"}],
          "verdict": ["selective vs full: beats <clearly> & shortens", "oracle vs full: not detected"],
          "constant_guess": 0.25, "uniform_guess": 0.1, "run": "03", "params": "default.yaml", "seconds": 75.0}
    attr = {"auc": [{"score": "strength", "variant": "plain", "role": "all", "auc": 0.8123, "ci_low": 0.75,
                     "ci_high": 0.87, "n_pos": 40, "n_neg": 60},
                    {"score": "strength", "variant": "answer restated", "role": "all", "auc": 0.6, "ci_low": 0.52,
                     "ci_high": 0.68, "n_pos": 40, "n_neg": 60},
                    {"score": "consistency", "variant": "plain", "role": "all", "auc": 0.45, "ci_low": 0.4,
                     "ci_high": 0.5, "n_pos": 40, "n_neg": 60},
                    {"score": "strength", "variant": "plain", "role": "core", "auc": 0.999, "ci_low": 0.99,
                     "ci_high": 1.0, "n_pos": 10, "n_neg": 60}],
            "attributor_quality": {"n_problems": 100, "answer_after_gold_trace": 0.93}}
    (tmp_path / "03.json").write_text(json.dumps(ft))
    (tmp_path / "01.json").write_text(json.dumps(attr))
    (tmp_path / "bad.json").write_text('{"modes": [')  # malformed
    (tmp_path / "list.json").write_text('[1, 2]')  # not an object
    (tmp_path / "odd.json").write_text('{"modes": [{"mode": "full"}]}')  # no accuracy
    write_index(tmp_path, params, index_rows("01", "03", "bad", "list", "odd", "none"), 1.0)
    page = (tmp_path / "index.html").read_text()
    assert page.index("<h2>Headline</h2>") < page.index("<h2>Notebooks</h2>")
    # 03: modes with intervals and the trained share, the signed differences, the verdict escaped
    assert ("<tr><td>full</td><td>0.412 [0.380, 0.445]</td><td>1234.5 [1200.0, 1270.3]</td><td>1.000</td></tr>"
            in page)
    assert "<td>selective</td><td>0.460 [0.430, 0.490]</td><td>1100.0 [1050.0, 1150.0]</td><td>0.346</td>" in page
    assert "<td>selective</td><td>full</td><td>accuracy</td><td>+0.048 [+0.011, +0.090]</td>" in page
    assert "<td>mean_length</td><td>-134.5 [-170.0, -100.0]</td>" in page
    assert ("<ul class='verdict'><li>selective vs full: beats &lt;clearly&gt; &amp; shortens</li><li>oracle vs full: "
            "not detected</li></ul>") in page and "<clearly>" not in page
    assert "0.250 always answering the commonest gold answer (constant guess), 0.100 answering one" in page
    assert page.count("<img class='forest'") == 1  # the forest plot of the family rows
    # the base-model table says what the verdict lines say: longer/shorter for length
    assert "<td>-134.5 [-180.0, -90.0]</td><td>0.010</td><td>2</td><td>shorter</td>" in page
    assert "<td>+0.048 [+0.010, +0.090]</td><td>0.020</td><td>2</td><td>higher</td>" in page
    # 01: score x variant for role "all" only, and the attributor's quality
    assert "<tr><th>score</th><th>plain</th><th>answer restated</th></tr>" in page
    assert "<tr><td>strength</td><td>0.812 [0.750, 0.870]</td><td>0.600 [0.520, 0.680]</td></tr>" in page
    assert "<tr><td>consistency</td><td>0.450 [0.400, 0.500]</td><td></td></tr>" in page and "0.999" not in page
    assert "n_problems 100, answer_after_gold_trace 0.930" in page
    # unreadable files are skipped with a note, a missing one is named
    assert "Title bad: bad.json skipped" in page and "Title list: list.json skipped" in page
    assert "Title odd: odd.json skipped" in page and "KeyError" in page
    assert "Title none: no headline numbers (none.json is missing)" in page
    assert "href='01_tiny" not in page and "Title 01</a></h3>" in page


def finetuning_json(n_problems: int) -> dict:
    """A notebook 03 headline as segkit.headline.finetuning writes it, on 3 base models x ``n_problems``."""
    from segkit import analysis

    rows = [{"problem": f"p{p}", "base_seed": b, "ft_seed": 0, "mode": m, "gold": str(p % 3),
             "accuracy": 0.3 + 0.1 * b * (m == "selective") + 0.01 * (p % 5),
             "mean_length": 100.0 - 5 * b * (m == "selective") + p}
            for b in range(3) for p in range(n_problems) for m in ("full", "selective")]
    return missing_as_null(analysis.finetuning_headline(rows, n_resamples=50))


@pytest.mark.parametrize("n_problems", [MIN_PROBLEMS - 40, MIN_PROBLEMS])
def test_index_shows_the_forest_plot_of_a_03_headline_unless_too_few(tmp_path, n_problems):
    import base64

    params = tmp_path / "default.yaml"
    params.write_text("runs: [a.ipynb]\n")
    data = finetuning_json(n_problems)
    (tmp_path / "03.json").write_text(json.dumps(data, allow_nan=False))
    write_index(tmp_path, params, index_rows("03"), 1.0)
    page = (tmp_path / "index.html").read_text()
    few = n_problems < MIN_PROBLEMS
    assert (f"too few problems (n = {n_problems}) for a headline number." in page) == few
    assert ("<img class='forest'" in page) == (not few) and ("t over 3 base models" in page) == (not few)
    assert ("+0.100 [" in page) == (not few)  # selective - full accuracy: no number from a refused run
    if not few:
        png = page.split("src='data:image/png;base64,", 1)[1].split("'", 1)[0]
        assert base64.b64decode(png).startswith(b"\x89PNG")
        assert [f"<li>{line}</li>" in page for line in data["verdict"]] == [True]  # one comparison, one line
        assert "<th>Holm p</th>" in page and "Equivalence margins, stated in advance: accuracy +-0.021" in page


def test_index_forest_plot_takes_null_bounds_as_missing():
    from segkit.index import forest_png

    # an older 03 headline on one base model: no t interval (null), and a bootstrap row without one either
    data = {"family": [{"mode": "selective", "vs": "full", "metric": "accuracy", "diff": 0.01, "ci_low": None,
                        "ci_high": None, "p_value": None, "p_holm": None, "n_base": 1,
                        "verdict": "no interval over base models (1 base model)"}],
            "differences": [{"mode": "selective", "vs": "full", "metric": "accuracy", "diff": 0.01, "ci_low": None,
                             "ci_high": None}], "margins": {"accuracy": 0.021}}
    assert forest_png(data).startswith("<img class='forest'")
    assert forest_png({"differences": data["differences"]}).startswith("<img class='forest'")


def test_index_without_headline_files_has_no_headline_section(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("runs: [a.ipynb]\n")
    rows = [{**r, "parameters": {}} for r in index_rows("a")]
    write_index(tmp_path, params, rows, 1.0)
    assert "Headline" not in (tmp_path / "index.html").read_text()


def test_index_links_the_reports_of_other_parameter_files_below_it(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("runs: [a.ipynb]\n")
    rows = [{**r, "parameters": {}} for r in index_rows("a")]
    (tmp_path / "notes").mkdir()  # a folder of the user's, not a report: not linked
    (tmp_path / "notes" / "index.html").write_text("<h1>my notes</h1>")
    (tmp_path / "powered").mkdir()
    write_index(tmp_path / "powered", params, rows, 1.0)  # the report of another parameter file, below this one
    write_index(tmp_path, params, rows, 1.0)
    page = (tmp_path / "index.html").read_text()
    assert "href='powered/index.html'" in page and "notes/index.html" not in page
    assert "Other reports" not in (tmp_path / "powered" / "index.html").read_text()


@pytest.mark.parametrize("n_traces", [MIN_TRACES - 17, MIN_TRACES + 5])
def test_index_shows_no_headline_number_from_too_few_traces(tmp_path, n_traces):
    params = tmp_path / "default.yaml"
    params.write_text("runs: [a.ipynb]\n")
    auc = {"score": "strength", "variant": "plain", "role": "all", "auc": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    (tmp_path / "01.json").write_text(json.dumps(
        {"n_traces": n_traces, "auc": [auc], "attributor_quality": {"n_problems": MIN_PROBLEMS, "answer": 0.5}}))
    write_index(tmp_path, params, index_rows("01"), 1.0)
    page = (tmp_path / "index.html").read_text()
    few = f"too few traces (n = {n_traces}) for a headline number." in page
    assert few == (n_traces < MIN_TRACES) and ("1.000 [1.000, 1.000]" in page) == (not few)
    assert "Title 01</a></h3>" in page  # the run's row is there either way, with its note or its numbers


@pytest.mark.parametrize("name", ["01_tiny.ipynb", "01_tiny.html", "index.html"])
def test_the_runner_refuses_to_overwrite_what_it_did_not_write_in_out(project, name):
    """A user's file where a run's notebook, HTML (or headline file) or the index page would go stops the report
    before any notebook runs, and stays as it was; once the runner's own files are there, it replaces them."""
    reports = project["dir"] / "reports"
    reports.mkdir()
    mine = reports / name
    mine.write_text("<html>my page</html>")
    with pytest.raises(ReportError, match="not .*segkit report"):
        run_report(project["cfg"]())
    assert mine.read_text() == "<html>my page</html>" and executions(project) == 0
    mine.unlink()
    run_report(project["cfg"]())
    assert executions(project) == 1
    assert "1 notebooks run" in run_report(project["cfg"](rerun=True)) and executions(project) == 2


def test_a_run_may_not_be_named_index(project):
    spec = {**project["spec"], "runs": [{"notebook": "01_tiny.ipynb", "name": "index"}]}
    project["params"].write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="'index' names the report's index page"):
        run_report(project["cfg"]())


def test_a_control_on_a_few_traces_does_not_hide_the_run_s_headline():
    """``n_sanity`` traces for the random-weight control: a row of kind "random" with n_traces 10 leaves a
    256-trace run's headline shown; the method's own rows decide."""
    from segkit.headline import too_few

    rows = [{"score": "strength", "kind": "model", "n_traces": 222},
            {"score": "strength (random weights)", "kind": "random", "n_traces": 10}]
    assert too_few({"n_traces": 256, "auc": rows}) is None
    assert too_few({"n_traces": 256, "auc": rows[:1] + [{**rows[0], "n_traces": 12}]}) is not None
