"""The report runner on tiny notebooks (papermill, nbconvert, index.html, failure, reuse), and the shipped notebooks
are clean: no outputs, exactly one `parameters` cell, and the default parameter file names only what they declare."""
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from segkit.cli import main
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


def test_default_parameter_files_fit_the_notebooks():
    for path in (DEFAULT_PARAMS, DEFAULT_PARAMS.with_name("full.yaml")):
        spec, runs = load_params(path, workdir=Path("/tmp/w"))
        assert [r.notebook.name for r in runs][0].startswith("01") and len({r.name for r in runs}) == len(runs)
        assert any(r.parameters.get("attributor") == "smollm2-135m-instruct" for r in runs)  # the real LM run
        # paths go in relative to the notebook's folder (the kernel's working folder)
        assert all((r.notebook.parent / r.parameters["workdir"]).resolve() == Path("/tmp/w").resolve() for r in runs)


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
    try:
        assert main([str(a) for a in argv]) != 0
    except ReportError as e:
        assert "boom hi" in str(e)


def test_unknown_parameters_are_named(project):
    spec = {**project["spec"], "runs": [{"notebook": "01_tiny.ipynb", "parameters": {"greting": "typo"}}]}
    project["params"].write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"01_tiny.ipynb has no parameters \['greting'\]"):
        run_report(project["cfg"]())
